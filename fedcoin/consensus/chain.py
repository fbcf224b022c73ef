"""A node's view of the chain: validate, store and choose among blocks.

``Chain.import_block`` is the one path every block takes, whether it was gossiped, fetched by
sync or made locally: known → skip; unknown parent → the caller must sync; else validate on the
parent's post-state, store it with its receipt, and move the head when fork choice prefers it.
Reorganising is moving the head: the store has the state after every block, so the state after
a reorg is the new head's own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fedcoin.consensus.forkchoice import heavier
from fedcoin.consensus.rules import Applied, WorkVerifier, apply_block
from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import State
from fedcoin.data.store import ChainStore
from fedcoin.errors import UnknownParent
from fedcoin.incentive.payouts import RoundPayout


class Imported(enum.Enum):
    KNOWN = "known"
    """Already stored; nothing changed."""
    SIDE = "side"
    """Valid and stored, but the head did not move."""
    HEAD = "head"
    """Valid, stored, and now the head (extending it or reorganising to it)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    outcome: Imported
    """What happened."""
    reorg_depth: int = 0
    """Blocks of the old canonical chain that left it (0 when the head was extended)."""
    left: tuple[Block, ...] = ()
    """Those blocks, tip first: their transactions go back to the mempool, not into the void."""


class Chain:
    """Blocks, states and the head, over a ``ChainStore``."""

    def __init__(self, store: ChainStore, genesis: Genesis, verifier: WorkVerifier) -> None:
        self.store = store
        self.genesis = genesis
        self.verifier = verifier
        if store.genesis_hash != genesis.block().hash:
            raise ValueError("store and genesis belong to different networks")

    @property
    def head(self) -> BlockHeader:
        return self.store.head()

    def head_state(self) -> State:
        return self.store.head_state()

    def import_block(self, block: Block, *, now_ms: int | None = None) -> ImportResult:
        """Validate and store ``block``; raise the ``RuleViolation`` it breaks."""
        if self.store.has_block(block.hash):
            return ImportResult(Imported.KNOWN)
        parent = self.store.get_header(block.parent)
        # The parent must be known (the caller fetches it and retries)
        if parent is None:
            raise UnknownParent(parent=block.parent)
        applied = apply_block(
            self.store.get_state(parent.hash),
            block,
            parent,
            self.genesis,
            self.verifier,
            now_ms=now_ms,
        )
        return self.store_applied(block, applied)

    def store_applied(self, block: Block, applied: Applied) -> ImportResult:
        """Store a block already validated (for example one this node just built)."""
        receipt = applied.payout.encode() if applied.payout is not None else b""
        self.store.put_block(block, applied.state, receipt=receipt)
        head = self.store.head()
        if not heavier(block.header, head):
            return ImportResult(Imported.SIDE)
        depth = 0 if block.parent == head.hash else self._depth_leaving(head, block)
        left = self._canonical_blocks_down_from(head, depth)
        self.store.set_head(block.hash)
        return ImportResult(Imported.HEAD, depth, left)

    def _canonical_blocks_down_from(self, tip: BlockHeader, count: int) -> tuple[Block, ...]:
        """``count`` blocks of the canonical chain ending at ``tip``, tip first."""
        found: list[Block] = []
        cursor: BlockHeader | None = tip
        while cursor is not None and len(found) < count:
            block = self.store.get_block(cursor.hash)
            if block is None:
                break
            found.append(block)
            cursor = self.store.get_header(cursor.parent)
        return tuple(found)

    def _depth_leaving(self, old_head: BlockHeader, new_tip: Block) -> int:
        """How many canonical blocks a switch to ``new_tip`` removes from the canonical chain."""
        cursor: BlockHeader | None = new_tip.header
        while cursor is not None and self.store.canonical_hash(cursor.height) != cursor.hash:
            cursor = self.store.get_header(cursor.parent)
        ancestor_height = cursor.height if cursor is not None else 0
        return old_head.height - ancestor_height

    def payout_of(self, block_hash: bytes) -> RoundPayout | None:
        receipt = self.store.get_receipt(block_hash)
        return RoundPayout.decode(receipt) if receipt else None
