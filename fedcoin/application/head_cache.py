"""The consensus driver's view of the head, kept in memory between commits.

Every proposal and vote a node receives asks which height is next and which validator set
decides it (``consensus_gossip``), and the driver asks again on every event. Over the real
``ChainLedger`` each answer is a chain-store read — two SQLite statements and a header decode —
taken under the store's lock, which a worker thread holds for the whole of a commit (fsync
included): at 16 validators in one process that was ~20 000 reads per 10 heights, and the event
loop of every node stalled behind whichever node was committing.

The head only moves by a commit, and every commit reaches this view: the driver's own through
``commit`` here, a synced one through ``refresh`` (the driver's ``chain_moved``, which the node
calls synchronously right after the block is stored). In between, the answers cannot change, so
they are kept; anything else goes straight to the wrapped ledger. While this view's own commit
is under way the answers stay those of the old head, which is what the driver is still deciding
on until the commit returns; reading the store then would wait, with the whole event loop, for
the commit's fsync to release the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic

from fedcoin.application.consensus_ports import Ledger, V
from fedcoin.consensus.validators import ValidatorSet
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence


class HeadCache(Generic[V]):
    """A ``Ledger`` that remembers the head's height, timestamp and next validator set."""

    def __init__(self, inner: Ledger[V]) -> None:
        self.inner = inner
        self._height: int | None = None
        self._parent_ms: int | None = None
        self._validators: ValidatorSet | None = None

    def refresh(self) -> None:
        """The head moved (a commit): forget what was kept about it."""
        self._height = None
        self._parent_ms = None
        self._validators = None

    @property
    def chain_id(self) -> str:
        return self.inner.chain_id

    def committed_height(self) -> int:
        if self._height is None:
            self._height = self.inner.committed_height()
        return self._height

    def parent_timestamp_ms(self) -> int:
        if self._parent_ms is None:
            self._parent_ms = self.inner.parent_timestamp_ms()
        return self._parent_ms

    def validator_set(self) -> ValidatorSet:
        if self._validators is None:
            self._validators = self.inner.validator_set()
        return self._validators

    def busy(self) -> bool:
        return self.inner.busy()

    def value_id(self, value: V) -> bytes:
        return self.inner.value_id(value)

    def build(
        self, height: int, *, now_ms: int, evidence: Sequence[DuplicateVoteEvidence], variant: int
    ) -> V:
        return self.inner.build(height, now_ms=now_ms, evidence=evidence, variant=variant)

    async def check(self, value: V, *, now_ms: int) -> None:
        await self.inner.check(value, now_ms=now_ms)

    async def commit(self, value: V, certificate: CommitCertificate) -> None:
        # Keep the old head's answers for the time the commit takes
        self.committed_height(), self.parent_timestamp_ms(), self.validator_set()
        try:
            await self.inner.commit(value, certificate)
        finally:
            # Whatever happened, the next question reads the store again
            self.refresh()

    def evidence_in(self, value: V) -> Sequence[DuplicateVoteEvidence]:
        return self.inner.evidence_in(value)
