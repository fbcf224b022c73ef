"""The simulator's client kinds: who is which kind, what they claim and send."""

from __future__ import annotations

import numpy as np
import pytest

from fedcoin.application.datasets import load_digits_dataset
from fedcoin.application.sim_kinds import KindCounts, make_roster
from fedcoin.errors import ConfigError

DATA = load_digits_dataset()


def test_roster_kinds_claims_and_keys() -> None:
    counts = KindCounts(
        free_riders=1, delta_free_riders=1, disguised_free_riders=1, label_flippers=1,
        sybil_split=3, server_copies=2, inflate_samples=10,
    )  # fmt: skip
    roster = make_roster(DATA, 8, counts, None, seed=1)
    assert roster.kinds == [
        "sybil 1/3", "sybil 2/3", "sybil 3/3", "honest", "honest", "inflate×10",
        "label-flipper", "free-rider", "delta-free-rider", "disguised-free-rider",
        "server-copy", "server-copy",
    ]  # fmt: skip
    sizes = [len(s.data) for s in roster.shards]
    assert roster.claims[5] == 10 * sizes[5] and roster.claims[4] == sizes[4]
    assert len({k.public for k in roster.keys}) == len(roster.keys) == 12
    # a consortium lists the 8 real clients: the 2 extra sybil keys and the copies are not listed
    listed = set(roster.allowed)
    assert len(listed) == 8 and roster.keys[0].public in listed
    assert not listed & {k.public for k in roster.keys[1:3] + roster.keys[-2:]}
    flipper = roster.shards[6].data
    assert not np.array_equal(flipper.y, DATA.y[: len(flipper.y)])


def test_behaviours_send_what_their_kind_says() -> None:
    counts = KindCounts(delta_free_riders=1, disguised_free_riders=1, server_copies=1)
    roster = make_roster(DATA, 4, counts, None, seed=2)
    act = roster.behave()
    g = [np.ones((3, 2), np.float32)]
    prev = [np.zeros((3, 2), np.float32)]
    assert act(0, g, prev, []) is None  # honest clients train
    assert np.array_equal(act(2, g, prev, [])[0], 2 * g[0] - prev[0])  # g + (g − g_prev)
    noisy = act(3, g, prev, [])[0]
    assert 0 < np.abs(noisy - g[0]).max() < 0.01  # g plus small noise
    update = [np.full((3, 2), 3.0, np.float32) + np.arange(6, dtype=np.float32).reshape(3, 2)]
    copy = act(4, g, prev, [update])[0]
    assert copy.shape == update[0].shape and not np.array_equal(copy, update[0])


def test_two_exact_free_riders_are_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="same weights"):
        make_roster(DATA, 4, KindCounts(free_riders=2), None, seed=0)
