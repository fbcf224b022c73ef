"""Fork choice (DESIGN §5): the chain of greatest cumulative weight; ties go to the lower hash.

Weight counts PoSap work: a block that settles an SV task weighs 1 + its number of shares, any
other block weighs 1. (Miners here only ever build on their head, so they never propose a
sibling that is not heavier, as DESIGN §5 requires.)
"""

from __future__ import annotations

from fedcoin.data.block import BlockHeader


def heavier(candidate: BlockHeader, head: BlockHeader) -> bool:
    """True when ``candidate`` should replace ``head`` as the tip of the chain."""
    if candidate.weight != head.weight:
        return candidate.weight > head.weight
    return candidate.hash < head.hash
