"""Chain sync: what the network needs of the chain, and how to answer and make requests.

On a ``Hello`` or ``Block`` that shows a heavier chain or an unknown parent, a node sends
``GetBlocks(locator)``; the peer answers with its canonical blocks after the first locator hash
it knows (their common ancestor), in bounded batches. Each fetched block goes through the same
block handler as a gossiped one, so it is validated the same way; importing a heavier branch
reorganises. A full batch means there may be more, so the node asks again from its new head.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from fedcoin.data.block import Block
from fedcoin.errors import Ignore, NeedsSync, Reject
from fedcoin.network.gossip import Handlers, SeenCache
from fedcoin.network.messages import (
    MAX_BLOCK_BYTES,
    MAX_LOCATOR,
    BlockMessage,
    Blocks,
    GetBlocks,
    encode_message,
    message_id,
)
from fedcoin.network.peers import PENALTY_FLOOD, Peer, PeerLimits

SYNC_BATCH = 64
#: Longest a GetBlocks waits for its peer's cost budget before it counts as abuse (seconds).
MAX_WAIT = 2.0


class ChainView(Protocol):
    """The chain as the network sees it (the application adapts its ``Chain`` to this)."""

    def status(self) -> tuple[bytes, int, int]:
        """(head hash, head height, head cumulative weight)."""

    def locator(self) -> list[bytes]:
        """Hashes back from the head to genesis, dense near the head."""

    def blocks_after(self, locator: Sequence[bytes], limit: int) -> list[Block]:
        """Canonical blocks after the first locator hash on our canonical chain."""


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
        handlers: Handlers,
        seen: SeenCache,
        relay: Callable[[bytes, Peer | None], None],
        penalise: Callable[[Peer, int, str], None],
        notify: Callable[[], None],
    ) -> None:
        self.chain = chain
        self.limits = limits
        self.handlers = handlers
        self.seen = seen
        self.relay = relay
        self.penalise = penalise
        self.notify = notify

    def maybe_sync(self, peer: Peer, force: bool = False) -> None:
        """Ask ``peer`` for blocks when it is heavier (or a block of it had no parent here)."""
        if peer.syncing or peer.hello is None:
            return
        _, _, weight = self.chain.status()
        if force or peer.hello.weight > weight:
            peer.syncing = True
            peer.enqueue(GetBlocks(tuple(self.chain.locator()[:MAX_LOCATOR]), SYNC_BATCH))

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
        limit = max(1, min(message.limit, SYNC_BATCH))
        budget = min(self.limits.max_answer_bytes, MAX_BLOCK_BYTES)  # the answer fits a frame
        blocks: list[Block] = []
        size = 0
        for block in self.chain.blocks_after(message.locator, limit):
            block_bytes = len(block.encode())
            if blocks and size + block_bytes > budget:
                break
            blocks.append(block)
            size += block_bytes
        peer.sync_bucket.charge(size)
        frame = encode_message(Blocks(tuple(blocks)))
        if peer.enqueue(frame):
            peer.answering = frame

    async def on_blocks(self, peer: Peer, message: Blocks) -> None:
        peer.syncing = False
        handler = self.handlers.get(BlockMessage)
        if handler is None or not message.blocks:
            return
        head_before = self.chain.status()[0]
        for block in message.blocks:
            try:
                await handler(BlockMessage(block), peer)
            except NeedsSync:
                raise Reject("sync batch does not connect to our chain") from None
            except Ignore:
                continue
            peer.last_useful = peer.sync_bucket.clock()
            self.seen.add(message_id(encode_message(BlockMessage(block))))
        self.notify()
        head, _, weight = self.chain.status()
        if len(message.blocks) >= SYNC_BATCH or (
            # an answer cut short by the answerer's byte bound: there is more to fetch
            head != head_before and peer.hello is not None and weight < peer.hello.weight
        ):
            self.maybe_sync(peer, force=True)
        elif head != head_before:
            # Announce the new tip to everyone else; a peer that lacks its ancestors syncs.
            tip = message.blocks[-1]
            if self.chain.status()[0] == tip.hash:
                self.relay(encode_message(BlockMessage(tip)), peer)
