"""The common schedule of an SV task (DESIGN §5 step 1): every validator evaluates the same
coalitions in the same order; all of them up to n_exact_max clients, else a bounded stratified
sample seeded by the task id and the randao mix."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus.schedule import (
    SCHEDULE_TAG,
    common_schedule,
    is_exact,
    schedule_length,
    schedule_seed,
)
from fedcoin.consensus.shapley import border, paired_schedule
from fedcoin.errors import InvalidSchedule

TASK = b"\x11" * 32
MIX = b"\x22" * 32


def test_seed_is_the_tagged_hash_of_task_and_mix():
    assert schedule_seed(TASK, MIX) == hashlib.sha256(SCHEDULE_TAG + TASK + MIX).digest()


def test_up_to_n_exact_max_the_schedule_is_every_mask_ascending():
    for n in (1, 5, 10):
        assert common_schedule(n, 64, TASK, MIX) == tuple(range(1 << n))
        assert schedule_length(n, 64) == 1 << n
        assert is_exact(n, 64)


def test_a_lower_n_exact_max_samples_smaller_rounds():
    schedule = common_schedule(8, 100, TASK, MIX, n_exact_max=6)
    assert len(schedule) == 100 and not is_exact(8, 100, n_exact_max=6)


def test_beyond_n_exact_max_the_schedule_is_the_paired_sample_of_the_seed():
    schedule = common_schedule(16, 1024, TASK, MIX)
    assert schedule == tuple(paired_schedule(16, 1024, schedule_seed(TASK, MIX)))
    assert len(schedule) == len(set(schedule)) == 1024 == schedule_length(16, 1024)
    assert list(schedule[: len(border(16))]) == border(16)
    assert all(0 <= mask < 1 << 16 for mask in schedule)


def test_middle_coalitions_come_in_complementary_pairs():
    n, full = 20, (1 << 20) - 1
    schedule = common_schedule(n, 4096, TASK, MIX)
    sizes = [mask.bit_count() for mask in schedule]
    # complete strata: border and sizes 2 and 18; everything after is sampled in pairs
    sampled = [m for m, k in zip(schedule, sizes, strict=True) if 3 <= k <= n - 3]
    assert len(sampled) == 4096 - 42 - 2 * 190
    chosen = set(schedule)
    assert all(full ^ mask in chosen for mask in sampled)
    for k in range(3, 10):  # each lower size and its mirror drawn equally (± one round)
        assert sizes.count(k) == sizes.count(n - k)
        assert abs(sizes.count(k) - sizes.count(3)) <= 1


def test_the_mix_and_the_task_id_change_the_sample():
    base = common_schedule(20, 4096, TASK, MIX)
    assert common_schedule(20, 4096, TASK, b"\x23" * 32) != base
    assert common_schedule(20, 4096, b"\x12" * 32, MIX) != base
    # …but never the border, evaluated exactly whatever the seed
    assert base[:42] == common_schedule(20, 4096, TASK, b"\x23" * 32)[:42]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(11, 24),
    budget=st.integers(50, 600),
    task=st.binary(min_size=32, max_size=32),
    mix=st.binary(min_size=32, max_size=32),
)
def test_property_schedule_is_deterministic_distinct_and_of_budget_length(n, budget, task, mix):
    schedule = common_schedule(n, budget, task, mix)
    assert schedule == common_schedule(n, budget, task, mix)
    assert len(schedule) == len(set(schedule)) == min(budget, 1 << n)
    assert 0 in schedule and (1 << n) - 1 in schedule


@pytest.mark.parametrize(
    ("n", "budget", "n_exact_max"),
    [
        (0, 64, 10),  # no players
        (61, 4096, 10),  # more players than a round may carry
        (20, 4097, 10),  # budget above MAX_BUDGET (issue 11: 2^32 − 1 was accepted)
        (20, 2**32 - 1, 10),
        (20, 41, 10),  # budget below the 42 border coalitions
        (12, 1024, 11),  # an exact table above the table limit
    ],
)
def test_unbounded_or_impossible_parameters_are_refused(n, budget, n_exact_max):
    with pytest.raises(InvalidSchedule):
        common_schedule(n, budget, TASK, MIX, n_exact_max=n_exact_max)
    with pytest.raises(InvalidSchedule):
        schedule_length(n, budget, n_exact_max=n_exact_max)


def test_seed_inputs_must_be_hashes():
    with pytest.raises(InvalidSchedule):
        schedule_seed(b"short", MIX)


def test_a_sampled_schedule_always_holds_exactly_its_budget() -> None:
    """When size 2's stratum is complete but n−2's is not, n−2 is drawn directly (its
    complements are taken): the table has ``budget`` entries, the length every reveal must have
    (before, n = 7 with budgets 108–120 stopped at 107 and no honest table could be revealed)."""
    for n in range(3, 13):
        low = len(border(n))
        for budget in sorted({low, low + 1, (1 << n) // 3, (1 << n) // 2, (1 << n) - 1, 110, 430}):
            if not low <= budget < 1 << n or budget > 4096:
                continue
            masks = common_schedule(n, budget, b"\x01" * 32, b"\x02" * 32, n_exact_max=2)
            assert len(masks) == len(set(masks)) == budget == schedule_length(n, budget, 2), (
                n,
                budget,
            )
