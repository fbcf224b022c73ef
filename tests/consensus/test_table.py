"""One table per SV task (DESIGN §5 steps 1–3): the root names the table, the commitment binds
the validator's key, the root and a secret salt, a reveal is checked without evaluating
anything, and the estimate of a table is the exact fixed-point Shapley estimate."""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus.schedule import common_schedule
from fedcoin.consensus.shapley import SV_SCALE, exact_shapley, fixed_point_estimate
from fedcoin.consensus.table import (
    COMMIT_TAG,
    TABLE_TAG,
    check_reveal,
    check_root_reveal,
    check_table,
    first_difference,
    share_commitment,
    table_estimate,
    table_root,
)
from fedcoin.data.encoding import encode
from fedcoin.errors import (
    CommitmentMismatch,
    InvalidSalt,
    TableEntryOutOfRange,
    TableLengthMismatch,
)

TASK = b"\x11" * 32
ALICE = b"\xa1" * 32
MALLORY = b"\xb2" * 32
SALT = b"\x5a" * 32
TABLE = [3, 5, 4, 9, 7, 8, 6, 10]


def test_root_is_the_tagged_hash_of_task_and_encoded_table():
    expected = hashlib.sha256(TABLE_TAG + TASK + encode(TABLE)).digest()
    assert table_root(TASK, TABLE) == expected
    assert table_root(TASK, tuple(TABLE)) == expected


def test_root_changes_with_any_entry_and_with_the_task():
    root = table_root(TASK, TABLE)
    assert table_root(b"\x12" * 32, TABLE) != root
    for position in range(len(TABLE)):
        shifted = list(TABLE)
        shifted[position] += 1
        assert table_root(TASK, shifted) != root


def test_commitment_is_the_tagged_hash_of_task_key_root_and_salt():
    root = table_root(TASK, TABLE)
    expected = hashlib.sha256(COMMIT_TAG + TASK + ALICE + root + SALT).digest()
    assert share_commitment(TASK, ALICE, root, SALT) == expected


def test_salt_must_be_32_bytes():
    with pytest.raises(InvalidSalt):
        share_commitment(TASK, ALICE, table_root(TASK, TABLE), b"\x00" * 31)


def test_an_honest_reveal_recomputes_its_commitment_and_returns_the_root():
    root = table_root(TASK, TABLE)
    commitment = share_commitment(TASK, ALICE, root, SALT)
    assert check_reveal(TASK, ALICE, commitment, SALT, TABLE, len(TABLE), 10) == root
    check_root_reveal(TASK, ALICE, commitment, SALT, root)


def test_a_copied_commitment_cannot_be_revealed_under_another_key():
    # Issue 11 "copying passes": Mallory records Alice's commitment as its own and, once Alice
    # has revealed, replays her salt and table. The commitment binds Alice's key: it fails.
    root = table_root(TASK, TABLE)
    copied = share_commitment(TASK, ALICE, root, SALT)
    with pytest.raises(CommitmentMismatch):
        check_reveal(TASK, MALLORY, copied, SALT, TABLE, len(TABLE), 10)
    with pytest.raises(CommitmentMismatch):
        check_root_reveal(TASK, MALLORY, copied, SALT, root)


def test_a_reveal_with_another_salt_or_table_fails_its_commitment():
    root = table_root(TASK, TABLE)
    commitment = share_commitment(TASK, ALICE, root, SALT)
    with pytest.raises(CommitmentMismatch):
        check_reveal(TASK, ALICE, commitment, b"\x5b" * 32, TABLE, len(TABLE), 10)
    other = [*TABLE[:-1], 9]
    with pytest.raises(CommitmentMismatch):
        check_reveal(TASK, ALICE, commitment, SALT, other, len(TABLE), 10)


@pytest.mark.parametrize(
    ("table", "error"),
    [
        (TABLE[:-1], TableLengthMismatch),
        ([*TABLE, 1], TableLengthMismatch),
        ([*TABLE[:-1], 11], TableEntryOutOfRange),  # above the game's maximum utility
        ([*TABLE[:-1], -1], TableEntryOutOfRange),
        ([*TABLE[:-1], True], TableEntryOutOfRange),
        ([*TABLE[:-1], 2.0], TableEntryOutOfRange),
    ],
)
def test_malformed_tables_are_refused_before_any_hashing(table, error):
    with pytest.raises(error):
        check_table(table, len(TABLE), 10)


def test_first_difference():
    assert first_difference(TABLE, list(TABLE)) is None
    assert first_difference(TABLE, [3, 5, 4, 9, 0, 8, 6, 0]) == 4
    with pytest.raises(TableLengthMismatch):
        first_difference(TABLE, TABLE[:-1])


def additive_game(n: int, seed: int):
    """An integer game: U(S) = Σ_{i∈S} a_i plus a pseudo-random term in 0..12 per coalition."""
    rng = random.Random(seed)
    a = [rng.randint(0, 20) for _ in range(n)]
    return lambda mask: sum(a[i] for i in range(n) if mask >> i & 1) + (mask * 7919 % 13)


def test_exact_schedule_estimate_is_the_floored_exact_shapley_value():
    n = 6
    utility = additive_game(n, 1)
    schedule = common_schedule(n, 64, TASK, b"\x22" * 32)
    table = [utility(mask) for mask in schedule]
    exact = [Fraction(v).limit_denominator(10**9) for v in exact_shapley(n, utility)]
    estimate = table_estimate(n, schedule, table)
    assert all(abs(e - v * SV_SCALE) <= 1 for e, v in zip(estimate, exact, strict=True))


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), mix=st.binary(min_size=32, max_size=32))
def test_property_sampled_estimate_equals_shapley_fixed_point_estimate(seed, mix):
    # table_estimate is shapley.fixed_point_estimate over (mask, U) of the schedule, nothing else
    n = 12
    utility = additive_game(n, seed)
    schedule = common_schedule(n, 300, TASK, mix)
    table = [utility(mask) for mask in schedule]
    expected = fixed_point_estimate(n, list(zip(schedule, table, strict=True)))
    assert table_estimate(n, schedule, table) == expected


def test_estimate_needs_one_entry_per_position():
    with pytest.raises(TableLengthMismatch):
        table_estimate(3, list(range(8)), TABLE[:-1])
