"""Shapley values of cooperative games: exact, stratified sampling, and a permutation baseline.

Public, generic API (usable outside FedCoin) — a game is ``n`` players and a utility over
coalition bitmasks (bit ``i`` set = player ``i`` is in):

- ``exact_shapley(n, utility)``: all ``2**n`` coalitions, each evaluated once.
- ``estimate_shapley(n, utility, budget, seed)``: at most ``budget`` distinct coalitions, never
  one twice, deterministic for a seed, equal to ``exact_shapley`` when ``budget >= 2**n``.
- ``permutation_shapley(n, utility, budget, seed)``: plain permutation sampling (the baseline).

The estimator is *stratified* (in the style of Stratified SVARM, Kolpaczki et al., AAAI 2024).
Write the Shapley value as the average over coalition sizes ``l`` of the difference of two
stratum means: ``φ_i = 1/n · Σ_l ( E[U(A) : |A|=l+1, i∈A] − E[U(A) : |A|=l, i∉A] )``. Every
evaluated coalition feeds every player's stratum means (one with ``+``, the rest with ``−``), so
each evaluation is used ``n`` times. The schedule evaluates the outer strata — ``∅``, ``N``, the
singletons, the ``(n−1)``-coalitions, then further sizes inward while each costs at most half
of what is left — exactly, and spreads the rest evenly over the middle sizes, uniformly
without replacement within a size. On a full table the same formula *is* the exact Shapley
value, so one code path serves both, and on integer utilities the estimate is recomputed with
exact rational arithmetic (``fixed_point_estimate``): the basis of verifiable PoSap shares.

The schedules live in ``sampling.py`` (re-exported here): ``stratified_schedule`` and
``paired_schedule``, which keeps the same outer strata and samples the middle sizes in
complementary pairs (S, then N \\ S) — the common schedule of PoSap v2
(``consensus/schedule.py``). Each is a pure function of ``(n, budget, seed)`` through a
SHA-256 counter generator: no global random state, identical on every machine and Python
version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, TypeVar

from fedcoin.consensus.sampling import (
    SeededRng,
    border,
    paired_schedule,
    popcount,
    stratified_schedule,
)

__all__ = [
    "SV_SCALE",
    "SeededRng",
    "adjusted_values",
    "border",
    "control_variate",
    "estimate_shapley",
    "exact_shapley",
    "fixed_point_estimate",
    "paired_schedule",
    "permutation_shapley",
    "popcount",
    "stratified_schedule",
    "stratified_values",
]

SV_SCALE = 10**6
"""Fixed-point scale of PoSap estimates: units per unit of ``U`` (the clipped margin score, at
most ``evaluator.MARGIN_CAP`` = 256 per validation sample)."""

Number = TypeVar("Number", float, Fraction)


def _float_div(s: float, c: int) -> float:
    return s / c


def stratified_values(
    n: int, table: Mapping[int, int] | Mapping[int, float], divide: Callable[[Any, int], Number]
) -> list[Number]:
    """The stratified Shapley estimate from evaluated coalitions (exact on a full table).

    ``divide(sum, count)`` makes a stratum mean: ``Fraction`` for exact rational results from
    integer utilities, true division for floats. A stratum with no sample for a player falls
    back to the mean of all evaluated coalitions of that size; a size with no sample at all to
    linear interpolation between the nearest evaluated sizes (∅ and N are always evaluated).
    """
    full = (1 << n) - 1
    if 0 not in table or full not in table:
        raise ValueError("the table must contain the empty and the grand coalition")
    size_sum: list[Any] = [0] * (n + 1)
    size_cnt = [0] * (n + 1)
    plus_sum: list[list[Any]] = [[0] * (n + 1) for _ in range(n)]
    plus_cnt = [[0] * (n + 1) for _ in range(n)]
    minus_sum: list[list[Any]] = [[0] * (n + 1) for _ in range(n)]
    minus_cnt = [[0] * (n + 1) for _ in range(n)]
    for mask, value in table.items():
        k = mask.bit_count()
        size_sum[k] += value
        size_cnt[k] += 1
        for i in range(n):
            if mask >> i & 1:
                plus_sum[i][k] += value
                plus_cnt[i][k] += 1
            else:
                minus_sum[i][k] += value
                minus_cnt[i][k] += 1
    size_mean = _size_means(n, size_sum, size_cnt, divide)

    def mean(s: Any, c: int, fallback: Number) -> Number:
        return divide(s, c) if c else fallback

    values: list[Number] = []
    for i in range(n):
        total = divide(0, 1)
        for size in range(n):
            plus = mean(plus_sum[i][size + 1], plus_cnt[i][size + 1], size_mean[size + 1])
            minus = mean(minus_sum[i][size], minus_cnt[i][size], size_mean[size])
            total += plus - minus
        values.append(total / n)
    return values


def _solve(matrix: list[list[Any]], rhs: list[Any], exact: bool) -> list[Any] | None:
    """Gaussian elimination with partial pivoting; None when singular. Works on Fractions
    (exactly) and on floats."""
    size = len(rhs)
    a = [row[:] + [r] for row, r in zip(matrix, rhs, strict=True)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(a[r][col]))
        if (a[pivot][col] == 0) if exact else abs(a[pivot][col]) < 1e-9:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        lead = a[col][col]
        for r in range(col + 1, size):
            factor = a[r][col] / lead
            if factor:
                row_r, row_c = a[r], a[col]
                for c in range(col, size + 1):
                    row_r[c] -= factor * row_c[c]
    out: list[Any] = [0] * size
    for r in range(size - 1, -1, -1):
        acc = a[r][size] - sum(a[r][c] * out[c] for c in range(r + 1, size))
        out[r] = acc / a[r][r]
    return out


def control_variate(
    n: int, table: Mapping[int, Any], divide: Callable[[Any, int], Number]
) -> tuple[dict[int, Any], list[Number], Any] | None:
    """Fit ``f(S) = a_|S| + Σ_{i∈S} β_i`` to the table by least squares.

    Returns (``f·scale`` on the table's coalitions, the Shapley value of f, ``scale``), or
    None when the fit is not identifiable. With exact arithmetic ``scale`` is the common
    denominator of the parameters, so ``f·scale`` is an integer table; with floats it is 1.
    The size effects are eliminated first (within-size demeaning), leaving an
    (n−1)-dimensional system in β (β_{n−1} = 0 fixes the one free direction).
    """
    exact = divide is not _float_div
    zero = divide(0, 1)
    by_size: dict[int, list[int]] = {}
    for mask in table:
        by_size.setdefault(mask.bit_count(), []).append(mask)
    m = n - 1
    gram = [[zero] * m for _ in range(m)]
    rhs = [zero] * m
    size_mean: dict[int, Number] = {}
    member_mean: dict[int, list[Number]] = {}
    for k, masks in by_size.items():
        count = len(masks)
        ysum = sum(table[mask] for mask in masks)
        xsum = [sum(mask >> i & 1 for mask in masks) for i in range(m)]
        co = [[0] * m for _ in range(m)]
        xy = [0] * m
        for mask in masks:
            members = [i for i in range(m) if mask >> i & 1]
            value = table[mask]
            for i in members:
                xy[i] += value
                row = co[i]
                for j in members:
                    row[j] += 1
        # Σ (x − x̄)(x − x̄)ᵀ = Σ xxᵀ − (Σx)(Σx)ᵀ / count; likewise for x·y
        for i in range(m):
            rhs[i] += xy[i] - divide(xsum[i] * ysum, count)
            for j in range(m):
                gram[i][j] += co[i][j] - divide(xsum[i] * xsum[j], count)
        size_mean[k] = divide(ysum, count)
        member_mean[k] = [divide(xsum[i], count) for i in range(m)]
    solved: list[Any] | None = _solve(gram, rhs, exact)
    if solved is None:
        return None
    beta: list[Any] = list(solved)
    beta.append(zero)
    a: dict[int, Any] = {
        k: size_mean[k] - sum(b * x for b, x in zip(beta, member_mean[k], strict=False))
        for k in by_size
    }
    shapley_f = [beta[i] + (a[n] - a[0]) / n for i in range(n)]
    scale: Any = 1
    if exact:
        # Put every parameter over one denominator, so f·scale is an integer table and the
        # stratified pass over it sums integers, not fractions.
        scale = math.lcm(*(v.denominator for v in (*beta, *a.values())))
        beta = [int(b * scale) for b in beta]
        a = {k: int(v * scale) for k, v in a.items()}
    fitted = {
        mask: a[mask.bit_count()] + sum(beta[i] for i in range(n) if mask >> i & 1)
        for mask in table
    }
    return fitted, shapley_f, scale


def adjusted_values(
    n: int, table: Mapping[int, Any], divide: Callable[[Any, int], Number]
) -> list[Number]:
    """The estimate PoSap uses: stratified, regression-adjusted unless the table is full."""
    values = stratified_values(n, table, divide)
    if len(table) >= 1 << n:
        return values
    fit = control_variate(n, table, divide)
    if fit is None:
        return values
    fitted, shapley_f, scale = fit
    on_f = stratified_values(n, fitted, divide)
    return [v + s - f / scale for v, s, f in zip(values, shapley_f, on_f, strict=True)]


def _size_means(
    n: int, sums: list[Any], counts: list[int], divide: Callable[[Any, int], Number]
) -> list[Number]:
    known = [k for k in range(n + 1) if counts[k]]
    means: list[Number] = []
    for k in range(n + 1):
        if counts[k]:
            means.append(divide(sums[k], counts[k]))
            continue
        lo = max(j for j in known if j < k)
        hi = min(j for j in known if j > k)
        a, b = divide(sums[lo], counts[lo]), divide(sums[hi], counts[hi])
        means.append(a + (b - a) * (k - lo) / (hi - lo))
    return means


def exact_shapley(n: int, utility: Callable[[int], float]) -> list[float]:
    """Exact Shapley values; ``utility`` is called once per coalition, ``2**n`` calls in all."""
    table = {mask: utility(mask) for mask in range(1 << n)}
    return stratified_values(n, table, _float_div)


def estimate_shapley(
    n: int, utility: Callable[[int], float], budget: int, seed: bytes
) -> list[float]:
    """Stratified estimate from at most ``budget`` distinct coalitions; exact if it allows."""
    table = {mask: utility(mask) for mask in stratified_schedule(n, budget, seed)}
    return adjusted_values(n, table, _float_div)


def permutation_shapley(
    n: int, utility: Callable[[int], float], budget: int, seed: bytes
) -> list[float]:
    """Plain permutation sampling (Castro et al. 2009), stopped at ``budget`` distinct calls.

    The baseline the stratified estimator is measured against; each permutation's marginal
    contributions are averaged. Utility values are cached, so repeats cost nothing.
    """
    rng = SeededRng(seed)
    cache: dict[int, float] = {}

    def value(mask: int) -> float | None:
        if mask not in cache:
            if len(cache) >= budget:
                return None
            cache[mask] = utility(mask)
        return cache[mask]

    sums = [0.0] * n
    perms = 0
    while True:
        order = list(range(n))
        for j in range(n - 1):
            pick = j + rng.below(n - j)
            order[j], order[pick] = order[pick], order[j]
        mask, prev = 0, value(0)
        marginals = []
        for player in order:
            mask |= 1 << player
            current = value(mask)
            if current is None or prev is None:
                break
            marginals.append((player, current - prev))
            prev = current
        if len(marginals) < n:
            break
        for player, delta in marginals:
            sums[player] += delta
        perms += 1
        if perms > 100 * (1 << n):
            break  # everything is cached; more permutations add nothing new
    return [s / perms for s in sums] if perms else [0.0] * n


def fixed_point_estimate(
    n: int, table: Sequence[tuple[int, int]], null_players: int = 0
) -> tuple[int, ...]:
    """The PoSap estimate from a share's integer table: ``floor(φ_i · SV_SCALE)``, exactly.

    Rational arithmetic throughout, so every node recomputes the very same integers. Clients in
    the ``null_players`` mask (their quantised update equals the previous global model's) get
    exactly 0: the null-player axiom, which a sampled table only approximates (noise around 0
    would pay a free rider, DESIGN §6).
    """
    values = adjusted_values(n, dict(table), Fraction)
    return tuple(
        0 if null_players >> i & 1 else math.floor(v * SV_SCALE) for i, v in enumerate(values)
    )
