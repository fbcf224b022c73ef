"""The valuation worker of a validator: compute the SV task's table, commit to it, reveal it.

Proof of Shapley v2 (DESIGN §5 "Valuation"): every open SV task has a committee (the validator
set of the height after the one that opened it) and, from the block after that, a common
schedule. Woken by each committed block (or a short tick), this worker looks at the head state
and, for every open SV task whose committee holds this node's key and whose schedule is known:

1. makes sure the round's content is here (local store, IPFS, peers) and computes the table
   ``U(mask)`` over the schedule **once** per SV task, off the event loop (``TableCache``);
2. while the commit window is open for the next block and the key has not committed, submits
   ``ShareCommit(sv_task_id, sha256(tag ‖ sv_task_id ‖ key ‖ root ‖ salt))``;
3. once the reveal window is open, submits ``ShareReveal(sv_task_id, salt, root, table)`` —
   without the table when a table with that root is already recorded for the SV task.

Both travel as ordinary transactions through the node's own mempool and gossip
(``FullNode.submit_tx``), with the sender's next nonce counting its pending transactions. A
retried SV task (``attempt`` 1) is committed and revealed again. Settlement is the chain's, at
the end of the block that closes the reveal window: this worker never proposes anything.

The salt is secret and needs no storage: ``sha256("fedcoin/posap/salt/v1" ‖ sig)`` where ``sig``
is the key's Ed25519 signature (deterministic) over ``sv_task_id ‖ attempt`` with a tag that no
message of the protocol is signed with, so nobody without the key can derive it, and a node
that restarts between its commit and its reveal derives the same salt.

Bounds: one pending submission per (SV task, attempt, phase), forgotten once the SV task is no
longer open; the table cache keeps the ``capacity`` most recent tables. The loop runs under
``supervised``: no error ends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedcoin.application.mempool import Mempool
from fedcoin.application.supervise import supervised
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.posap import game_key
from fedcoin.consensus.table import share_commitment, table_root
from fedcoin.consensus.valuation import (
    ZERO_MIX,
    TableOracle,
    commit_open,
    reveal_open,
    schedule_of,
)
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import State, SvTask, TaskState
from fedcoin.data.tx import ContentRef, ShareCommit, ShareReveal, Transaction, TxBody, make_tx
from fedcoin.errors import ContentMissing, FedCoinError, InsufficientBalance

log = logging.getLogger("fedcoin.miner")
TICK_SECONDS = 0.2
TABLES_KEPT = 16

SALT_SIGN_TAG = b"fedcoin/posap/salt-seed/v1"
"""Signing tag of a salt's seed: never used for anything that is published."""
SALT_TAG = b"fedcoin/posap/salt/v1"
"""Domain tag of the salt derived from that signature."""

COMMIT, REVEAL = "commit", "reveal"


class Fetcher(Protocol):
    """Makes content local (the node's ``ContentResolver``)."""

    async def ensure(self, refs: Iterable[ContentRef]) -> None: ...


def sv_refs(sv: SvTask, task: TaskState) -> list[ContentRef]:
    """Everything valuing an SV task reads."""
    return [task.spec.model, task.spec.validation, sv.prev_global, *(u.weights for u in sv.updates)]


def share_salt(key: PrivateKey, sv_task_id: bytes, attempt: int) -> bytes:
    """The secret 32-byte salt of ``key``'s commitment for one attempt of an SV task."""
    seed = key.sign(SALT_SIGN_TAG, sv_task_id + bytes([attempt]))
    return hashlib.sha256(SALT_TAG + seed).digest()


def table_key(sv: SvTask, task: TaskState) -> bytes:
    """What a table depends on: the game (``posap.game_key``: the round, the bundle and the
    validation set) and the schedule (the mix and the PoSap parameters). Commits and reveals,
    which change the SV task's encoding, do not enter it."""
    spec = task.spec
    return hashlib.sha256(game_key(sv, spec) + sv.mix + spec.posap.encode()).digest()


class TableCache:
    """Computed tables by ``table_key``, bounded; a table asked for while it is being computed
    is awaited, not computed again. A node has its own; the nodes of a one-process simulation
    share one (honest validators compute the same table, so N would compute it N times)."""

    def __init__(self, capacity: int = TABLES_KEPT) -> None:
        self.capacity = capacity
        self._tables: OrderedDict[bytes, asyncio.Future[tuple[int, ...]]] = OrderedDict()
        self.computed = 0
        """How many tables were computed (not taken from the cache)."""

    async def get(
        self, key: bytes, compute: Callable[[], Awaitable[Sequence[int]]]
    ) -> tuple[int, ...]:
        """The table under ``key``, computing it with ``compute`` unless it is cached or being
        computed; a failure is not cached (the next ask computes again)."""
        while (found := self._tables.get(key)) is not None:
            self._tables.move_to_end(key)
            try:
                return await asyncio.shield(found)
            except _Interrupted:
                continue  # whoever computed it stopped (its node shut down): compute it here
        future: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._tables[key] = future
        while len(self._tables) > self.capacity:
            self._tables.popitem(last=False)
        try:
            table = tuple(await compute())
        except BaseException as exc:
            if self._tables.get(key) is future:
                del self._tables[key]
            future.set_exception(exc if isinstance(exc, Exception) else _Interrupted())
            future.exception()  # retrieved: no warning when nobody was waiting
            raise
        self.computed += 1
        future.set_result(table)
        return table


class _Interrupted(Exception):
    """The computation a waiter relied on was cancelled."""


@dataclass
class Miner:
    """The valuation worker of one node (see the module docstring)."""

    key: PrivateKey
    chain: Chain
    verifier: TableOracle
    """Exact ``U`` of the round's coalitions (the node's ``PosapVerifier``)."""
    resolver: Fetcher
    mempool: Mempool
    submit: Callable[[Transaction], Awaitable[None]]
    """Admit to the node's mempool and gossip (``FullNode.submit_tx``)."""
    wake: asyncio.Event
    tables: TableCache = field(default_factory=TableCache)
    halted: Callable[[], bool] = lambda: False
    """True once the node's consensus stopped (the simulation's crash hook): a crashed
    validator values nothing either."""
    pending: dict[tuple[bytes, int, str], bytes] = field(default_factory=dict)
    """(SV task, attempt, phase) → id of the transaction submitted for it."""
    unvaluable: set[bytes] = field(default_factory=set)
    """SV tasks whose content cannot form a game: not retried every tick."""
    missing: set[bytes] = field(default_factory=set)
    """SV tasks whose content was not found yet (warned about once)."""
    validator: bool | None = None
    """Whether the key was in the validator set at the last step (None before the first)."""

    async def run(self) -> None:
        await supervised("valuation step", self.step, self.wake, TICK_SECONDS, log)

    @property
    def key_text(self) -> str:
        return self.key.public.hex()[:16]

    async def step(self) -> None:
        if self.halted():
            return
        head = self.chain.head
        state = self.chain.store.get_state(head.hash)  # that head's state, not a newer one
        self.note_membership(state)
        self.forget({sv.sv_task_id for sv in state.queue})
        for sv in state.queue:
            if sv.mix == ZERO_MIX or not any(pk == self.key.public for pk, _ in sv.committee):
                continue  # no schedule yet, or not this node's work
            phase = self.phase(sv, head.height + 1)
            if phase is None or self.is_pending(sv, phase):
                continue
            try:
                await self.act(sv, state.tasks[sv.task_id], phase)
            except ContentMissing as exc:
                # the content may still arrive: try again next step, say so once
                level = logging.DEBUG if sv.sv_task_id in self.missing else logging.WARNING
                log.log(level, "cannot value round %d yet: %s", sv.round, exc)
                self.missing.add(sv.sv_task_id)

    def note_membership(self, state: State) -> None:
        """Say once, each time it changes, whether this key is a validator (a committee member
        of the rounds opened from then on)."""
        member = state.is_validator(self.key.public)
        if member != self.validator:
            what = "is a validator: valuing rounds" if member else "is not a validator"
            log.info("key %s %s", self.key_text, what)
            self.validator = member

    def phase(self, sv: SvTask, height: int) -> str | None:
        """What this node still owes ``sv`` in a block at ``height``: a commit, a reveal, or
        nothing (done, or outside both windows)."""
        me = self.key.public
        if commit_open(sv, height) and sv.committed(me) is None:
            return COMMIT
        if reveal_open(sv, height) and sv.committed(me) is not None and sv.revealed(me) is None:
            return REVEAL
        return None

    def is_pending(self, sv: SvTask, phase: str) -> bool:
        """Is a transaction for this (SV task, attempt, phase) still in the mempool?"""
        tx_id = self.pending.get((sv.sv_task_id, sv.attempt, phase))
        return tx_id is not None and tx_id in self.mempool

    def forget(self, open_ids: set[bytes]) -> None:
        """Drop what is kept for SV tasks that are no longer open."""
        for entry in [k for k in self.pending if k[0] not in open_ids]:
            del self.pending[entry]
        self.unvaluable &= open_ids
        self.missing &= open_ids

    async def table_of(self, sv: SvTask, task: TaskState) -> tuple[int, ...] | None:
        """The SV task's table (computed once, off the event loop); None if it cannot be."""
        if sv.sv_task_id in self.unvaluable:
            return None
        await self.resolver.ensure(sv_refs(sv, task))

        async def compute() -> Sequence[int]:
            def evaluate() -> list[int]:
                return self.verifier.utilities(sv, task, schedule_of(sv, task.spec))

            log.info("computing the table of round %d of task %s", sv.round, sv.task_id.hex()[:12])
            return await asyncio.to_thread(evaluate)

        try:
            return await self.tables.get(table_key(sv, task), compute)
        except FedCoinError as exc:
            # Content that cannot be valued will not improve by retrying every tick: the
            # committee's other members value the round, or it is retried and voided.
            self.unvaluable.add(sv.sv_task_id)
            log.warning("cannot value round %d: %s", sv.round, exc)
            return None

    async def act(self, sv: SvTask, task: TaskState, phase: str) -> None:
        """Submit this node's commit or reveal for ``sv``."""
        table = await self.table_of(sv, task)
        if table is None:
            return
        salt = share_salt(self.key, sv.sv_task_id, sv.attempt)
        root = table_root(sv.sv_task_id, table)
        body: TxBody
        if phase == COMMIT:
            body = ShareCommit(
                sv.sv_task_id, share_commitment(sv.sv_task_id, self.key.public, root, salt)
            )
        else:
            # The table travels once: a reveal of a root already recorded names only the root
            body = ShareReveal(sv.sv_task_id, salt, root, () if sv.table(root) else table)
        tx = self.transaction(body, self.chain.genesis.params.min_fee)
        try:
            await self.submit(tx)
        except InsufficientBalance:
            # a validator holding only its bond values rounds for free (commits and reveals
            # may carry zero fee); with coins it pays min_fee, like any transaction
            tx = self.transaction(body, 0)
            await self.submit(tx)
        self.pending[(sv.sv_task_id, sv.attempt, phase)] = tx.id
        log.info(
            "%s for round %d of task %s (attempt %d, root %s)",
            phase, sv.round, sv.task_id.hex()[:12], sv.attempt, root.hex()[:12],
        )  # fmt: skip

    def transaction(self, body: TxBody, fee: int) -> Transaction:
        """``body`` signed with the node's key at its next nonce (pending ones counted)."""
        state: State = self.chain.head_state()
        nonce = self.mempool.next_nonce(self.key.address, state)
        return make_tx(self.key, self.chain.genesis.chain_id, nonce, body, fee=fee)
