"""JSON views of chain objects for the HTTP API: blocks, transactions, tasks, payouts.

Addresses appear as people write them (``fc`` + hex), hashes as hex, amounts as integers of
base units. ``ref_from_json`` inverts ``ref_json`` for clients that read refs back.
"""

from __future__ import annotations

from typing import Any

from fedcoin.consensus.chain import Chain
from fedcoin.data.block import Block
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
from fedcoin.incentive.payouts import RoundPayout


def key_text(pubkey: bytes) -> str:
    """The address a public key controls, as people write it."""
    return format_address(address_of(pubkey))


def ref_json(ref: ContentRef) -> dict[str, Any]:
    return {"sha256": ref.sha256.hex(), "size": ref.size, "cid": ref.cid}


def ref_from_json(data: dict[str, Any]) -> ContentRef:
    """The inverse of ``ref_json``."""
    return ContentRef(bytes.fromhex(data["sha256"]), int(data["size"]), str(data["cid"]))


def spec_json(spec: TaskSpec) -> dict[str, Any]:
    return {
        "name": spec.name, "model": ref_json(spec.model), "validation": ref_json(spec.validation),
        "server": format_address(spec.server), "rounds": spec.rounds,
        "price_per_round": spec.price_per_round, "split_bps": list(spec.split_bps),
        "min_clients": spec.min_clients, "max_clients": spec.max_clients,
        "deadline_height": spec.deadline_height,
        "posap": {
            "n_exact_max": spec.posap.n_exact_max, "budget": spec.posap.budget,
            "spot_checks": spec.posap.spot_checks, "tolerance": spec.posap.tolerance,
            "posap_timeout_ms": spec.posap.posap_timeout_ms,
            "share_window_ms": spec.posap.share_window_ms,
        },
    }  # fmt: skip


def tx_json(tx: Transaction) -> dict[str, Any]:
    body: dict[str, Any]
    b = tx.body
    if isinstance(b, Transfer):
        body = {"to": format_address(b.to), "amount": b.amount}
    elif isinstance(b, PublishTask):
        body = {"spec": spec_json(b.spec)}
    elif isinstance(b, SubmitRound):
        body = {
            "task_id": b.task_id.hex(), "round": b.round, "global_model": ref_json(b.global_model),
            "updates": [{"client": format_address(u.address), "samples": u.samples,
                         "weights": ref_json(u.weights)} for u in b.updates],
        }  # fmt: skip
    elif isinstance(b, CloseTask):
        body = {"task_id": b.task_id.hex()}
    elif isinstance(b, Bond):
        body = {"amount": b.amount, "randao_tip": b.randao_tip.hex()}
    elif isinstance(b, Unbond):
        body = {"amount": b.amount}
    return {
        "id": tx.id.hex(), "kind": tx.kind_name, "sender": format_address(tx.sender),
        "nonce": tx.nonce, "fee": tx.fee, "body": body,
    }  # fmt: skip


def payout_json(p: RoundPayout) -> dict[str, Any]:
    return {
        "task_id": p.task_id.hex(), "round": p.round, "voided": p.voided, "sv": list(p.sv),
        "clients": [{"address": format_address(a), "paid": v} for a, v in p.clients],
        "server": p.server,
        "miners": [{"address": format_address(a), "paid": v} for a, v in p.miners],
        "proposer_remainder": p.proposer, "refund": p.refund,
    }  # fmt: skip


def block_json(block: Block, chain: Chain) -> dict[str, Any]:
    h = block.header
    payout = chain.payout_of(block.hash)
    return {
        "hash": h.hash.hex(), "height": h.height, "parent": h.parent.hex(),
        "timestamp_ms": h.timestamp_ms, "proposer": key_text(h.proposer_pubkey),
        "weight": h.weight, "state_root": h.state_root.hex(),
        "txs": [tx_json(t) for t in block.txs],
        "posap": None if block.posap is None else {
            "sv_task_id": block.posap.sv_task_id.hex(), "voided": block.posap.voids,
            "shares": [{"miner": key_text(s.miner_pubkey), "estimate": list(s.estimate),
                        "entries": len(s.table)} for s in block.posap.shares],
        },
        "payout": payout_json(payout) if payout else None,
    }  # fmt: skip


def task_json(task_id: bytes, task: TaskState, chain: Chain, with_rounds: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task_id.hex(), "spec": spec_json(task.spec),
        "publisher": format_address(task.publisher),
        "escrow": task.escrow, "rounds_done": task.rounds_done,
        "status": TaskStatus(task.status).name.lower(), "global_model": ref_json(task.global_model),
        "created_height": task.created_height,
    }  # fmt: skip
    if with_rounds:
        out["rounds"] = task_rounds(task_id, task, chain)
    return out


def task_rounds(task_id: bytes, task: TaskState, chain: Chain) -> list[dict[str, Any]]:
    """Every round of a task, from the canonical chain: submission, shares, SVs, payouts."""
    store = chain.store
    rounds: dict[int, dict[str, Any]] = {}
    by_sv: dict[bytes, int] = {}
    for height in range(task.created_height, store.head().height + 1):
        block = store.block_at(height)
        if block is None:
            break
        for tx in block.txs:
            if isinstance(tx.body, SubmitRound) and tx.body.task_id == task_id:
                entry = tx_json(tx)["body"]
                entry.update(
                    {"sv_task_id": tx.id.hex(), "submitted_height": height, "settled": False}
                )
                rounds[tx.body.round] = entry
                by_sv[tx.id] = tx.body.round
        if block.posap is not None and block.posap.sv_task_id in by_sv:
            entry = rounds[by_sv[block.posap.sv_task_id]]
            payout = chain.payout_of(block.hash)
            entry["settled"] = True
            entry["settled_height"] = height
            entry["shares"] = [
                {"miner": key_text(s.miner_pubkey), "estimate": list(s.estimate)}
                for s in block.posap.shares
            ]
            entry["payout"] = payout_json(payout) if payout else None
    return [rounds[r] for r in sorted(rounds)]


def validators_json(state: State, params: ChainParams, height: int) -> dict[str, Any]:
    """GET /validators: this epoch's set (power snapshotted at the boundary), every bond, and
    the unbonding entries not yet released."""
    epoch = params.epoch_blocks
    return {
        "height": height,
        "epoch_blocks": epoch,
        "next_epoch_at": (height // epoch + 1) * epoch,
        "total_power": sum(power for _, power in state.validators),
        "validators": [
            {"pubkey": pk.hex(), "address": key_text(pk), "power": power,
             "bond": state.bond_of(pk)}
            for pk, power in state.validators
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
