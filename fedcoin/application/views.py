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
from fedcoin.data.block import Block
from fedcoin.data.genesis import ChainParams
from fedcoin.data.keys import address_of, format_address
from fedcoin.data.state import State
from fedcoin.data.tx import (
    Bond,
    CloseTask,
    ContentRef,
    FraudProof,
    PublishTask,
    ShareCommit,
    ShareReveal,
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


def load_view(cls: type[V], data: Any, build: Any) -> V:
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
    return load_view(
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
            {"n_exact_max": p.n_exact_max, "budget": p.budget, "commit_blocks": p.commit_blocks,
             "reveal_blocks": p.reveal_blocks},
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return load_view(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


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
    if isinstance(b, ShareCommit):
        return {"sv_task_id": b.sv_task_id.hex(), "commitment": b.commitment.hex()}
    if isinstance(b, ShareReveal):
        return {"sv_task_id": b.sv_task_id.hex(), "root": b.root.hex(), "entries": len(b.table)}
    if isinstance(b, FraudProof):
        return {"sv_task_id": b.sv_task_id.hex(), "position": b.position}
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
        return load_view(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


@dataclass(frozen=True, slots=True)
class Paid(View):
    address: str
    paid: int

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return load_view(cls, data, lambda d: cls(str(d["address"]), int(d["paid"])))


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
        return load_view(
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
class BlockView(View):
    hash: str
    height: int
    parent: str
    timestamp_ms: int
    proposer: str
    commit_round: int | None
    state_root: str
    txs: list[TxView]
    payouts: list[PayoutView]
    """The rounds this block settled or voided (its end-of-block PoSap step), in order."""

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            return cls(
                str(d["hash"]), int(d["height"]), str(d["parent"]), int(d["timestamp_ms"]),
                str(d["proposer"]), _opt_int(d["commit_round"]), str(d["state_root"]),
                [TxView.from_json(t) for t in d["txs"]],
                [PayoutView.from_json(p) for p in d["payouts"]],
            )  # fmt: skip

        return load_view(cls, data, build)


def block_view(block: Block, chain: Chain) -> BlockView:
    h = block.header
    certificate = chain.certificate(h.height)
    commit_round = None if certificate is None else certificate.round
    return BlockView(
        h.hash.hex(), h.height, h.parent.hex(), h.timestamp_ms, key_text(h.proposer_pubkey),
        commit_round, h.state_root.hex(), [TxView.of(t) for t in block.txs],
        [PayoutView.of(p) for p in chain.payouts_of(block.hash)],
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
        return load_view(cls, data, lambda d: cls(**{f.name: d[f.name] for f in fields(cls)}))


@dataclass(frozen=True, slots=True)
class AccountView(View):
    address: str
    balance: int
    nonce: int

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return load_view(
            cls, data, lambda d: cls(str(d["address"]), int(d["balance"]), int(d["nonce"]))
        )


def round_body(body: SubmitRound) -> JSON:
    return {
        "global_model": ref_json(body.global_model),
        "updates": [{"client": format_address(u.address), "samples": u.samples,
                     "weights": ref_json(u.weights)} for u in body.updates],
    }  # fmt: skip


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
