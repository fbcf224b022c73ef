"""The link between a node's committed chain and its P2P service.

It shows the chain to the network (``ChainView``: the last committed block, committed blocks
with their certificates from a height on) and is the one path by which a block joins this
node's chain, whether the node's own consensus decided it or sync fetched it: fetch what the
block references, then ``Chain.commit`` (which checks the certificate against the validator
set of the block's height) off the event loop, one block at a time, then tell every listener.
There is no fork choice and no weight anywhere: a certificate is the only way in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from fedcoin.consensus.chain import Chain, Imported, ImportResult
from fedcoin.data.block import Block
from fedcoin.data.vote import CommitCertificate
from fedcoin.errors import ContentMissing, FedCoinError, Ignore, NeedsSync, Reject, UnknownParent
from fedcoin.network.messages import CommittedBlock

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
        on_committed: Sequence[Callable[[Block, bool], None]] = (),
    ) -> None:
        """``prepare`` fetches what a block's execution will read (weights, datasets) before
        it is checked; ``on_committed(block, synced)`` callbacks hear of every block committed
        (``synced``: it came from sync, not from this node's consensus)."""
        self.chain = chain
        self.clock_ms = clock_ms
        self.lock = asyncio.Lock()
        self.prepare = prepare
        self.on_committed = tuple(on_committed)

    # ChainView ----------------------------------------------------------------------------
    def status(self) -> tuple[bytes, int]:
        head = self.chain.head
        return head.hash, head.height

    def committed_from(self, height: int, limit: int) -> list[CommittedBlock]:
        """Up to ``limit`` committed blocks from ``height`` on, each with its certificate."""
        return [
            CommittedBlock(block, cert) for block, cert in self.chain.committed(height - 1, limit)
        ]

    async def import_committed(self, item: CommittedBlock) -> bool:
        """A synced block: commit it if its certificate holds; True if it is new here.

        ``Reject`` for a block or certificate that breaks a rule, ``NeedsSync`` when it does not
        extend our chain, ``Ignore`` when its content cannot be fetched now."""
        try:
            result = await self.commit(item.block, item.certificate, synced=True)
        except ContentMissing as exc:
            raise Ignore(f"cannot check synced block yet: {exc}") from None
        except UnknownParent:
            raise NeedsSync(f"block {item.block.height} does not extend our chain") from None
        except FedCoinError as exc:
            raise Reject(f"synced block {item.block.height}: {exc}") from None
        return result.outcome is Imported.HEAD

    # Committing ---------------------------------------------------------------------------
    async def commit(
        self, block: Block, certificate: CommitCertificate, *, synced: bool = False
    ) -> ImportResult:
        """Fetch what ``block`` references, then commit it; raise the rule it breaks."""
        if block.height <= self.chain.head.height:
            # Committed already (or a conflicting block, which commit refuses)
            return await asyncio.to_thread(self.chain.commit, block, certificate)
        if self.prepare is not None:
            await self.prepare(block)
        async with self.lock:
            try:
                result = await asyncio.to_thread(self.chain.commit, block, certificate)
            except FedCoinError:
                raise
            except Exception as exc:
                # Consensus code ran numpy and codecs on a peer's content and failed in a way
                # no rule names: the block is not one this node can commit.
                log.exception("block %s could not be checked", block.hash.hex()[:12])
                raise Reject(f"block could not be checked: {type(exc).__name__}") from None
        if result.outcome is Imported.HEAD:
            log.info(
                "committed %s at height %d%s", block.hash.hex()[:12], block.height,
                " (synced)" if synced else "",
            )  # fmt: skip
            for callback in self.on_committed:
                callback(block, synced)
        return result
