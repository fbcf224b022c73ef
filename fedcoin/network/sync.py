"""Chain sync: what the network needs of the chain, and how to answer and make requests.

On a ``Hello`` or ``Block`` that shows a heavier chain or an unknown parent, a node sends
``GetBlocks(locator)``; the peer answers with its canonical blocks after the first locator hash
it knows (their common ancestor), in bounded batches. Each fetched block goes through the same
block handler as a gossiped one, so it is validated the same way; importing a heavier branch
reorganises. A full batch means there may be more, so the node asks again from its new head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fedcoin.data.block import Block

SYNC_BATCH = 64


class ChainView(Protocol):
    """The chain as the network sees it (the application adapts its ``Chain`` to this)."""

    def status(self) -> tuple[bytes, int, int]:
        """(head hash, head height, head cumulative weight)."""

    def locator(self) -> list[bytes]:
        """Hashes back from the head to genesis, dense near the head."""

    def blocks_after(self, locator: Sequence[bytes], limit: int) -> list[Block]:
        """Canonical blocks after the first locator hash on our canonical chain."""
