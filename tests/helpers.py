"""Small builders shared by the tests: keys, genesis, transactions, tasks, blocks, chains."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedcoin.consensus.rules import Applied, build_block
from fedcoin.data.block import Block, BlockHeader, PosapSection, Share
from fedcoin.data.genesis import DEFAULT_PARAMS, ChainParams, Genesis, GenesisValidator
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import State, SvTask, TaskState
from fedcoin.data.store import ChainStore, MemoryChainStore, SqliteChainStore
from fedcoin.data.tx import (
    DEFAULT_POSAP,
    ClientUpdate,
    CloseTask,
    ContentRef,
    PublishTask,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
    TxBody,
    make_tx,
)
from fedcoin.errors import (
    EstimateMismatch,
    NotFedAvg,
    RoundContentUnavailable,
    ShareContentUnavailable,
    TaskContentUnavailable,
)

CHAIN_ID = "fedcoin-test"
FC = 1_000_000
T0 = 1_700_000_000_000


def key(name: str) -> PrivateKey:
    """A deterministic key per name, so tests are reproducible."""
    return PrivateKey.from_seed(hashlib.sha256(name.encode()).digest())


ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
SERVER, MINER, MINER2, MINER3 = key("server"), key("miner"), key("miner2"), key("miner3")
CLIENTS = [key(f"client{i}") for i in range(8)]


MINERS = [MINER, MINER2, MINER3, *(key(f"validator-{i}") for i in range(40))]
"""Keys the tests propose blocks and write shares with: the default genesis validators."""


def randao_tip(k: PrivateKey) -> bytes:
    """A deterministic randao tip per key (the beacon is not wired yet)."""
    return hashlib.sha256(b"randao-tip" + k.public).digest()


def validators_of(keys: Sequence[PrivateKey], bond: int = FC) -> tuple[GenesisValidator, ...]:
    """Genesis entries bonding ``bond`` for each key, sorted by public key."""
    unique = {k.public: k for k in keys}
    return tuple(GenesisValidator(pk, bond, randao_tip(k)) for pk, k in sorted(unique.items()))


def make_genesis(
    allocations: dict[PrivateKey, int] | None = None,
    params: ChainParams = DEFAULT_PARAMS,
    validators: Sequence[PrivateKey] | None = None,
) -> Genesis:
    """A test genesis; by default every allocated key and every ``MINERS`` key is a validator."""
    alloc = allocations or {ALICE: 1_000 * FC, BOB: 1_000 * FC, SERVER: 100 * FC}
    rows = tuple(sorted((k.address, amount) for k, amount in alloc.items()))
    chosen = validators if validators is not None else [*alloc, *MINERS]
    return Genesis(CHAIN_ID, T0, rows, params, validators_of(chosen, params.min_bond))


def make_store(kind: str, directory: Path, genesis: Genesis) -> ChainStore:
    """The same chain store contract, in memory or in a real SQLite file."""
    if kind == "memory":
        return MemoryChainStore(genesis)
    return SqliteChainStore(directory / "chain.sqlite", genesis)


def ref(label: str, size: int = 100) -> ContentRef:
    return ContentRef(hashlib.sha256(label.encode()).digest(), size, "")


def make_spec(**overrides: object) -> TaskSpec:
    spec = TaskSpec(
        name="digits",
        model=ref("model"),
        validation=ref("validation"),
        server=SERVER.address,
        rounds=3,
        price_per_round=10 * FC,
        split_bps=(7000, 1000, 2000),
        min_clients=2,
        max_clients=8,
        deadline_height=1_000,
        posap=DEFAULT_POSAP,
    )
    return replace(spec, **overrides)  # type: ignore[arg-type]


def make_transfer(sender: PrivateKey, to: PrivateKey, amount: int, nonce: int, fee: int = 0):
    return make_tx(sender, CHAIN_ID, nonce, Transfer(to.address, amount), fee)


def make_publish(sender: PrivateKey, nonce: int, **overrides: object) -> Transaction:
    return make_tx(sender, CHAIN_ID, nonce, PublishTask(make_spec(**overrides)))


def make_updates(task_id: bytes, round_: int, n: int = 3, samples: int = 50):
    return tuple(
        ClientUpdate.create(c, task_id, round_, ref(f"w{round_}-{i}"), samples + i)
        for i, c in enumerate(CLIENTS[:n])
    )


def global_ref(task_id: bytes, round_: int) -> ContentRef:
    return ref(f"global-{task_id.hex()}-{round_}")


def make_submit(
    task_id: bytes, round_: int, nonce: int, n: int = 3, sender: PrivateKey = SERVER
) -> Transaction:
    updates = make_updates(task_id, round_, n)
    body = SubmitRound(task_id, round_, updates, global_ref(task_id, round_))
    return make_tx(sender, CHAIN_ID, nonce, body)


def make_close(sender: PrivateKey, task_id: bytes, nonce: int) -> Transaction:
    return make_tx(sender, CHAIN_ID, nonce, CloseTask(task_id))


def tx(sender: PrivateKey, nonce: int, body: TxBody, fee: int = 0) -> Transaction:
    return make_tx(sender, CHAIN_ID, nonce, body, fee)


@dataclass
class TableVerifier:
    """A table-driven stand-in for the Shapley engine: it knows the right answers by table.

    - A round is sound when every weight blob is in ``available`` and the global model is the
      one ``global_ref`` names (standing in for the FedAvg check).
    - A share is sound when its estimate equals ``true_sv[sv_task_id]``.
    """

    true_sv: dict[bytes, tuple[int, ...]] = field(default_factory=dict)
    missing: set[bytes] = field(default_factory=set)

    def check_task(self, spec: TaskSpec) -> None:
        for blob in (spec.model, spec.validation):
            if blob.sha256 in self.missing:
                raise TaskContentUnavailable(sha256=blob.sha256)

    def check_round(self, task: TaskState, round_: SubmitRound) -> None:
        for u in round_.updates:
            if u.weights.sha256 in self.missing:
                raise RoundContentUnavailable(sha256=u.weights.sha256)
        if round_.global_model != global_ref(round_.task_id, round_.round):
            raise NotFedAvg(round=round_.round)

    def verify_share(self, sv_task: SvTask, task: TaskState, share: Share, parent: bytes) -> None:
        if sv_task.sv_task_id not in self.true_sv:
            raise ShareContentUnavailable(sv_task=sv_task.sv_task_id)
        if tuple(share.estimate) != self.true_sv[sv_task.sv_task_id]:
            raise EstimateMismatch(miner=share.miner_pubkey)


def make_share(miner: PrivateKey, sv_task_id: bytes, estimate: Sequence[int]) -> Share:
    return Share(sv_task_id, miner.public, 0, ((0, 0),), tuple(estimate), bytes(64)).signed(miner)


@dataclass
class ChainBuilder:
    """Builds valid blocks on top of each other, tracking head header and state."""

    genesis: Genesis
    verifier: TableVerifier = field(default_factory=TableVerifier)
    proposer: PrivateKey = MINER

    def __post_init__(self) -> None:
        self.block: Block = self.genesis.block()
        self.state: State = self.genesis.state()
        self.blocks: list[Block] = [self.block]
        self.now = T0

    @property
    def header(self) -> BlockHeader:
        return self.block.header

    def next_time(self, gap: int | None = None) -> int:
        step = gap if gap is not None else self.genesis.params.min_block_interval_ms
        self.now += step
        return self.now

    def make(
        self,
        txs: Sequence[Transaction] = (),
        posap: PosapSection | None = None,
        *,
        gap: int | None = None,
        proposer: PrivateKey | None = None,
    ) -> tuple[Block, Applied]:
        return build_block(
            self.state,
            self.header,
            self.genesis,
            self.verifier,
            proposer or self.proposer,
            timestamp_ms=self.next_time(gap),
            txs=txs,
            posap=posap,
        )

    def add(self, *args: object, **kwargs: object) -> Applied:
        block, applied = self.make(*args, **kwargs)  # type: ignore[arg-type]
        self.block, self.state = block, applied.state
        self.blocks.append(block)
        return applied


def apply_tx(
    state: State,
    transaction: Transaction,
    *,
    height: int = 5,
    verifier: TableVerifier | None = None,
    proposer: PrivateKey = MINER,
    params: ChainParams = DEFAULT_PARAMS,
) -> State:
    """Apply one transaction as block ``height`` would; raise what it breaks."""
    from fedcoin.consensus.transactions import TxContext, apply_transaction
    from fedcoin.data.state import Draft

    draft = Draft(state)
    ctx = TxContext(CHAIN_ID, params, height, T0 + height * 1000, proposer.address)
    apply_transaction(draft, transaction, ctx, verifier or TableVerifier())
    return draft.freeze()
