"""The driver's head cache: one store read per head, the old head's answers while a commit runs,
and fresh answers once a commit (own or synced) moved the head."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fedcoin.application.head_cache import HeadCache
from fedcoin.consensus.validators import ValidatorSet
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence
from tests.consensus.bft_helpers import CHAIN, make_set


class CountingLedger:
    """A ledger whose head reads are counted; ``commit`` stores the block at once, then waits
    for ``release`` before it returns (as the node's commit callbacks run before it returns)."""

    chain_id = CHAIN

    def __init__(self) -> None:
        self.height = 0
        self.reads = 0
        self.sets = [make_set(4)]
        self.release = asyncio.Event()

    def committed_height(self) -> int:
        self.reads += 1
        return self.height

    def parent_timestamp_ms(self) -> int:
        self.reads += 1
        return 1000 * self.height

    def validator_set(self) -> ValidatorSet:
        self.reads += 1
        return self.sets[-1]

    def busy(self) -> bool:
        return False

    def value_id(self, value: bytes) -> bytes:
        return value

    def build(
        self, height: int, *, now_ms: int, evidence: Sequence[DuplicateVoteEvidence], variant: int
    ) -> bytes:
        return b"block"

    async def check(self, value: bytes, *, now_ms: int) -> None:
        return None

    async def commit(self, value: bytes, certificate: CommitCertificate) -> None:
        self.height += 1
        self.sets.append(make_set(5))
        await self.release.wait()

    def evidence_in(self, value: bytes) -> Sequence[DuplicateVoteEvidence]:
        return ()


def test_the_head_is_read_once_until_it_moves() -> None:
    inner = CountingLedger()
    view = HeadCache(inner)
    for _ in range(100):
        assert view.committed_height() == 0
        assert view.parent_timestamp_ms() == 0
        assert len(view.validator_set()) == 4
    assert inner.reads == 3
    # A synced commit moved the head behind the view's back; ``refresh`` (chain_moved) tells it
    inner.height = 7
    assert view.committed_height() == 0
    view.refresh()
    assert view.committed_height() == 7
    assert view.parent_timestamp_ms() == 7000


async def test_a_commit_keeps_the_old_head_until_it_returns() -> None:
    inner = CountingLedger()
    view = HeadCache(inner)
    certificate = CommitCertificate(1, 0, b"b" * 32, ())
    commit = asyncio.create_task(view.commit(b"b" * 32, certificate))
    await asyncio.sleep(0)
    # The store moved; the commit has not returned yet: the old head's answers, no store read
    assert inner.height == 1
    reads = inner.reads
    assert view.committed_height() == 0
    assert len(view.validator_set()) == 4
    assert inner.reads == reads
    inner.release.set()
    await commit
    assert view.committed_height() == 1
    assert len(view.validator_set()) == 5
