"""Shapley values: axioms, brute force, determinism, the schedule, fixed point."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus.shapley import (
    SV_SCALE,
    SeededRng,
    border,
    estimate_shapley,
    exact_shapley,
    fixed_point_estimate,
    permutation_shapley,
    stratified_schedule,
)


def games(max_n: int = 6):
    return st.integers(1, max_n).flatmap(
        lambda n: st.tuples(
            st.just(n), st.lists(st.integers(-50, 50), min_size=1 << n, max_size=1 << n)
        )
    )


def brute_force(n: int, values: list[int]) -> list[Fraction]:
    sv = [Fraction(0)] * n
    for perm in itertools.permutations(range(n)):
        mask = 0
        for p in perm:
            sv[p] += values[mask | 1 << p] - values[mask]
            mask |= 1 << p
    return [s / math.factorial(n) for s in sv]


@settings(max_examples=80, deadline=None)
@given(games())
def test_exact_equals_brute_force_over_permutations(game: tuple[int, list[int]]) -> None:
    n, values = game
    got = exact_shapley(n, values.__getitem__)
    want = brute_force(n, values)
    assert got == pytest.approx([float(w) for w in want], abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(games())
def test_efficiency(game: tuple[int, list[int]]) -> None:
    n, values = game
    assert sum(exact_shapley(n, values.__getitem__)) == pytest.approx(
        values[(1 << n) - 1] - values[0], abs=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(games(5), st.data())
def test_null_player_gets_zero(game: tuple[int, list[int]], data: st.DataObject) -> None:
    n, values = game
    null = data.draw(st.integers(0, n - 1))
    # Make `null` contribute nothing: U(S ∪ {null}) = U(S) for every S.
    for mask in range(1 << n):
        if mask >> null & 1:
            values[mask] = values[mask ^ (1 << null)]
    assert exact_shapley(n, values.__getitem__)[null] == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.data())
def test_symmetric_players_get_equal_values(n: int, data: st.DataObject) -> None:
    # A game that depends only on the coalition size (plus a player-specific part for
    # players other than 0 and 1): players 0 and 1 are interchangeable.
    by_size = data.draw(st.lists(st.integers(-20, 20), min_size=n + 1, max_size=n + 1))
    extra = data.draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n))

    def u(mask: int) -> int:
        own = sum(extra[i] for i in range(2, n) if mask >> i & 1)
        return by_size[mask.bit_count()] + own

    sv = exact_shapley(n, u)
    assert sv[0] == pytest.approx(sv[1], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(games(5), st.data())
def test_linearity(game: tuple[int, list[int]], data: st.DataObject) -> None:
    n, a = game
    b = data.draw(st.lists(st.integers(-50, 50), min_size=1 << n, max_size=1 << n))
    both = exact_shapley(n, lambda m: a[m] + 2 * b[m])
    separate = [
        x + 2 * y
        for x, y in zip(
            exact_shapley(n, a.__getitem__), exact_shapley(n, b.__getitem__), strict=False
        )
    ]
    assert both == pytest.approx(separate, abs=1e-9)


def test_exact_calls_utility_once_per_coalition() -> None:
    calls: list[int] = []
    exact_shapley(5, lambda m: calls.append(m) or m.bit_count())
    assert sorted(calls) == list(range(32))


@settings(max_examples=40, deadline=None)
@given(games(6), st.binary(min_size=1, max_size=8))
def test_estimate_is_exact_when_budget_covers_all(game: tuple[int, list[int]], seed: bytes) -> None:
    n, values = game
    assert estimate_shapley(n, values.__getitem__, 1 << n, seed) == pytest.approx(
        exact_shapley(n, values.__getitem__)
    )


@pytest.mark.parametrize("n", [8, 11, 14])
@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_schedule_is_distinct_bounded_and_contains_border(n: int, fraction: float) -> None:
    budget = max(int(fraction * (1 << n)), 2 * n + 2)
    masks = stratified_schedule(n, budget, b"seed")
    assert len(masks) == len(set(masks)) <= budget
    assert len(masks) >= budget - n  # the budget is (almost) spent
    assert set(border(n)) <= set(masks)
    assert all(0 <= m < 1 << n for m in masks)


def test_schedule_is_deterministic_and_seed_dependent() -> None:
    assert stratified_schedule(12, 500, b"a") == stratified_schedule(12, 500, b"a")
    assert stratified_schedule(12, 500, b"a") != stratified_schedule(12, 500, b"b")


def test_estimate_never_asks_for_a_coalition_twice_or_beyond_budget() -> None:
    seen: list[int] = []
    estimate_shapley(12, lambda m: seen.append(m) or m.bit_count() ** 0.5, 300, b"s")
    assert len(seen) == len(set(seen)) <= 300


def test_budget_below_border_is_refused() -> None:
    with pytest.raises(ValueError, match="border"):
        stratified_schedule(10, 10, b"x")


def test_estimate_approaches_exact_on_a_smooth_game() -> None:
    n = 12
    weights = [1 + (i % 4) for i in range(n)]

    def u(mask: int) -> float:
        s = sum(w for i, w in enumerate(weights) if mask >> i & 1)
        return 100 * (1 - math.exp(-s / 6))

    exact = exact_shapley(n, u)
    est = estimate_shapley(n, u, 1 << 10, b"seed")
    err = math.dist(est, exact) / math.hypot(*exact)
    perm = permutation_shapley(n, u, 1 << 10, b"seed")
    perm_err = math.dist(perm, exact) / math.hypot(*exact)
    assert err < 0.05
    assert err < perm_err


@settings(max_examples=40, deadline=None)
@given(games(6))
def test_fixed_point_is_floor_of_exact_rational(game: tuple[int, list[int]]) -> None:
    n, values = game
    want = tuple(math.floor(v * SV_SCALE) for v in brute_force(n, values))
    assert fixed_point_estimate(n, list(enumerate(values))) == want


def test_rng_is_reproducible_and_in_range() -> None:
    a, b = SeededRng(b"k"), SeededRng(b"k")
    xs = [a.below(7) for _ in range(500)]
    assert xs == [b.below(7) for _ in range(500)]
    assert set(xs) == set(range(7))
