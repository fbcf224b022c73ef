"""Properties of one Tendermint machine under arbitrary event sequences (Hypothesis).

Whatever arrives, in whatever order — proposals of any round and value, votes of any member
for anything, stale and current timeouts, forged signatures — the machine:
- raises nothing but a ``FedCoinError`` (a node's loop survives anything a peer sends);
- never asks to sign two different votes for one (round, type), nor two proposals per round;
- keeps its lock behind its round and its valid value at least as recent as its lock;
- decides at most once per height, and only with a certificate that verifies.
"""

from __future__ import annotations

from hypothesis import event as note_event
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus.tendermint_io import (
    Broadcast,
    Commit,
    Event,
    Timeout,
    TimeoutKind,
    VoteReceived,
)
from fedcoin.consensus.validators import verify_commit
from fedcoin.data.vote import Proposal, Vote, VoteType
from fedcoin.errors import FedCoinError
from tests.consensus.bft_helpers import (
    CHAIN,
    KEYS,
    Harness,
    make_set,
    proposal,
    value_id,
    vote,
    wrong_signature,
)

VS = make_set(4, [10, 20, 30, 15])
VALUES = [b"block-A", b"block-B", b"bad-block"]
# Mostly block A and low rounds, so that quorums, locks and decisions do happen
choice = st.sampled_from([0, 0, 0, 0, 1, 2, -1, -1])
rounds = st.sampled_from([0, 0, 0, 0, 0, 0, 0, 0, 1, 2])

proposals = st.builds(
    lambda r, v, pol: proposal(VS, 1, r, VALUES[max(v, 0)], pol if pol < r else -1),
    rounds,
    choice,
    st.integers(-1, 2),
)
votes = st.builds(
    lambda who, r, t, v: VoteReceived(vote(KEYS[who], 1, r, t, None if v < 0 else VALUES[v])),
    st.integers(0, 4),  # KEYS[4] is not a member
    rounds,
    st.sampled_from([VoteType.PREVOTE, VoteType.PRECOMMIT]),
    choice,
)
forged = st.builds(
    lambda who, r: VoteReceived(wrong_signature(vote(KEYS[who], 1, r, VoteType.PREVOTE, None))),
    st.integers(0, 3),
    rounds,
)
timeouts = st.builds(
    Timeout, st.sampled_from(list(TimeoutKind)), st.sampled_from([1, 1, 1, 0, 2]), rounds
)
# Votes dominate, as on the wire
events = st.one_of(proposals, votes, votes, votes, votes, votes, forged, timeouts)
# An honest run's messages (A proposed in round 0, re-proposed in round 1, everyone's votes for
# it, the timers of both rounds) mixed with arbitrary noise, in any order: locks and decisions
# happen often, and so do timers that arrive after the step they were set for
A = VALUES[0]
honest_run: list[Event[bytes]] = [proposal(VS, 1, 0, A), proposal(VS, 1, 1, A, 0)]
honest_run += [
    VoteReceived(vote(KEYS[i], 1, r, t, A))
    for i in range(4)
    for r in (0, 1)
    for t in (VoteType.PREVOTE, VoteType.PRECOMMIT)
]
honest_run += [Timeout(kind, 1, r) for kind in TimeoutKind for r in (0, 1)]
scripts = st.lists(events, max_size=60).flatmap(lambda noise: st.permutations(honest_run + noise))


@settings(max_examples=300, deadline=None)
@given(me=st.integers(0, 3), script=st.lists(events, max_size=120) | scripts)
def test_any_event_sequence_keeps_the_invariants(me: int, script: list[Event[bytes]]) -> None:
    h = Harness(VS, KEYS[me])
    actions = h.start()
    for step in script:
        try:
            actions += h.feed(step)
        except FedCoinError:
            continue
        m = h.machine
        assert m.locked_round <= m.round
        assert m.valid_round >= m.locked_round
        if m.locked_value is not None:
            assert m.locked_round >= 0
    signed_votes: dict[tuple[int, int], Vote] = {}
    proposals: dict[int, Proposal] = {}
    for action in actions:
        if isinstance(action, Broadcast) and isinstance(action.message, Vote):
            key = (action.message.round, action.message.type)
            assert signed_votes.setdefault(key, action.message) == action.message
        elif isinstance(action, Broadcast) and isinstance(action.message, Proposal):
            assert proposals.setdefault(action.message.round, action.message) == action.message
    decided = [a for a in actions if isinstance(a, Commit)]
    assert len(decided) <= 1
    note_event(f"decided: {bool(decided)}; locked: {h.machine.locked_round >= 0}")
    for commit in decided:
        verify_commit(VS, CHAIN, 1, value_id(commit.value), commit.certificate)
        assert not commit.value.startswith(b"bad")
