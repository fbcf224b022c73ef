"""The mempool: transactions waiting for a block. Bounded, ordered by sender nonce, fee first.

A transaction is admitted when it applies on the head state after the sender's earlier pending
transactions (so nonces are contiguous). Each sender's projection (its account and the tasks
its pending transactions touch, after all of them) is kept, so admitting one more costs one
application, not a replay of the sender's run: admission is linear in the pool, not quadratic.

Bounds: ``capacity`` transactions in all and ``per_sender`` per sender. When the pool is full,
a transaction paying a higher fee rate (fee per encoded byte) than the cheapest last-in-run
transaction of another sender evicts that one; otherwise it is refused with ``MempoolFull``.

``select`` takes senders' runs in nonce order, higher fee first across senders; ``refresh``
drops what a new head (or a reorg) made invalid. ``check_signatures`` is the CPU-bound part of
admission that needs no state, for callers to run off the event loop before anything else.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fedcoin.consensus.transactions import TxContext, apply_transaction
from fedcoin.consensus.valuation import WorkVerifier
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import TAG_TX, verify
from fedcoin.data.state import Account, Draft, State, SvTask, TaskState
from fedcoin.data.tx import CloseTask, FraudProof, PublishTask, SubmitRound, Transaction
from fedcoin.errors import (
    BadSignature,
    BadUpdateSignature,
    FedCoinError,
    MempoolFull,
    SenderQueueFull,
)

__all__ = ["Mempool", "MempoolFull", "SenderQueueFull", "check_signatures"]

DEFAULT_CAPACITY = 50_000
DEFAULT_PER_SENDER = 10_000


def check_signatures(tx: Transaction) -> None:
    """Raise ``BadSignature``/``BadUpdateSignature`` unless the transaction and, for a round,
    every client update are signed. Pure CPU: no state, no content, no I/O."""
    if not verify(tx.sender_pubkey, TAG_TX, tx.id, tx.signature):
        raise BadSignature(tx=tx.id)
    body = tx.body
    if isinstance(body, SubmitRound):
        for update in body.updates:
            if not update.signature_ok(body.task_id, body.round):
                raise BadUpdateSignature(client=update.client_pubkey, round=body.round)


def touched_task(tx: Transaction) -> bytes | None:
    """The task a transaction changes, if any."""
    body = tx.body
    if isinstance(body, PublishTask):
        return tx.id
    if isinstance(body, SubmitRound | CloseTask):
        return body.task_id
    return None


@dataclass(frozen=True, slots=True)
class Projection:
    """A sender's account, touched tasks and the SV queue after some of its transactions."""

    account: Account
    tasks: tuple[tuple[bytes, TaskState], ...] = ()
    queue: tuple[SvTask, ...] | None = None
    """None: the head's queue, unchanged by the sender."""


@dataclass(slots=True)
class Run:
    """One sender's pending transactions in nonce order, each with the projection after it."""

    txs: list[Transaction] = field(default_factory=list)
    after: list[Projection] = field(default_factory=list)


class Mempool:
    def __init__(
        self,
        genesis: Genesis,
        checker: WorkVerifier,
        capacity: int = DEFAULT_CAPACITY,
        per_sender: int = DEFAULT_PER_SENDER,
        on_change: Callable[[], None] = lambda: None,
        follows: bytes | None = None,
    ) -> None:
        self.genesis = genesis
        self.follows = follows
        """The head the pending transactions were last checked against (None: not tracked).
        A proposer builds only on that head: on another, the pool's nonces are not its own."""
        self.checker = checker
        self.capacity = capacity
        self.per_sender = per_sender
        self.on_change = on_change
        self.runs: dict[bytes, Run] = {}
        self.sender_of: dict[bytes, bytes] = {}
        self.sizes: dict[bytes, int] = {}
        params = genesis.params
        self.max_fraud_proofs = params.max_fraud_proofs * params.fraud_blocks
        """Most pending FraudProofs: what blocks can include within one fraud window."""

    def __len__(self) -> int:
        return len(self.sender_of)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self.sender_of

    def next_nonce(self, sender: bytes, state: State) -> int:
        """The nonce ``sender``'s next transaction needs: after its pending ones, if any."""
        run = self.runs.get(sender)
        if run is not None and run.after:
            return run.after[-1].account.nonce
        return state.account(sender).nonce

    def _context(self, height: int, timestamp_ms: int) -> TxContext:
        return TxContext(
            self.genesis.chain_id, self.genesis.params, height, timestamp_ms, bytes(20)
        )

    @staticmethod
    def _try(
        state: State, before: Projection | None, tx: Transaction, ctx: TxContext,
        checker: WorkVerifier, *, signature_checked: bool,
    ) -> Projection:  # fmt: skip
        """Apply ``tx`` on ``state`` as the sender's projection ``before`` left it; return the
        projection after it or raise what it breaks (nothing is changed either way)."""
        draft = Draft(state)
        sender = tx.sender
        tasks = dict(before.tasks) if before is not None else {}
        if before is not None:
            draft.set_account(sender, before.account)
            for known_id, known in tasks.items():
                draft.set_task(known_id, known)
            if before.queue is not None:
                draft.queue = list(before.queue)
        apply_transaction(draft, tx, ctx, checker, signature_checked=signature_checked)
        queue = before.queue if before is not None else None
        task_id = touched_task(tx)
        if task_id is not None:
            task = draft.task(task_id)
            if task is not None:
                tasks[task_id] = task
            if isinstance(tx.body, SubmitRound):
                queue = tuple(draft.queue)
        return Projection(draft.account(sender), tuple(tasks.items()), queue)

    def add(
        self, tx: Transaction, state: State, height: int, now_ms: int,
        *, signature_checked: bool = False,
    ) -> None:  # fmt: skip
        """Admit ``tx`` or raise the rule (``RuleViolation``) or ``MempoolFull`` it breaks
        (the pool unchanged)."""
        tx_id = tx.id
        if tx_id in self.sender_of:
            return
        run = self.runs.get(tx.sender)
        if run is not None and len(run.txs) >= self.per_sender:
            raise SenderQueueFull(sender=tx.sender, max=self.per_sender)
        # Admitting a fraud proof costs an exact evaluation: hold no more than blocks can take
        # within a fraud window, so a flood that would expire unincluded (its deposits never
        # burned) is refused before it is evaluated
        if isinstance(tx.body, FraudProof) and self.fraud_proofs() >= self.max_fraud_proofs:
            raise MempoolFull(capacity=self.max_fraud_proofs, kind="FraudProof")
        before = run.after[-1] if run is not None and run.after else None
        after = self._try(
            state, before, tx, self._context(height + 1, now_ms), self.checker,
            signature_checked=signature_checked,
        )  # fmt: skip
        size = len(tx.encode())
        if len(self.sender_of) >= self.capacity:
            self._evict_for(tx, size)
        run = self.runs.setdefault(tx.sender, Run())
        run.txs.append(tx)
        run.after.append(after)
        self.sender_of[tx_id] = tx.sender
        self.sizes[tx_id] = size
        self.on_change()

    def fraud_proofs(self) -> int:
        """Pending FraudProof transactions."""
        return sum(isinstance(t.body, FraudProof) for run in self.runs.values() for t in run.txs)

    def _evict_for(self, tx: Transaction, size: int) -> None:
        """Make room for ``tx`` by dropping the cheapest (fee per byte) last transaction of
        another sender, if ``tx`` pays more per byte; else raise ``MempoolFull``."""
        cheapest: Transaction | None = None
        for sender, run in self.runs.items():
            if sender == tx.sender:
                continue
            tail = run.txs[-1]
            if (
                cheapest is None
                or tail.fee * self.sizes[cheapest.id] < cheapest.fee * self.sizes[tail.id]
            ):
                cheapest = tail
        if cheapest is None or tx.fee * self.sizes[cheapest.id] <= cheapest.fee * size:
            raise MempoolFull(capacity=self.capacity, fee=tx.fee)
        self.drop(cheapest.id)

    def select(self, limit: int) -> list[Transaction]:
        """Up to ``limit`` transactions: each sender's run in nonce order, richer fees first."""
        heap = [(-run.txs[0].fee, sender, 0) for sender, run in self.runs.items() if run.txs]
        heapq.heapify(heap)
        out: list[Transaction] = []
        while heap and len(out) < limit:
            _, sender, index = heapq.heappop(heap)
            txs = self.runs[sender].txs
            out.append(txs[index])
            if index + 1 < len(txs):
                heapq.heappush(heap, (-txs[index + 1].fee, sender, index + 1))
        return out

    def drop(self, tx_id: bytes) -> None:
        """Remove a transaction and the same sender's later ones (they cannot apply now)."""
        sender = self.sender_of.get(tx_id)
        if sender is None:
            return
        run = self.runs[sender]
        cut = next(i for i, t in enumerate(run.txs) if t.id == tx_id)
        for t in run.txs[cut:]:
            del self.sender_of[t.id]
            del self.sizes[t.id]
        del run.txs[cut:], run.after[cut:]
        if not run.txs:
            del self.runs[sender]

    def refresh(
        self,
        state: State,
        height: int,
        now_ms: int,
        returned: Sequence[Transaction] = (),
        head: bytes | None = None,
    ) -> None:
        """Keep only what still applies on the new head, in order.

        ``returned`` are the transactions of the blocks a reorg took off the canonical chain:
        they are candidates again beside the pending ones, so a reorg loses none of them (nor
        any later transaction of their senders, whose nonces would no longer be contiguous)."""
        self.follows = head
        candidates: dict[bytes, dict[bytes, Transaction]] = {}
        for txs in [returned, *(run.txs for run in self.runs.values())]:
            for tx in txs:
                candidates.setdefault(tx.sender, {})[tx.id] = tx
        sizes = self.sizes
        self.runs, self.sender_of, self.sizes = {}, {}, {}
        ctx = self._context(height + 1, now_ms)
        for sender, by_id in candidates.items():
            kept = Run()
            nonce = state.account(sender).nonce
            for tx in sorted(by_id.values(), key=lambda t: (t.nonce, -t.fee, t.id)):
                if tx.nonce < nonce + len(kept.txs):
                    continue  # in a block already, or another tx took this nonce
                before = kept.after[-1] if kept.after else None
                try:
                    after = self._try(state, before, tx, ctx, self.checker, signature_checked=True)
                except FedCoinError:  # any rule it breaks now (a PoSap window closed, …)
                    break
                kept.txs.append(tx)
                kept.after.append(after)
                self.sender_of[tx.id] = sender
                self.sizes[tx.id] = sizes.get(tx.id) or len(tx.encode())
                if len(kept.txs) >= self.per_sender:
                    break
            if kept.txs:
                self.runs[sender] = kept
