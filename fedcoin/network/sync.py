"""Chain sync: fetch committed blocks, each with the certificate that committed it.

Committed blocks are final, so sync has no fork choice and compares no weights: a node behind
a peer (the peer's ``Hello`` shows a higher committed height, or the peer sends consensus
messages of a height ahead of ours) asks ``GetBlocks(from_height)`` — our committed height + 1 —
and the peer answers with its committed blocks from there, in bounded batches, each with its
certificate (the tip's too, so a node can catch up to the very last block). Each block is
committed through ``ChainView.import_committed``, which checks its certificate against the
validator set of its height. A full batch, or a peer still ahead, means more: ask again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from fedcoin.errors import Ignore, NeedsSync, Reject
from fedcoin.network.messages import (
    MAX_BLOCK_BYTES,
    Blocks,
    CommittedBlock,
    GetBlocks,
    encode_message,
)
from fedcoin.network.peers import PENALTY_FLOOD, Peer, PeerLimits

SYNC_BATCH = 64
#: Longest a GetBlocks waits for its peer's cost budget before it counts as abuse (seconds).
MAX_WAIT = 2.0


class ChainView(Protocol):
    """The committed chain as the network sees it (the application adapts its ``Chain``)."""

    def status(self) -> tuple[bytes, int]:
        """(hash, height) of the last committed block."""

    def committed_from(self, height: int, limit: int) -> list[CommittedBlock]:
        """Up to ``limit`` committed blocks from ``height`` on, with their certificates."""

    async def import_committed(self, item: CommittedBlock) -> bool:
        """Commit a fetched block if its certificate holds; True if it was new. Raises
        ``Reject`` (invalid), ``NeedsSync`` (does not extend our chain) or ``Ignore``."""


class Syncer:
    """Asks peers for blocks, imports their answers, and answers their requests within a budget.

    Answering ``GetBlocks`` costs CPU and bytes we choose to spend on the asker, so each peer
    has a cost bucket (``PeerLimits.sync_bytes_per_second``): a request is served only if the
    bucket holds its base cost, then charged the answer's bytes. A peer that asks faster than
    that is penalised. One answer carries at most ``max_answer_bytes`` of blocks (and at least
    one block, so sync always progresses).

    An honest node asks again only once it has our answer; asking while our previous answer
    still waits to be sent is pipelining and is penalised. A request the budget cannot cover
    yet waits (back-pressure on that peer alone) up to ``MAX_WAIT`` seconds; one that would
    have to wait longer is penalised and dropped.
    """

    def __init__(
        self,
        chain: ChainView,
        limits: PeerLimits,
        penalise: Callable[[Peer, int, str], None],
        notify: Callable[[], None],
    ) -> None:
        self.chain = chain
        self.limits = limits
        self.penalise = penalise
        self.notify = notify

    def maybe_sync(self, peer: Peer, force: bool = False) -> None:
        """Ask ``peer`` for committed blocks when it is ahead of us (or we learnt we are behind)."""
        if peer.syncing or peer.hello is None:
            return
        _, height = self.chain.status()
        if force or peer.height > height:
            peer.syncing = True
            peer.enqueue(GetBlocks(height + 1, SYNC_BATCH))

    async def answer(self, peer: Peer, message: GetBlocks) -> None:
        if peer.answering is not None:
            self.penalise(peer, PENALTY_FLOOD, "GetBlocks before our last answer was sent")
            return
        base = self.limits.getblocks_base_cost
        if not peer.sync_bucket.take(base):
            bucket = peer.sync_bucket
            wait = (base - bucket.tokens) / bucket.rate
            if wait > MAX_WAIT:
                self.penalise(peer, PENALTY_FLOOD, "GetBlocks over its cost budget")
                return
            await asyncio.sleep(wait)
            bucket.charge(base)
        self._send_blocks(peer, message.from_height, message.limit)

    def offer(self, peer: Peer, height: int) -> None:
        """Send ``peer`` our committed blocks from ``height`` unasked: it is still deciding a
        height we committed (its own vote of that height reached us), so it missed what
        decided it, and nobody relays those votes any more. At most one offer per height per
        peer, within the same cost budget as answers."""
        if height <= peer.offered:
            return
        if height > self.chain.status()[1]:
            return
        if not peer.sync_bucket.take(self.limits.getblocks_base_cost):
            return
        peer.offered = height
        self._send_blocks(peer, height, SYNC_BATCH, answer=False)

    def _send_blocks(self, peer: Peer, from_height: int, limit: int, answer: bool = True) -> None:
        """Queue a ``Blocks`` of our committed blocks from ``from_height``; an answer (not an
        offer) is remembered until sent, and a ``GetBlocks`` before that is pipelining."""
        limit = max(1, min(limit, SYNC_BATCH))
        budget = min(self.limits.max_answer_bytes, MAX_BLOCK_BYTES)  # the answer fits a frame
        items: list[CommittedBlock] = []
        size = 0
        for item in self.chain.committed_from(max(from_height, 1), limit):
            item_bytes = len(item.encode())
            if items and size + item_bytes > budget:
                break
            items.append(item)
            size += item_bytes
        peer.sync_bucket.charge(size)
        frame = encode_message(Blocks(tuple(items), self.chain.status()[1]))
        if peer.enqueue(frame) and answer:
            peer.answering = frame

    async def on_blocks(self, peer: Peer, message: Blocks) -> None:
        peer.syncing = False
        peer.height = max(peer.height, message.height)
        _, before = self.chain.status()
        for item in message.blocks:
            if item.block.height <= self.chain.status()[1]:
                continue  # committed meanwhile (by our own consensus, or another answer)
            try:
                new = await self.chain.import_committed(item)
            except NeedsSync:
                raise Reject("sync batch does not connect to our chain") from None
            except Ignore:
                break  # cannot check it now (content): ask again later
            if new:
                peer.last_useful = peer.sync_bucket.clock()
        self.notify()
        _, height = self.chain.status()
        if height > before and peer.height > height:
            self.maybe_sync(peer, force=True)
