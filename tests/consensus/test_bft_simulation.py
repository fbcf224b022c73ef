"""Safety and liveness of the Tendermint machine in a simulated network (``bft_sim.py``).

Safety: with f Byzantine validators (f < N/3) that equivocate as proposers and as voters, no two
honest machines decide different blocks at any height, and every equivocator is caught.
Liveness: with f crashed validators decisions continue; with more than N/3 crashed they stop,
and resume with no fork once the crashed ones come back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.data.keys import PrivateKey
from tests.consensus.bft_helpers import KEYS
from tests.consensus.bft_sim import SimNetwork

HEIGHTS = 8
LIMIT_MS = 600_000


@pytest.mark.parametrize(
    ("n", "byzantine", "seed"),
    [(4, {1}, 0), (4, {3}, 1), (7, {0, 4}, 2), (7, {2, 5}, 3)],
)
def test_byzantine_equivocators_never_split_honest_nodes(
    tmp_path: Path, n: int, byzantine: set[int], seed: int
) -> None:
    net = SimNetwork(n, tmp_path, byzantine=byzantine, seed=seed)
    net.start()
    net.run_until(
        LIMIT_MS,
        stop=lambda: net.all_reached(HEIGHTS, net.honest) or net.top_height() > 3 * HEIGHTS,
    )
    assert net.check_agreement() >= HEIGHTS
    assert net.all_reached(HEIGHTS, net.honest)
    # Each equivocator was caught by a verified piece of evidence, and only they were
    assert net.evidence_against == {KEYS[i].public for i in byzantine}
    assert net.errors == []


def test_equivocating_proposals_actually_split_the_first_prevotes(tmp_path: Path) -> None:
    """The attack is real: some honest nodes saw the twin block first (a test that can fail)."""
    net = SimNetwork(4, tmp_path, byzantine={1}, seed=0)
    net.start()
    net.run_until(
        LIMIT_MS,
        stop=lambda: net.all_reached(HEIGHTS, net.honest) or net.top_height() > 3 * HEIGHTS,
    )
    evil_messages = [
        m for msgs in net.log.values() for m in msgs if getattr(m, "value", b"").endswith(b"-evil")
    ]
    assert evil_messages


@pytest.mark.parametrize(("n", "crashed"), [(4, {2}), (7, {1, 6})])
def test_decisions_continue_with_f_crashed(tmp_path: Path, n: int, crashed: set[int]) -> None:
    net = SimNetwork(n, tmp_path, seed=4)
    for i in crashed:
        net.crash(i)
    net.start()
    live = [node for node in net.nodes if node.index not in crashed]
    net.run_until(LIMIT_MS, stop=lambda: net.all_reached(HEIGHTS, live))
    assert net.all_reached(HEIGHTS, live)
    assert net.check_agreement() >= HEIGHTS
    # One process, one signature cache: each vote is verified once, not once per node
    assert net.signatures.hits > net.signatures.misses


@pytest.mark.parametrize(("n", "crashed"), [(4, {0, 3}), (7, {1, 2, 3})])
def test_more_than_a_third_crashed_stops_then_resumes(
    tmp_path: Path, n: int, crashed: set[int]
) -> None:
    net = SimNetwork(n, tmp_path, seed=5)
    net.start()
    net.run_until(LIMIT_MS, stop=lambda: net.all_reached(3, net.nodes))
    for i in crashed:
        net.crash(i)
    stalled_at = net.top_height()
    net.run_until(net.now + 60_000)  # a minute of virtual time: many rounds of timeouts
    # Nothing can be committed without more than 2/3 of the power (at most the height in flight)
    assert net.top_height() <= stalled_at + 1
    stuck = net.top_height()
    net.run_until(net.now + 60_000)
    assert net.top_height() == stuck
    for i in crashed:
        net.recover(i)
    net.run_until(net.now + LIMIT_MS, stop=lambda: net.all_reached(stuck + 3, net.nodes))
    assert net.all_reached(stuck + 3, net.nodes)
    assert net.check_agreement() >= stuck + 3


def test_a_restarted_validator_does_not_sign_against_its_persisted_state(tmp_path: Path) -> None:
    """The simulated nodes sign through real private-validator files: after a crash and a
    restart every signature they make is still at a strictly later step or identical."""
    net = SimNetwork(4, tmp_path, seed=6)
    net.start()
    net.run_until(LIMIT_MS, stop=lambda: net.all_reached(2, net.nodes))
    net.crash(0)
    before = net.nodes[0].privval.last  # type: ignore[union-attr]
    net.recover(0)
    net.run_until(net.now + LIMIT_MS, stop=lambda: net.all_reached(5, net.nodes))
    after = net.nodes[0].privval.last  # type: ignore[union-attr]
    assert after.hrs > before.hrs
    assert net.check_agreement() >= 5
    assert isinstance(KEYS[0], PrivateKey)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), byzantine=st.integers(0, 3))
def test_agreement_holds_for_any_delivery_order(seed: int, byzantine: int) -> None:
    with tempfile.TemporaryDirectory() as fresh:  # each example its own validator files
        net = SimNetwork(4, Path(fresh), byzantine={byzantine}, seed=seed)
        net.start()
        net.run_until(LIMIT_MS, stop=lambda: net.all_reached(4, net.honest))
        assert net.check_agreement() >= 4


def test_the_agreement_check_catches_a_split_beyond_the_fault_bound(tmp_path: Path) -> None:
    """With half the power Byzantine (beyond f < N/3) the same attack does split honest nodes:
    the safety assertions above are able to fail."""
    splits = 0
    for seed in range(6):
        split = SimNetwork(4, tmp_path / str(seed), byzantine={0, 1}, seed=seed)
        split.start()
        split.run_until(20_000, stop=split.disagrees)
        try:
            split.check_agreement()
        except AssertionError:
            splits += 1
    assert splits > 0
