"""The null-player game (DESIGN §5): clip at the smallest count, apportioned round weights,
coalition coefficients, exact null players, batch independence, and the bit-exact FedAvg of §4."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus.evaluator import MARGIN_CAP, K, compile_architecture
from fedcoin.consensus.game import (
    NullPlayerGame,
    apportion,
    clip_samples,
    coalition_coefficients,
    exact_fedavg,
    is_exact_fedavg,
    max_utility,
    round_weights,
)
from fedcoin.consensus.quantize import quantize_validation
from fedcoin.consensus.schedule import common_schedule
from fedcoin.consensus.shapley import exact_shapley
from fedcoin.consensus.table import table_estimate
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.errors import WeightOutOfRange, WeightShapeMismatch
from tests.consensus.exact_reference import conv, dense, layer, pooling, sequential, utility

MLP = sequential([10], dense(8, "relu"), dense(4))
CNN = sequential(
    [5, 5, 1], conv(3, 2, 1, "same"), pooling("MaxPooling2D", 2), layer("Flatten"), dense(3)
)


def make_round(arch: str, n: int, seed: int, samples=None, free_riders=(), val: int = 30):
    """A round: previous global g, clients near g (free riders send g itself)."""
    program = compile_architecture(arch)
    rng = np.random.default_rng(seed)
    g = [rng.normal(0, 0.5, s).astype(np.float32) for s in program.tensor_shapes]
    clients = [
        [t.copy() for t in g]
        if i in free_riders
        else [(t + rng.normal(0, 0.3, t.shape)).astype(np.float32) for t in g]
        for i in range(n)
    ]
    x = rng.random((val, *program.input_shape)).astype(np.float32)
    y = rng.integers(0, program.outputs, val)
    samples = samples or [int(s) for s in rng.integers(20, 200, n)]
    return program, g, clients, samples, x, y


def game_of(arch, n, seed, **kw):
    program, g, clients, samples, x, y = make_round(arch, n, seed, **kw)
    game = NullPlayerGame(program, quantize_validation(program, x, y), g, clients, samples)
    return game, (program, g, clients, samples, x, y)


# --- round weights ---------------------------------------------------------------------------
def test_clip_at_the_smallest_count():
    assert clip_samples([10, 20, 30]) == (10, 10, 10)
    assert clip_samples([40, 10, 30, 20]) == (10, 10, 10, 10)
    assert clip_samples([7]) == (7,)


def test_inflating_samples_gains_nothing():
    honest = round_weights([100, 100, 100, 100])
    inflated = round_weights([1000, 100, 100, 100])
    assert inflated == honest == (1024, 1024, 1024, 1024)
    # A client below the others cannot raise its weight by claiming their count either
    assert round_weights([50, 100, 100, 100]) == round_weights([100, 100, 100, 100])


@pytest.mark.parametrize("bad", [[], [0, 5], [-1], [1.5], [True]])
def test_sample_counts_must_be_positive_ints(bad):
    with pytest.raises(ValueError):
        clip_samples(bad)


def test_apportion_largest_remainder_ties_to_lower_index():
    assert apportion([1, 1, 1]) == (1366, 1365, 1365)
    assert apportion([1, 2]) == (1365, 2731)  # 1365.33 / 2730.67: the larger remainder wins
    assert apportion([3, 0, 1], bits=2) == (3, 0, 1)
    assert apportion([1] * 5, bits=3) == (2, 2, 2, 1, 1)


@given(st.lists(st.integers(1, 10**9), min_size=1, max_size=64))
def test_property_apportionment_sums_to_two_to_the_k_and_stays_within_one(counts):
    clipped = clip_samples(counts)
    seats = apportion(clipped)
    assert sum(seats) == 2**K
    for s, c in zip(seats, clipped, strict=True):
        quota = 2**K * c / sum(clipped)
        assert quota - 1 < s < quota + 1


def test_coalition_coefficients():
    coeffs = coalition_coefficients([0, 0b101, 0b111], [1000, 2000, 1096])
    assert coeffs.tolist() == [[0, 0, 0, 4096], [1000, 0, 1096, 2000], [1000, 2000, 1096, 0]]
    with pytest.raises(ValueError):
        coalition_coefficients([8], [1000, 2000, 1096])
    with pytest.raises(ValueError):
        coalition_coefficients([-1], [1000, 2000, 1096])


# --- the game ------------------------------------------------------------------------------
def test_empty_coalition_is_the_previous_global_and_grand_is_the_weighted_mix():
    game, (program, g, clients, samples, x, y) = game_of(MLP, 3, 0)
    players = [*clients, g]
    assert game.utility(0) == utility(program, x, y, players, [0, 0, 0, 4096], "margin")
    full = [*round_weights(samples), 0]
    assert game.utility(0b111) == utility(program, x, y, players, full, "margin")


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 5),
    arch=st.sampled_from([MLP, CNN]),
    data=st.data(),
)
def test_property_null_player_has_zero_marginal_in_every_coalition(seed, n, arch, data):
    rider = data.draw(st.integers(0, n - 1))
    game, _ = game_of(arch, n, seed, free_riders=(rider,))
    table = game.utilities(list(range(1 << n)))
    bit = 1 << rider
    assert all(table[mask | bit] == table[mask] for mask in range(1 << n) if not mask & bit)
    assert exact_shapley(n, table.__getitem__)[rider] == 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_property_table_independent_of_batch_composition_and_order(seed, data):
    game, _ = game_of(CNN, 4, seed)
    masks = list(range(16))
    table = game.utilities(masks)
    picked = data.draw(st.lists(st.sampled_from(masks), min_size=1, max_size=20))
    assert game.utilities(picked) == [table[m] for m in picked]
    assert [game.utility(m) for m in reversed(masks)] == table[::-1]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), score=st.sampled_from(["margin", "count"]))
def test_property_game_equals_pure_integer_reference(seed, score):
    program, g, clients, samples, x, y = make_round(CNN, 3, seed, val=8)
    validation = quantize_validation(program, x, y)
    game = NullPlayerGame(program, validation, g, clients, samples, score)
    masks = list(range(8))
    coeffs = coalition_coefficients(masks, round_weights(samples))
    players = [*clients, g]
    want = [utility(program, x, y, players, row.tolist(), score) for row in coeffs]
    assert game.utilities(masks) == want


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), arch=st.sampled_from([MLP, CNN]))
def test_property_margin_is_bounded_by_the_count(seed, arch):
    # A sample adds to the margin score iff it is classified correctly, at least 1 and at most
    # MARGIN_CAP: count ≤ U ≤ MARGIN_CAP·count ≤ max_utility(N)
    program, g, clients, samples, x, y = make_round(arch, 3, seed, val=25)
    validation = quantize_validation(program, x, y)
    margin = NullPlayerGame(program, validation, g, clients, samples).utilities(list(range(8)))
    count = NullPlayerGame(program, validation, g, clients, samples, "count").utilities(
        list(range(8))
    )
    for u, c in zip(margin, count, strict=True):
        assert c <= u <= MARGIN_CAP * c <= max_utility(len(y))


def test_game_rejects_updates_outside_the_evaluators_bounds():
    program, g, clients, samples, x, y = make_round(MLP, 2, 0)
    validation = quantize_validation(program, x, y)
    clients[1][0][0, 0] = np.float32(9.0)
    with pytest.raises(WeightOutOfRange):
        NullPlayerGame(program, validation, g, clients, samples)
    clients[1] = clients[1][:-1]
    with pytest.raises(WeightShapeMismatch):
        NullPlayerGame(program, validation, g, clients, samples)


# --- the submitted global model ---------------------------------------------------------------
def test_exact_fedavg_accumulates_clipped_counts_in_client_order():
    a, b, c = (np.array([v], np.float32) for v in (0.1, 0.2, 0.7))
    got = exact_fedavg([[a], [b], [c]], [2, 3, 100])  # every count clipped to the smallest, 2
    acc = np.float64(0.0)
    for t, s in ((a, 2), (b, 2), (c, 2)):
        acc = acc + np.float64(t[0]) * s
    assert got[0].dtype == np.float32 and got[0][0] == np.float32(acc / 6)


def test_is_exact_fedavg_is_bitwise():
    _, g, clients, samples, _, _ = make_round(MLP, 4, 1)
    model = exact_fedavg(clients, samples)
    assert is_exact_fedavg(model, clients, samples)
    nudged = [t.copy() for t in model]
    nudged[0].flat[0] = np.nextafter(nudged[0].flat[0], np.float32(1))
    assert not is_exact_fedavg(nudged, clients, samples)
    assert not is_exact_fedavg([t.astype(np.float64) for t in model], clients, samples)
    assert not is_exact_fedavg(model[:-1], clients, samples)
    assert not is_exact_fedavg(model, [], [])


# --- null players on a sampled table ---------------------------------------------------------
def test_a_free_rider_is_paid_exactly_zero_on_a_sampled_table_too():
    n, rider = 12, 5
    game, _ = game_of(MLP, n, 3, free_riders=(rider,))
    assert game.null_players == 1 << rider
    schedule = common_schedule(n, DEFAULT_POSAP.budget, b"\x11" * 32, b"\x22" * 32)
    assert len(schedule) == DEFAULT_POSAP.budget < 1 << n  # sampled
    table = game.utilities(list(schedule))
    raw = table_estimate(n, schedule, table)
    settled = table_estimate(n, schedule, table, game.null_players)
    # sampling noise gives the null player a value; the settled estimate is exactly 0 for it
    assert raw[rider] != 0 and settled[rider] == 0
    assert [v for i, v in enumerate(settled) if i != rider] == [
        v for i, v in enumerate(raw) if i != rider
    ]
