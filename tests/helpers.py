"""Small builders shared by the tests: keys, genesis, transactions, tasks, blocks, chains."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedcoin.consensus.chain import Chain, ImportResult
from fedcoin.consensus.randao import randao_reveal_for
from fedcoin.consensus.rules import Applied, Body, build_block
from fedcoin.consensus.stake import randao_secret
from fedcoin.consensus.stake import randao_tip as randao_chain_tip
from fedcoin.consensus.table import share_commitment, table_estimate, table_root
from fedcoin.consensus.validators import SignatureCache
from fedcoin.consensus.valuation import TableOracle, reveal_open, schedule_of
from fedcoin.data.block import Block, BlockHeader
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
    ShareCommit,
    ShareReveal,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
    TxBody,
    make_tx,
)
from fedcoin.data.vote import TAG_VOTE, CommitCertificate, DuplicateVoteEvidence, Vote, VoteType
from fedcoin.errors import (
    NotFedAvg,
    RoundContentUnavailable,
    ShareContentUnavailable,
    TaskContentUnavailable,
)

CHAIN_ID = "fedcoin-test"
FC = 1_000_000
T0 = 1_700_000_000_000


KEYS: dict[bytes, PrivateKey] = {}
"""Every key ``key`` made, by public key: the signers of test certificates."""


def key(name: str) -> PrivateKey:
    """A deterministic key per name, so tests are reproducible."""
    made = PrivateKey.from_seed(hashlib.sha256(name.encode()).digest())
    KEYS.setdefault(made.public, made)
    return made


ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
SERVER, MINER, MINER2, MINER3 = key("server"), key("miner"), key("miner2"), key("miner3")
CLIENTS = [key(f"client{i}") for i in range(8)]


MINERS = [MINER, MINER2, MINER3, *(key(f"validator-{i}") for i in range(40))]
"""Keys the tests propose blocks and write shares with: the default genesis validators."""


TEST_RANDAO_LENGTH = 1_000
"""Test hash chains are short (1 000 reveals) so a genesis of 46 validators is cheap to make; a
node's ``randao_reveal_for`` walks up to ``RANDAO_LENGTH`` and finds these tips all the same."""

_TIPS: dict[bytes, bytes] = {}


def randao_tip(k: PrivateKey) -> bytes:
    """The tip of ``k``'s (short) randao hash chain, registered in test geneses."""
    if k.public not in _TIPS:
        _TIPS[k.public] = randao_chain_tip(randao_secret(k), TEST_RANDAO_LENGTH)
    return _TIPS[k.public]


def reveal_of(k: PrivateKey, state: State) -> bytes:
    """The randao reveal ``k`` puts in the next block it creates on ``state``."""
    stake = state.stakes.get(k.public)
    if stake is None:
        return bytes(32)  # not bonded: the block is refused, as it must be
    return randao_reveal_for(randao_secret(k), stake.randao_tip)


#: One process-wide cache of verified vote signatures, as a node has.
VOTE_CHECK = SignatureCache()


def precommit(k: PrivateKey, height: int, round_: int, block_id: bytes | None) -> Vote:
    """``k``'s signed precommit (use ``VoteType`` and ``Vote`` directly for other types)."""
    return signed_vote(k, Vote(height, round_, VoteType.PRECOMMIT, block_id, k.public, bytes(64)))


def signed_vote(k: PrivateKey, vote: Vote) -> Vote:
    return vote.with_signature(k.sign(TAG_VOTE, vote.digest(CHAIN_ID)))


def certify(
    block: Block,
    before: State,
    *,
    round_: int = 0,
    signers: Sequence[PrivateKey] | None = None,
) -> CommitCertificate:
    """A real certificate for ``block``: precommits of the smallest prefix of the height's
    members (by power, then key) holding more than 2/3 of the power, or of ``signers``.
    ``before`` is the parent's post-state, whose set decides the block's height."""
    members = sorted(before.validators, key=lambda m: (-m[1], m[0]))
    if signers is None:
        total = sum(power for _, power, _ in members)
        chosen: list[PrivateKey] = []
        power = 0
        for pk, member_power, _ in members:
            if 3 * power > 2 * total:
                break
            chosen.append(KEYS[pk])
            power += member_power
        signers = chosen
    votes = [precommit(k, block.height, round_, block.hash) for k in signers]
    return CommitCertificate.from_votes(votes)


def equivocation(k: PrivateKey, height: int, round_: int = 0) -> DuplicateVoteEvidence:
    """Evidence that ``k`` prevoted two different blocks at ``height``."""
    from fedcoin.consensus.evidence import detect

    a, b = (
        signed_vote(k, Vote(height, round_, VoteType.PREVOTE, bytes([i]) * 32, k.public, bytes(64)))
        for i in (1, 2)
    )
    found = detect(a, b)
    assert found is not None
    return found


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


def linear_utility(sv_task_id: bytes, mask: int) -> int:
    """The tests' default game: client i adds 256·(i + 1) to every coalition it joins."""
    return sum(256 * (i + 1) for i in range(mask.bit_length()) if mask >> i & 1)


@dataclass
class TableVerifier:
    """A table-driven stand-in for the Shapley engine: it knows the right answers by table.

    - A round is sound when every weight blob is in ``available`` and the global model is the
      one ``global_ref`` names (standing in for the FedAvg check).
    - ``U(mask)`` of an SV task is ``utility(sv_task_id, mask)``; ``evaluations`` counts the
      masks evaluated (each once, as a node's memo does).
    """

    utility: Callable[[bytes, int], int] = linear_utility
    missing: set[bytes] = field(default_factory=set)
    max_entry: int = 1 << 24
    round_work: int = 0
    evaluated: set[tuple[bytes, int]] = field(default_factory=set)

    def check_task(self, spec: TaskSpec) -> int:
        for blob in (spec.model, spec.validation):
            if blob.sha256 in self.missing:
                raise TaskContentUnavailable(sha256=blob.sha256)
        return self.round_work

    def check_round(self, task: TaskState, round_: SubmitRound) -> None:
        for u in round_.updates:
            if u.weights.sha256 in self.missing:
                raise RoundContentUnavailable(sha256=u.weights.sha256)
        if round_.global_model != global_ref(round_.task_id, round_.round):
            raise NotFedAvg(round=round_.round)

    def utilities(self, sv: SvTask, task: TaskState, masks: Sequence[int]) -> list[int]:
        if any(u.weights.sha256 in self.missing for u in sv.updates):
            raise ShareContentUnavailable(sv_task=sv.sv_task_id)
        self.evaluated.update((sv.sv_task_id, m) for m in masks)
        return [self.utility(sv.sv_task_id, m) for m in masks]

    def max_utility(self, task: TaskState) -> int:
        return self.max_entry

    def estimate(
        self, sv: SvTask, task: TaskState, schedule: Sequence[int], table: Sequence[int]
    ) -> tuple[int, ...]:
        return table_estimate(sv.n, schedule, table)


def salt_of(k: PrivateKey, sv_task_id: bytes, attempt: int = 0) -> bytes:
    return hashlib.sha256(b"test-salt" + k.public + sv_task_id + bytes([attempt])).digest()


def open_sv(state: State, sv_task_id: bytes) -> SvTask:
    return next(sv for sv in state.queue if sv.sv_task_id == sv_task_id)


def honest_table(verifier: TableOracle, state: State, sv_task_id: bytes) -> tuple[int, ...]:
    """The table every honest member computes: ``U`` on the common schedule."""
    sv = open_sv(state, sv_task_id)
    task = state.tasks[sv.task_id]
    return tuple(verifier.utilities(sv, task, schedule_of(sv, task.spec)))


def commit_txs(
    state: State, sv_task_id: bytes, tables: dict[PrivateKey, Sequence[int]]
) -> list[Transaction]:
    """Each member's ShareCommit to its table (salt from ``salt_of``)."""
    sv = open_sv(state, sv_task_id)
    out = []
    for k, table in tables.items():
        root = table_root(sv_task_id, table)
        c = share_commitment(sv_task_id, k.public, root, salt_of(k, sv_task_id, sv.attempt))
        out.append(tx(k, state.account(k.address).nonce, ShareCommit(sv_task_id, c)))
    return out


def reveal_txs(
    state: State, sv_task_id: bytes, tables: dict[PrivateKey, Sequence[int]]
) -> list[Transaction]:
    """Each member's ShareReveal: the first of each root carries the table, the rest the root."""
    sv = open_sv(state, sv_task_id)
    out = []
    shown = {root for root, _ in sv.tables}
    for k, table in tables.items():
        root = table_root(sv_task_id, table)
        body = ShareReveal(
            sv_task_id,
            salt_of(k, sv_task_id, sv.attempt),
            root,
            () if root in shown else tuple(table),
        )
        shown.add(root)
        out.append(tx(k, state.account(k.address).nonce, body))
    return out


def value_round(
    add: Callable[[Sequence[Transaction]], Applied],
    state: Callable[[], State],
    height: Callable[[], int],
    verifier: TableOracle,
    sv_task_id: bytes,
    tables: dict[PrivateKey, Sequence[int]] | None = None,
) -> Applied:
    """Drive an SV task to its settlement: empty blocks until its schedule is known, every
    member's commit in one block, every reveal in the next (the settling block).

    ``tables``: member → table it commits to (default: every committee member, honest)."""
    while open_sv(state(), sv_task_id).mix == bytes(32):
        add(())
    if tables is None:
        honest = honest_table(verifier, state(), sv_task_id)
        tables = {KEYS[pk]: honest for pk, _ in open_sv(state(), sv_task_id).committee}
    add(commit_txs(state(), sv_task_id, tables))
    while not reveal_open(open_sv(state(), sv_task_id), height() + 1):
        add(())  # not every member committed: the commit window runs its length
    return add(reveal_txs(state(), sv_task_id, tables))


@dataclass
class ChainBuilder:
    """Builds valid blocks on top of each other, each committed by a real certificate, tracking
    the head header and state. ``chain`` (optional) receives every block through ``commit``."""

    genesis: Genesis
    verifier: TableVerifier = field(default_factory=TableVerifier)
    proposer: PrivateKey = MINER
    chain: Chain | None = None

    def __post_init__(self) -> None:
        self.block: Block = self.genesis.block()
        self.state: State = self.genesis.state()
        self.blocks: list[Block] = [self.block]
        self.states: list[State] = [self.state]
        self.certificates: dict[int, CommitCertificate] = {}
        self.now = T0

    @property
    def header(self) -> BlockHeader:
        return self.block.header

    @property
    def last_commit(self) -> CommitCertificate | None:
        return self.certificates.get(self.header.height)

    def next_time(self, gap: int | None = None) -> int:
        step = gap if gap is not None else self.genesis.params.min_block_interval_ms
        self.now += step
        return self.now

    def body(
        self,
        txs: Sequence[Transaction] = (),
        *,
        gap: int | None = None,
        proposer: PrivateKey | None = None,
        evidence: Sequence[DuplicateVoteEvidence] = (),
    ) -> Body:
        creator = proposer or self.proposer
        reveal = reveal_of(creator, self.state)
        return Body(self.next_time(gap), creator.public, reveal, txs, evidence)

    def make(
        self,
        txs: Sequence[Transaction] = (),
        *,
        gap: int | None = None,
        proposer: PrivateKey | None = None,
        evidence: Sequence[DuplicateVoteEvidence] = (),
    ) -> tuple[Block, Applied]:
        """Build the next block (not yet committed)."""
        body = self.body(txs, gap=gap, proposer=proposer, evidence=evidence)
        return build_block(
            self.state,
            self.header,
            self.genesis,
            self.verifier,
            body,
            self.last_commit,
            check=VOTE_CHECK,
        )

    def commit(self, block: Block, applied: Applied) -> CommitCertificate:
        """Certify ``block`` (built on the head) and make it the head."""
        certificate = certify(block, self.state)
        if self.chain is not None:
            self.chain.commit(block, certificate)
        self.block, self.state = block, applied.state
        self.blocks.append(block)
        self.states.append(applied.state)
        self.certificates[block.height] = certificate
        return certificate

    def add(self, *args: object, **kwargs: object) -> Applied:
        block, applied = self.make(*args, **kwargs)  # type: ignore[arg-type]
        self.commit(block, applied)
        return applied

    def value(
        self, sv_task_id: bytes, tables: dict[PrivateKey, Sequence[int]] | None = None
    ) -> Applied:
        """Settle an SV task through commits and reveals (``value_round``)."""
        return value_round(
            self.add, lambda: self.state, lambda: self.header.height, self.verifier, sv_task_id,
            tables,
        )  # fmt: skip


def make_chain(genesis: Genesis, store: ChainStore | None = None, **kwargs: object) -> Chain:
    """A ``Chain`` over ``store`` (in memory by default) with the table verifier."""
    verifier = kwargs.pop("verifier", None) or TableVerifier()
    return Chain(
        store or MemoryChainStore(genesis),
        genesis,
        verifier,  # type: ignore[arg-type]
        vote_check=VOTE_CHECK,
    )


def commit_next(
    chain: Chain,
    proposer: PrivateKey = MINER,
    txs: Sequence[Transaction] = (),
    *,
    gap: int | None = None,
    evidence: Sequence[DuplicateVoteEvidence] = (),
) -> tuple[Block, ImportResult]:
    """Propose the next block on ``chain`` as ``proposer`` and commit it with a certificate."""
    head = chain.head
    state = chain.head_state()
    step = gap if gap is not None else chain.genesis.params.min_block_interval_ms
    block, _ = chain.propose(
        proposer.public,
        reveal_of(proposer, state),
        timestamp_ms=head.timestamp_ms + step,
        txs=txs,
        evidence=evidence,
    )
    return block, chain.commit(block, certify(block, state))


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


def value_on_chain(
    chain: Chain,
    sv_task_id: bytes,
    tables: dict[PrivateKey, Sequence[int]] | None = None,
    proposer: PrivateKey = MINER,
) -> Applied:
    """``value_round`` through ``chain.propose``/``commit``."""

    def add(txs: Sequence[Transaction]) -> Applied:
        result = commit_next(chain, proposer, txs)[1]
        assert result.applied is not None
        return result.applied

    return value_round(
        add, chain.head_state, lambda: chain.head.height, chain.verifier, sv_task_id, tables
    )
