"""The consensus Shapley value of a round: the coordinate-wise median of the shares' estimates.

Independent seeds make the shares independent estimates; the median bounds what a minority of
bad shares can move. With an even count, the value is the floor of the mean of the two middle
values — integer arithmetic only, so every node gets the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence


def median_floor(values: Sequence[int]) -> int:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) // 2


def aggregate_estimates(estimates: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Coordinate-wise median of equally long integer vectors."""
    if not estimates:
        raise ValueError("no estimates to aggregate")
    n = len(estimates[0])
    if any(len(e) != n for e in estimates):
        raise ValueError("estimates of different lengths")
    return tuple(median_floor([e[i] for e in estimates]) for i in range(n))
