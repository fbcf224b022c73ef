"""The mempool: transactions waiting for a block. Bounded, ordered by sender nonce, fee first.

A transaction is admitted when it applies on the head state after the sender's earlier pending
transactions (so nonces are contiguous). ``select`` takes senders' runs in nonce order, higher
fee first across senders; ``refresh`` drops what a new head (or a reorg) made invalid.
"""

from __future__ import annotations

from collections.abc import Callable

from fedcoin.consensus.transactions import TxContext, apply_transaction
from fedcoin.contract.task import RoundChecker
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import Draft, State
from fedcoin.data.tx import Transaction
from fedcoin.errors import ContractError, FedCoinError, TxError


class MempoolFull(FedCoinError):
    """The mempool holds as many transactions as it may."""


class Mempool:
    def __init__(self, genesis: Genesis, checker: RoundChecker, capacity: int = 10_000) -> None:
        self.genesis = genesis
        self.checker = checker
        self.capacity = capacity
        self.by_sender: dict[bytes, list[Transaction]] = {}
        self.ids: set[bytes] = set()
        self.on_change: Callable[[], None] = lambda: None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self.ids

    def _context(self, height: int, timestamp_ms: int) -> TxContext:
        return TxContext(
            self.genesis.chain_id, self.genesis.params, height, timestamp_ms, bytes(20)
        )

    def add(self, tx: Transaction, state: State, height: int, now_ms: int) -> None:
        """Admit ``tx`` or raise the ``TxError``/``ContractError`` it breaks (state unchanged)."""
        if tx.id in self.ids:
            return
        if len(self.ids) >= self.capacity:
            raise MempoolFull(f"mempool holds {self.capacity} transactions")
        pending = self.by_sender.get(tx.sender, [])
        draft = Draft(state)
        ctx = self._context(height + 1, now_ms)
        for earlier in pending:
            apply_transaction(draft, earlier, ctx, self.checker, signature_checked=True)
        apply_transaction(draft, tx, ctx, self.checker)
        self.by_sender.setdefault(tx.sender, []).append(tx)
        self.ids.add(tx.id)
        self.on_change()

    def select(self, limit: int) -> list[Transaction]:
        """Up to ``limit`` transactions: each sender's run in nonce order, richer fees first."""
        queues = {s: list(txs) for s, txs in self.by_sender.items() if txs}
        out: list[Transaction] = []
        while queues and len(out) < limit:
            sender = max(queues, key=lambda s: (queues[s][0].fee, s))
            out.append(queues[sender].pop(0))
            if not queues[sender]:
                del queues[sender]
        return out

    def drop(self, tx_id: bytes) -> None:
        for sender, txs in list(self.by_sender.items()):
            kept = [t for t in txs if t.id != tx_id]
            if len(kept) != len(txs):
                # later nonces of the same sender cannot apply any more either
                cut = next(i for i, t in enumerate(txs) if t.id == tx_id)
                for t in txs[cut:]:
                    self.ids.discard(t.id)
                self.by_sender[sender] = txs[:cut]
                if not self.by_sender[sender]:
                    del self.by_sender[sender]

    def refresh(self, state: State, height: int, now_ms: int) -> None:
        """Keep only what still applies on the new head, in order."""
        old = self.by_sender
        self.by_sender, self.ids = {}, set()
        ctx = self._context(height + 1, now_ms)
        for sender, txs in old.items():
            draft = Draft(state)
            kept = []
            for tx in txs:
                if tx.nonce < draft.account(sender).nonce:
                    continue  # included in a block already
                try:
                    apply_transaction(draft, tx, ctx, self.checker, signature_checked=True)
                except (TxError, ContractError):
                    break
                kept.append(tx)
            if kept:
                self.by_sender[sender] = kept
                self.ids.update(t.id for t in kept)
