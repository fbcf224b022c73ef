"""Proposer selection: CometBFT's weighted round robin, in exact integer arithmetic."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus.proposer import (
    apply_changes,
    centre,
    genesis_set,
    increment,
    next_height_set,
    proposer_for_round,
    rescale,
)
from fedcoin.consensus.validators import Validator, ValidatorSet
from fedcoin.data.keys import address_of
from fedcoin.errors import InvalidValidatorSet
from tests.consensus.bft_helpers import KEYS

PK = [k.public for k in KEYS]


def proposers(validators: ValidatorSet, heights: int) -> list[bytes]:
    out = []
    for _ in range(heights):
        out.append(proposer_for_round(validators, 0))
        validators = next_height_set(validators)
    return out


def test_the_sequence_matches_cometbft_proposer_selection_1() -> None:
    """CometBFT's TestProposerSelection1 (foo 1000, bar 300, baz 330), first 99 proposers."""
    names = {PK[0]: "foo", PK[1]: "bar", PK[2]: "baz"}
    validators = genesis_set([(PK[0], 1000), (PK[1], 300), (PK[2], 330)])
    got = " ".join(names[p] for p in proposers(validators, 99))
    expected = (
        "foo baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo foo bar foo foo "
        "baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo foo bar foo baz foo "
        "foo bar foo baz foo foo bar foo baz foo foo foo baz bar foo foo foo baz foo bar foo foo "
        "baz foo bar foo foo baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo "
        "foo bar foo baz foo foo bar foo baz foo foo"
    )
    assert got == expected


@pytest.mark.parametrize("powers", [[1, 2, 3, 4], [10, 10, 10, 10], [1, 1, 1, 97], [5, 7, 11]])
def test_each_validator_proposes_in_proportion_to_its_power(powers: list[int]) -> None:
    validators = genesis_set((PK[i], p) for i, p in enumerate(powers))
    total = sum(powers)
    cycles = 20
    counts = Counter(proposers(validators, cycles * total))
    for i, power in enumerate(powers):
        assert abs(counts[PK[i]] - cycles * power) <= 1


def test_rounds_within_a_height_rotate_by_power_too() -> None:
    validators = genesis_set((PK[i], p) for i, p in enumerate([1, 2, 3, 4]))
    counts = Counter(proposer_for_round(validators, r) for r in range(100))
    assert [counts[PK[i]] for i in range(4)] == [10, 20, 30, 40]


def test_selection_is_deterministic_and_ignores_input_order() -> None:
    members = [(PK[i], 3 + i) for i in range(6)]
    shuffled = members[:]
    random.Random(7).shuffle(shuffled)
    assert proposers(genesis_set(members), 50) == proposers(genesis_set(shuffled), 50)


def test_ties_go_to_the_lower_address() -> None:
    validators = genesis_set((PK[i], 10) for i in range(5))
    first = proposer_for_round(validators, 0)
    assert address_of(first) == min(address_of(PK[i]) for i in range(5))


def test_a_new_validator_starts_at_minus_1_125_total_power() -> None:
    validators = genesis_set((PK[i], 10) for i in range(3))
    changed = apply_changes(validators, [(PK[i], 10) for i in range(4)])
    # P = 40 → start −(40 + 40 >> 3) = −45; centred with floor(−45 / 4) = −12
    assert [v.priority for v in changed.members if v.pubkey != PK[3]] == [12, 12, 12]
    assert changed.get(PK[3]).priority == -33  # type: ignore[union-attr]


def test_a_new_validator_cannot_propose_right_away() -> None:
    validators = genesis_set((PK[i], 10) for i in range(3))
    for _ in range(7):
        validators = next_height_set(validators)
    joined = apply_changes(validators, [(PK[i], 10) for i in range(4)])
    assert PK[3] not in proposers(joined, 3)


def test_leaving_validators_count_in_the_new_members_start_and_are_removed() -> None:
    validators = genesis_set((PK[i], 10) for i in range(3))
    changed = apply_changes(validators, [(PK[0], 10), (PK[1], 20), (PK[5], 8)])
    assert [v.pubkey for v in changed.members] == sorted([PK[0], PK[1], PK[5]])
    # P = 10 + 20 + 8 (new powers) + 10 (the leaver's old power) = 48 → start −54
    staged = [0, 0, -54]
    avg = sum(staged) // 3
    by_key = {PK[0]: 0 - avg, PK[1]: 0 - avg, PK[5]: -54 - avg}
    assert {v.pubkey: v.priority for v in changed.members} == by_key


def test_rescale_divides_toward_zero_by_the_ceiling_ratio() -> None:
    # Spread 2001 > 2·3 = 6: ratio ceil(2001 / 6) = 334; −1001 / 334 truncates to −2 (not −3)
    assert rescale([1000, -1001, 1], 3) == [2, -2, 0]
    assert rescale([5, -1], 3) == [5, -1]  # spread 6 ≤ 6: unchanged


def test_centre_subtracts_the_floor_of_the_mean() -> None:
    assert centre([-1, 0]) == [0, 1]
    assert centre([3, 4, 6]) == [-1, 0, 2]


def test_increment_conserves_the_sum_of_priorities() -> None:
    validators = genesis_set((PK[i], i + 1) for i in range(5))
    after, _ = increment(validators, 17)
    assert sum(v.priority for v in after.members) == sum(v.priority for v in validators.members)


def test_an_empty_set_has_no_proposer() -> None:
    with pytest.raises(InvalidValidatorSet):
        increment(ValidatorSet(()), 1)
    with pytest.raises(InvalidValidatorSet):
        apply_changes(genesis_set([(PK[0], 1)]), [])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=6),
    st.lists(st.integers(-(10**6), 10**6), min_size=6, max_size=6),
)
def test_priorities_stay_within_the_window_after_an_increment(
    powers: list[int], priorities: list[int]
) -> None:
    members = tuple(
        Validator(PK[i], p, priorities[i])
        for i, p in sorted(enumerate(powers), key=lambda x: PK[x[0]])
    )
    validators = ValidatorSet(tuple(sorted(members, key=lambda v: v.pubkey)))
    after, proposer = increment(validators, 1)
    spread = max(v.priority for v in after.members) - min(v.priority for v in after.members)
    assert spread <= 3 * validators.total_power
    assert proposer in validators
