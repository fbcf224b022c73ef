"""The link between a node's chain and its P2P service.

It shows the chain to the network (``ChainView``: head, locator, blocks after a locator) and
is the handler for gossiped and synced blocks: every block, from gossip or from sync, is
imported through ``Chain.import_block``, one at a time, off the event loop. Rule violations
become ``Reject`` (the peer is penalised), as does any unexpected error checking the block
(logged with its traceback); an unknown parent becomes ``NeedsSync``, a known block ``Ignore``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from fedcoin.consensus.chain import Chain, Imported, ImportResult
from fedcoin.consensus.rules import Applied
from fedcoin.data.block import Block
from fedcoin.errors import (
    ContentMissing,
    FedCoinError,
    Ignore,
    NeedsSync,
    Reject,
    RuleViolation,
    UnknownParent,
)
from fedcoin.network.messages import BlockMessage, Message

log = logging.getLogger("fedcoin.chain")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class ChainLink:
    def __init__(
        self,
        chain: Chain,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        prepare: Callable[[Block], Awaitable[None]] | None = None,
        on_imported: Sequence[Callable[[Block, ImportResult], None]] = (),
    ) -> None:
        """``prepare`` fetches what a block's validation will read (weights, datasets) before
        importing it; ``on_imported`` callbacks hear of every block stored."""
        self.chain = chain
        self.clock_ms = clock_ms
        self.lock = asyncio.Lock()
        self.prepare = prepare
        self.on_imported = tuple(on_imported)

    # ChainView ----------------------------------------------------------------------------
    def status(self) -> tuple[bytes, int, int]:
        head = self.chain.head
        return head.hash, head.height, head.weight

    def locator(self) -> list[bytes]:
        return self.chain.store.locator()

    def blocks_after(self, locator: Sequence[bytes], limit: int) -> list[Block]:
        store = self.chain.store
        start = 1
        for block_hash in locator:
            header = store.get_header(block_hash)
            if header is not None and store.canonical_hash(header.height) == block_hash:
                start = header.height + 1
                break
        head = store.head().height
        out = []
        for height in range(start, min(start + limit, head + 1)):
            block = store.block_at(height)
            if block is None:
                break
            out.append(block)
        return out

    # Block handler ------------------------------------------------------------------------
    async def import_block(self, block: Block) -> ImportResult:
        """Validate and store a block; raise the rule it breaks."""
        if self.prepare is not None and not self.chain.store.has_block(block.hash):
            await self.prepare(block)
        async with self.lock:
            result = await asyncio.to_thread(self.chain.import_block, block, now_ms=self.clock_ms())
        self._announce(block, result)
        return result

    async def adopt(self, block: Block, applied: Applied) -> ImportResult:
        """Store a block this node built (already validated by building it)."""
        async with self.lock:
            result = self.chain.store_applied(block, applied)
        self._announce(block, result)
        return result

    def _announce(self, block: Block, result: ImportResult) -> None:
        if result.outcome is not Imported.KNOWN:
            if result.outcome is Imported.HEAD:
                log.info(
                    "head %s at height %d%s", block.hash.hex()[:12], block.height,
                    f" (reorg of {result.reorg_depth})" if result.reorg_depth else "",
                )  # fmt: skip
            for callback in self.on_imported:
                callback(block, result)

    async def on_block(self, message: Message, peer: object) -> None:
        if not isinstance(message, BlockMessage):
            raise Reject("not a block")
        try:
            result = await self.import_block(message.block)
        except ContentMissing as exc:
            raise Ignore(f"cannot check block yet: {exc}") from None
        except UnknownParent:
            raise NeedsSync(f"parent of {message.block.hash.hex()[:12]} unknown") from None
        except RuleViolation as exc:
            raise Reject(str(exc)) from None
        except FedCoinError:
            raise
        except Exception as exc:
            # Consensus code ran numpy and codecs on the peer's content and failed in a way no
            # rule names: the block is not one we can accept, and the peer sent it.
            log.exception("block %s could not be checked", message.block.hash.hex()[:12])
            raise Reject(f"block could not be checked: {type(exc).__name__}: {exc}") from None
        if result.outcome is Imported.KNOWN:
            raise Ignore("known block")
