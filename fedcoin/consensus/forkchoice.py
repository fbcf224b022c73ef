"""Fork choice (DESIGN §5): the chain of greatest cumulative weight; ties go to the lower hash.

Weight counts PoSap work: a block that settles an SV task weighs 1 + its number of shares, any
other block weighs 1. A miner proposes a sibling of the head only if it would be strictly
heavier than the head.
"""

from __future__ import annotations

from fedcoin.data.block import BlockHeader


def heavier(candidate: BlockHeader, head: BlockHeader) -> bool:
    """True when ``candidate`` should replace ``head`` as the tip of the chain."""
    if candidate.weight != head.weight:
        return candidate.weight > head.weight
    return candidate.hash < head.hash


def may_propose_sibling(sibling_weight: int, head: BlockHeader) -> bool:
    """A sibling of the head is worth proposing only if strictly heavier than the head."""
    return sibling_weight > head.weight
