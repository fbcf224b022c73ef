"""The HTTP API's typed schema: every view a node serves, to JSON and back, in one place.

Each view is a frozen dataclass with ``to_json()`` and a ``from_json(data)`` class method, so
the API (which builds views from chain objects with ``block_view``, ``task_view`` …) and its
clients (the light node, the wallet commands, the explorer through the same JSON) share one
definition of every field. In JSON, amounts are integer units (10⁻⁶ FC), hashes and ids are
hex, addresses are ``fc…`` text, and Shapley values are fixed point (``SV_SCALE`` per
validation sample). ``from_json`` raises ``DecodeError`` on a malformed document.

Simplification: a transaction's body stays a JSON object whose keys depend on its kind
(``tx_body``); everything else is typed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Self, TypeVar

from fedcoin.consensus.chain import Chain
from fedcoin.consensus.game import max_utility
from fedcoin.data.block import Block, Share
from fedcoin.data.genesis import ChainParams
from fedcoin.data.keys import address_of, format_address
from fedcoin.data.state import State, TaskState, TaskStatus
from fedcoin.data.tx import (
    Bond,
    CloseTask,
    ContentRef,
    PublishTask,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
    Unbond,
)
from fedcoin.errors import DecodeError
from fedcoin.incentive.payouts import RoundPayout

JSON = dict[str, Any]
V = TypeVar("V")


def _plain(value: Any) -> Any:
    """A view (or a list of views) as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class View:
    """``to_json`` for every view: its fields, recursively, under their own names."""

    def to_json(self) -> JSON:
        out: JSON = _plain(self)
        return out


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _load(cls: type[V], data: Any, build: Any) -> V:
    """Run ``build(data)``, turning a missing key or a wrong type into ``DecodeError``."""
    if not isinstance(data, dict):
        raise DecodeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    try:
        built: V = build(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"{cls.__name__}: {type(exc).__name__} {exc}") from None
    return built


def key_text(pubkey: bytes) -> str:
    """The address a public key controls, as people write it."""
    return format_address(address_of(pubkey))


# --- content references and task specs ---------------------------------------------------------
def ref_json(ref: ContentRef) -> JSON:
    return {"sha256": ref.sha256.hex(), "size": ref.size, "cid": ref.cid}


def ref_from_json(data: Any) -> ContentRef:
    """The inverse of ``ref_json``."""
    return _load(
        ContentRef,
        data,
        lambda d: ContentRef(bytes.fromhex(d["sha256"]), int(d["size"]), str(d["cid"])),
    )


@dataclass(frozen=True, slots=True)
class SpecView(View):
    """What a task pays for: its model, validation set, rounds, price and PoSap parameters."""

    name: str
    model: JSON
    validation: JSON
    server: str
    rounds: int
    price_per_round: int
    split_bps: list[int]
    min_clients: int
    max_clients: int
    deadline_height: int
    posap: dict[str, int]

    @classmethod
    def of(cls, spec: TaskSpec) -> SpecView:
        p = spec.posap
        return cls(
            spec.name, ref_json(spec.model), ref_json(spec.validation),
            format_address(spec.server), spec.rounds, spec.price_per_round,
            list(spec.split_bps), spec.min_clients, spec.max_clients, spec.deadline_height,
            {"n_exact_max": p.n_exact_max, "budget": p.budget, "spot_checks": p.spot_checks,
             "tolerance": p.tolerance, "posap_timeout_ms": p.posap_timeout_ms,
             "share_window_ms": p.share_window_ms},
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


# --- transactions and blocks -------------------------------------------------------------------
def tx_body(tx: Transaction) -> JSON:
    """A transaction's body; its keys depend on its kind."""
    b = tx.body
    if isinstance(b, Transfer):
        return {"to": format_address(b.to), "amount": b.amount}
    if isinstance(b, PublishTask):
        return {"spec": SpecView.of(b.spec).to_json()}
    if isinstance(b, SubmitRound):
        return {"task_id": b.task_id.hex(), "round": b.round, **round_body(b)}
    if isinstance(b, CloseTask):
        return {"task_id": b.task_id.hex()}
    if isinstance(b, Bond):
        return {"amount": b.amount, "randao_tip": b.randao_tip.hex()}
    if isinstance(b, Unbond):
        return {"amount": b.amount}
    return {}


@dataclass(frozen=True, slots=True)
class TxView(View):
    id: str
    kind: str
    sender: str
    nonce: int
    fee: int
    body: JSON

    @classmethod
    def of(cls, tx: Transaction) -> TxView:
        return cls(
            tx.id.hex(), tx.kind_name, format_address(tx.sender), tx.nonce, tx.fee, tx_body(tx)
        )

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


@dataclass(frozen=True, slots=True)
class Paid(View):
    address: str
    paid: int

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(cls, data, lambda d: cls(str(d["address"]), int(d["paid"])))


@dataclass(frozen=True, slots=True)
class PayoutView(View):
    """How one settled (or voided) round's price was split: the one typed form of a payout."""

    task_id: str
    round: int
    voided: bool
    sv: list[int]
    clients: list[Paid]
    server: int
    miners: list[Paid]
    proposer_remainder: int
    refund: int

    @classmethod
    def of(cls, p: RoundPayout) -> PayoutView:
        return cls(
            p.task_id.hex(), p.round, p.voided, list(p.sv),
            [Paid(format_address(a), v) for a, v in p.clients], p.server,
            [Paid(format_address(a), v) for a, v in p.miners], p.proposer, p.refund,
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(
            cls,
            data,
            lambda d: cls(
                str(d["task_id"]), int(d["round"]), bool(d["voided"]), [int(v) for v in d["sv"]],
                [Paid.from_json(c) for c in d["clients"]], int(d["server"]),
                [Paid.from_json(m) for m in d["miners"]], int(d["proposer_remainder"]),
                int(d["refund"]),
            ),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShareView(View):
    """A miner's PoSap share: its SV estimate and how many coalitions it evaluated."""

    miner: str
    estimate: list[int]
    entries: int
    utility_all: int | None
    """U of the grand coalition (the round model's summed clipped margins), if tabled."""
    utility_none: int | None
    """U of the empty coalition (the previous global model), if tabled."""

    @classmethod
    def of(cls, share: Share) -> ShareView:
        table = dict(share.table)
        everyone = (1 << len(share.estimate)) - 1
        return cls(
            key_text(share.miner_pubkey), list(share.estimate), len(share.table),
            table.get(everyone), table.get(0),
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


@dataclass(frozen=True, slots=True)
class PosapView(View):
    sv_task_id: str
    voided: bool
    shares: list[ShareView]

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(
            cls,
            data,
            lambda d: cls(
                str(d["sv_task_id"]),
                bool(d["voided"]),
                [ShareView.from_json(s) for s in d["shares"]],
            ),
        )


@dataclass(frozen=True, slots=True)
class BlockView(View):
    hash: str
    height: int
    parent: str
    timestamp_ms: int
    proposer: str
    commit_round: int | None
    state_root: str
    txs: list[TxView]
    posap: PosapView | None
    payout: PayoutView | None

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            return cls(
                str(d["hash"]), int(d["height"]), str(d["parent"]), int(d["timestamp_ms"]),
                str(d["proposer"]), _opt_int(d["commit_round"]), str(d["state_root"]),
                [TxView.from_json(t) for t in d["txs"]],
                None if d["posap"] is None else PosapView.from_json(d["posap"]),
                None if d["payout"] is None else PayoutView.from_json(d["payout"]),
            )  # fmt: skip

        return _load(cls, data, build)


def block_view(block: Block, chain: Chain) -> BlockView:
    h = block.header
    payout = chain.payout_of(block.hash)
    certificate = chain.certificate(h.height)
    commit_round = None if certificate is None else certificate.round
    posap = None
    if block.posap is not None:
        shares = [ShareView.of(s) for s in block.posap.shares]
        posap = PosapView(block.posap.sv_task_id.hex(), block.posap.voids, shares)
    return BlockView(
        h.hash.hex(), h.height, h.parent.hex(), h.timestamp_ms, key_text(h.proposer_pubkey),
        commit_round, h.state_root.hex(), [TxView.of(t) for t in block.txs], posap,
        PayoutView.of(payout) if payout else None,
    )  # fmt: skip


# --- node status and accounts ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusView(View):
    chain_id: str
    genesis: str
    node: str
    address: str
    head: str
    height: int
    timestamp_ms: int
    peers: list[str]
    mempool: int
    pending_sv_tasks: int

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


@dataclass(frozen=True, slots=True)
class AccountView(View):
    address: str
    balance: int
    nonce: int

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return _load(
            cls, data, lambda d: cls(str(d["address"]), int(d["balance"]), int(d["nonce"]))
        )


# --- tasks and rounds --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RoundView(View):
    """One round of a task: its submission and, once settled, the shares and the payout."""

    task_id: str
    round: int
    global_model: JSON
    updates: list[JSON]
    sv_task_id: str
    submitted_height: int
    settled: bool
    settled_height: int | None
    shares: list[ShareView]
    payout: PayoutView | None
    accuracy: float | None
    """The round's model on the validation set (U of the grand coalition ÷ its maximum, ≤ the
    accuracy: the protocol's U sums clipped margins), if known."""

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            return cls(
                str(d["task_id"]), int(d["round"]), dict(d["global_model"]), list(d["updates"]),
                str(d["sv_task_id"]), int(d["submitted_height"]), bool(d["settled"]),
                d["settled_height"], [ShareView.from_json(s) for s in d["shares"]],
                None if d["payout"] is None else PayoutView.from_json(d["payout"]),
                d["accuracy"],
            )  # fmt: skip

        return _load(cls, data, build)


@dataclass(frozen=True, slots=True)
class TaskView(View):
    id: str
    spec: SpecView
    publisher: str
    escrow: int
    rounds_done: int
    status: str
    global_model: JSON
    created_height: int
    validation_samples: int | None
    rounds: list[RoundView] | None
    """Every round, in order (``None`` in the task list, which leaves them out)."""

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            rounds = d.get("rounds")
            return cls(
                str(d["id"]), SpecView.from_json(d["spec"]), str(d["publisher"]),
                int(d["escrow"]), int(d["rounds_done"]), str(d["status"]),
                dict(d["global_model"]), int(d["created_height"]), d.get("validation_samples"),
                None if rounds is None else [RoundView.from_json(r) for r in rounds],
            )  # fmt: skip

        return _load(cls, data, build)


def task_view(
    task_id: bytes,
    task: TaskState,
    chain: Chain,
    *,
    with_rounds: bool,
    validation_samples: int | None = None,
) -> TaskView:
    rounds = task_rounds(task_id, chain, validation_samples) if with_rounds else None
    return TaskView(
        task_id.hex(), SpecView.of(task.spec), format_address(task.publisher), task.escrow,
        task.rounds_done, TaskStatus(task.status).name.lower(), ref_json(task.global_model),
        task.created_height, validation_samples, rounds,
    )  # fmt: skip


def task_rounds(task_id: bytes, chain: Chain, samples: int | None) -> list[RoundView]:
    """Every round of a task from the canonical blocks that touch it (the store's task index)."""
    submitted: dict[bytes, tuple[SubmitRound, int]] = {}
    settled: dict[bytes, tuple[Block, int]] = {}
    for height, block_hash in chain.store.task_blocks(task_id):
        block = chain.store.get_block(block_hash)
        if block is None:
            continue
        for tx in block.txs:
            if isinstance(tx.body, SubmitRound) and tx.body.task_id == task_id:
                submitted[tx.id] = (tx.body, height)
        if block.posap is not None:
            settled[block.posap.sv_task_id] = (block, height)
    rounds: dict[int, RoundView] = {}
    for sv_id, (body, height) in submitted.items():
        found = settled.get(sv_id)
        shares: list[ShareView] = []
        payout = settled_height = accuracy = None
        if found is not None:
            block, settled_height = found
            assert block.posap is not None  # settled only holds blocks with a PoSap section
            shares = [ShareView.of(s) for s in block.posap.shares]
            paid = chain.payout_of(block.hash)
            payout = PayoutView.of(paid) if paid else None
            accuracy = round_accuracy(shares, samples)
        base = round_body(body)
        rounds[body.round] = RoundView(
            task_id.hex(), body.round, base["global_model"], base["updates"], sv_id.hex(), height,
            found is not None, settled_height, shares, payout, accuracy,
        )  # fmt: skip
    return [rounds[r] for r in sorted(rounds)]


def round_body(body: SubmitRound) -> JSON:
    return {
        "global_model": ref_json(body.global_model),
        "updates": [{"client": format_address(u.address), "samples": u.samples,
                     "weights": ref_json(u.weights)} for u in body.updates],
    }  # fmt: skip


def round_accuracy(shares: list[ShareView], samples: int | None) -> float | None:
    """The round model's score in [0, 1] from the first share that tabled the grand coalition:
    U(N) ÷ its maximum (the clipped margin of every sample at the cap), at most the accuracy."""
    if not samples:
        return None
    for share in shares:
        if share.utility_all is not None:
            return share.utility_all / max_utility(samples)
    return None


# --- stake -------------------------------------------------------------------------------------
def validators_json(state: State, params: ChainParams, height: int) -> JSON:
    """GET /validators: this epoch's set (power snapshotted at the boundary), every bond, and
    the unbonding entries not yet released."""
    epoch = params.epoch_blocks
    return {
        "height": height,
        "epoch_blocks": epoch,
        "next_epoch_at": (height // epoch + 1) * epoch,
        "total_power": sum(power for _, power, _ in state.validators),
        "validators": [
            {"pubkey": pk.hex(), "address": key_text(pk), "power": power,
             "proposer_priority": priority, "bond": state.bond_of(pk)}
            for pk, power, priority in state.validators
        ],
        "bonds": [
            {"pubkey": pk.hex(), "address": key_text(pk), "bond": st.bond,
             "jailed_until": st.jailed_until, "randao_tip": st.randao_tip.hex()}
            for pk, st in sorted(state.stakes.items())
        ],
        "unbonding": [
            {"pubkey": u.pubkey.hex(), "address": key_text(u.pubkey), "amount": u.amount,
             "created": u.created, "release": u.release}
            for u in state.unbonding
        ],
    }  # fmt: skip
