"""Payouts (DESIGN §6): clients by Shapley value, the FL server, the miners; refunds.

All arithmetic is on integers. For a settled round of price ``P``:
``clients = P·bps_c // 10⁴``, ``server = P·bps_s // 10⁴``, ``miners = P − clients − server``.
Clients are paid ``clients·p_i // Σp`` with ``p_i = max(sv_i, 0)``; the dust, or the whole pool
when no client has a positive value, goes back to the publisher. The miners' pool goes to the
revealers of the settled table by power (``consensus.settlement``); the remainder goes to the
creator of the settling block. A voided round refunds ``P``.
Every unit leaves escrow exactly once: what is paid plus what is refunded equals ``P``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fedcoin.contract.task import BPS_TOTAL
from fedcoin.data.encoding import (
    ADDRESS,
    HASH,
    I64,
    U32,
    U64,
    Record,
    list_of,
    nested,
    tuple_of,
    wire,
)
from fedcoin.data.genesis import MAX_OPEN_SV
from fedcoin.data.state import Draft, SvTask
from fedcoin.data.tx import MAX_CLIENTS
from fedcoin.data.vote import MAX_VALIDATORS
from fedcoin.errors import StoreError

_PAID = list_of(tuple_of(ADDRESS, U64), 64)
_MINERS_PAID = list_of(tuple_of(ADDRESS, U64), MAX_VALIDATORS)


@dataclass(frozen=True, slots=True)
class RoundPayout(Record):
    """Who got what for one settled or voided round: the receipt the store keeps per block."""

    task_id: bytes = wire(HASH)
    """The task."""
    round: int = wire(U32)
    """The round."""
    sv: tuple[int, ...] = wire(list_of(I64, MAX_CLIENTS))
    """Consensus Shapley values (fixed point), one per client; empty when voided."""
    clients: tuple[tuple[bytes, int], ...] = wire(_PAID)
    """(client address, base units) in client order."""
    server: int = wire(U64)
    """Paid to the FL server."""
    miners: tuple[tuple[bytes, int], ...] = wire(_MINERS_PAID)
    """(validator address, base units) for each revealer of the settled table."""
    proposer: int = wire(U64)
    """Remainder of the miners' pool paid to the proposer (fees not included)."""
    refund: int = wire(U64)
    """Returned to the publisher: client dust, an unpaid pool, or the whole price if voided."""

    @property
    def voided(self) -> bool:
        return not self.sv

    @property
    def total(self) -> int:
        return (
            sum(a for _, a in self.clients)
            + self.server
            + sum(a for _, a in self.miners)
            + self.proposer
            + self.refund
        )


def split_price(price: int, split_bps: tuple[int, int, int]) -> tuple[int, int, int]:
    """(clients, server, miners) pools of a round's price; they sum to ``price``."""
    clients = price * split_bps[0] // BPS_TOTAL
    server = price * split_bps[1] // BPS_TOTAL
    return clients, server, price - clients - server


def client_shares(pool: int, sv: tuple[int, ...]) -> tuple[list[int], int]:
    """Split ``pool`` in proportion to the positive Shapley values; return (pays, leftover)."""
    positive = [max(v, 0) for v in sv]
    total = sum(positive)
    if total == 0:
        return [0] * len(sv), pool
    pays = [pool * p // total for p in positive]
    return pays, pool - sum(pays)


def settle_round(
    draft: Draft,
    sv_task: SvTask,
    sv: tuple[int, ...],
    miners: Sequence[tuple[bytes, int]],
    proposer: bytes,
) -> RoundPayout:
    """Pay a settled round out of its task's escrow: clients by ``sv``, the FL server, each
    ``(miner address, amount)`` of the miners' pool, and what is left of the pool to the
    proposer."""
    task = draft.task(sv_task.task_id)
    if task is None or task.escrow < sv_task.price:
        # The contract guarantees both; a failure here means corrupted state, not a bad block.
        raise StoreError(f"task {sv_task.task_id.hex()} cannot pay its queued round")
    clients_pool, server_pool, miners_pool = split_price(sv_task.price, task.spec.split_bps)
    paid_miners = sum(amount for _, amount in miners)
    if any(amount < 0 for _, amount in miners) or paid_miners > miners_pool:
        raise StoreError("miners cannot be paid more than the miners' pool")
    pays, refund = client_shares(clients_pool, sv)
    client_rows = tuple((u.address, pay) for u, pay in zip(sv_task.updates, pays, strict=True))
    for address, pay in client_rows:
        draft.credit(address, pay)
    draft.credit(task.spec.server, server_pool)
    for miner, amount in miners:
        draft.credit(miner, amount)
    remainder = miners_pool - paid_miners
    draft.credit(proposer, remainder)
    draft.credit(task.publisher, refund)
    draft.set_task(sv_task.task_id, replace(task, escrow=task.escrow - sv_task.price))
    return RoundPayout(
        task_id=sv_task.task_id,
        round=sv_task.round,
        sv=sv,
        clients=client_rows,
        server=server_pool,
        miners=tuple(miners),
        proposer=remainder,
        refund=refund,
    )


def void_round(draft: Draft, sv_task: SvTask) -> RoundPayout:
    """Refund a round nobody valued in time to its publisher."""
    task = draft.task(sv_task.task_id)
    if task is None or task.escrow < sv_task.price:
        raise StoreError(f"task {sv_task.task_id.hex()} cannot refund its queued round")
    draft.credit(task.publisher, sv_task.price)
    draft.set_task(sv_task.task_id, replace(task, escrow=task.escrow - sv_task.price))
    return RoundPayout(sv_task.task_id, sv_task.round, (), (), 0, (), 0, sv_task.price)


MAX_SETTLED_PER_BLOCK = MAX_OPEN_SV
"""Decoder bound on the rounds one receipt lists (at most ``max_open_sv`` settle per block)."""


@dataclass(frozen=True, slots=True)
class BlockReceipt(Record):
    """What the store keeps per block: the rounds its end-of-block step settled or voided."""

    payouts: tuple[RoundPayout, ...] = wire(list_of(nested(RoundPayout), MAX_SETTLED_PER_BLOCK))
    """One per SV task settled or voided, in queue order."""
