"""Algorithm 1 of "The latest gossip on BFT consensus", line by line, driven by events alone.

Each test names the lines of the paper's pseudocode it reaches. The harness plays the node:
it signs the machine's broadcasts and feeds them back, as a node does with its own votes. Four
validators of power 10 unless a test says otherwise: 2f+1 is three of them, f+1 two.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from fedcoin.consensus import tendermint
from fedcoin.consensus.tendermint_io import (
    ProposalReceived,
    ReportEvidence,
    Step,
    Timeout,
    TimeoutKind,
    Timeouts,
    VoteReceived,
)
from fedcoin.consensus.validators import verify_commit
from fedcoin.data.keys import PrivateKey
from fedcoin.data.vote import NO_ROUND, VoteType
from fedcoin.errors import BadVoteSignature, ConfigError, InvalidVote, UnknownValidator
from tests.consensus.bft_helpers import (
    CHAIN,
    KEYS,
    PRECOMMIT,
    PREVOTE,
    TIMEOUTS,
    Harness,
    commits,
    key_proposing,
    make_set,
    proposal,
    scheduled,
    sent_proposals,
    sent_votes,
    value_id,
    vote,
    wrong_signature,
)

A, B = b"block-A", b"block-B"
VS = make_set(4)


def follower_of(round_: int) -> Harness:
    """A harness for a validator that does not propose in rounds 0..``round_``."""
    for key in KEYS[:4]:
        if all(key_proposing(VS, r) != key for r in range(round_ + 1)):
            return Harness(VS, key)
    raise AssertionError("no such validator")


def others(h: Harness, count: int) -> list[PrivateKey]:
    return h.others[:count]


def lock_on_a_in_round_1(h: Harness) -> None:
    """Round 0 passes with nil; in round 1 the machine sees A proposed and 2f+1 prevotes: locks."""
    h.start()
    h.timeout(TimeoutKind.PROPOSE, 0)
    h.votes(0, PREVOTE, None, others(h, 2))  # 2f+1 nil prevotes: precommit nil [L44]
    h.votes(0, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 0)
    assert h.machine.round == 1
    h.propose(1, A)
    h.votes(1, PREVOTE, A, others(h, 2))
    assert (h.machine.locked_round, h.machine.locked_value) == (1, A)
    h.votes(1, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 1)
    assert h.machine.round == 2


# --- [L10-L21] StartRound ---------------------------------------------------------------------
def test_L10_L14_L19_the_proposer_broadcasts_get_value_on_start() -> None:
    h = Harness(VS, key_proposing(VS, 0))
    actions = h.start()
    ((sent, value),) = sent_proposals(actions)
    assert value == b"block-1-0"
    assert (sent.height, sent.round, sent.pol_round, sent.block_id) == (
        1,
        0,
        NO_ROUND,
        value_id(b"block-1-0"),
    )
    assert sent.proposer == h.key.public  # type: ignore[union-attr]


def test_L15_L16_the_proposer_reproposes_its_valid_value_with_its_round() -> None:
    h = Harness(VS, key_proposing(VS, 1))
    h.start()
    h.propose(0, A)  # the machine prevotes A [L24]
    h.votes(0, PREVOTE, A, others(h, 2))  # 2f+1 prevotes A: valid value A in round 0 [L42-L43]
    assert (h.machine.valid_value, h.machine.valid_round) == (A, 0)
    h.votes(0, PRECOMMIT, None, others(h, 3))
    actions = h.timeout(TimeoutKind.PRECOMMIT, 0)  # round 1: this machine proposes
    ((sent, value),) = sent_proposals(actions)
    assert (value, sent.round, sent.pol_round) == (A, 1, 0)


def test_L20_L21_a_non_proposer_schedules_the_propose_timeout() -> None:
    h = follower_of(0)
    actions = h.start()
    assert sent_proposals(actions) == []
    (timer,) = scheduled(actions)
    assert (timer.kind, timer.height, timer.round, timer.duration_ms) == (
        TimeoutKind.PROPOSE,
        1,
        0,
        TIMEOUTS.propose_ms,
    )
    assert h.machine.current_step == Step.PROPOSE


# --- [L22-L27] prevote on a fresh proposal ---------------------------------------------------
def test_L22_L24_L27_prevote_for_a_valid_proposal() -> None:
    h = follower_of(0)
    h.start()
    (cast,) = sent_votes(h.propose(0, A))
    assert (cast.type, cast.round, cast.block_id) == (PREVOTE, 0, value_id(A))
    assert h.machine.current_step == Step.PREVOTE


def test_L23_L26_prevote_nil_for_an_invalid_proposal() -> None:
    h = follower_of(0)
    h.start()
    (cast,) = sent_votes(h.propose(0, b"bad block"))
    assert (cast.type, cast.block_id) == (PREVOTE, None)
    assert h.machine.current_step == Step.PREVOTE


def test_L23_L26_a_machine_locked_on_another_value_prevotes_nil() -> None:
    h = follower_of(2)
    lock_on_a_in_round_1(h)
    (cast,) = sent_votes(h.propose(2, B))
    assert (cast.round, cast.block_id) == (2, None)


def test_L23_L24_a_machine_locked_on_the_same_value_prevotes_it() -> None:
    h = follower_of(2)
    lock_on_a_in_round_1(h)
    (cast,) = sent_votes(h.propose(2, A))
    assert (cast.round, cast.block_id) == (2, value_id(A))


def test_L22_a_proposal_is_voted_on_only_in_the_propose_step() -> None:
    h = follower_of(0)
    h.start()
    h.timeout(TimeoutKind.PROPOSE, 0)  # prevoted nil already
    assert sent_votes(h.propose(0, A)) == []


# --- [L28-L33] prevote on a re-proposal with a proof of lock ---------------------------------
def test_L28_L30_prevote_a_pol_proposal_once_its_prevotes_are_seen() -> None:
    h = follower_of(1)
    h.start()
    h.timeout(TimeoutKind.PROPOSE, 0)
    h.votes(0, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 0)
    assert sent_votes(h.propose(1, A, pol_round=0)) == []  # no proof of lock seen yet
    # Prevotes of round 0 for A arrive late (2f+1 of them): the proof of lock is complete
    actions = h.votes(0, PREVOTE, A, others(h, 3))
    (cast,) = sent_votes(actions)
    assert (cast.round, cast.block_id) == (1, value_id(A))
    assert h.machine.current_step == Step.PREVOTE


def test_L29_L32_a_pol_older_than_the_lock_for_another_value_gets_nil() -> None:
    h = follower_of(2)
    h.start()
    h.votes(0, PREVOTE, B, others(h, 3))  # 2f+1 prevotes B in round 0, no proposal seen
    h.timeout(TimeoutKind.PROPOSE, 0)
    h.votes(0, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 0)
    h.propose(1, A)
    h.votes(1, PREVOTE, A, others(h, 2))
    assert (h.machine.locked_round, h.machine.locked_value) == (1, A)
    h.votes(1, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 1)
    (cast,) = sent_votes(h.propose(2, B, pol_round=0))  # vr = 0 < lockedRound = 1, B ≠ A
    assert (cast.round, cast.block_id) == (2, None)


def test_L29_L30_a_pol_for_the_locked_value_is_prevoted_whatever_its_round() -> None:
    h = follower_of(2)
    h.start()
    h.votes(0, PREVOTE, A, others(h, 3))
    h.timeout(TimeoutKind.PROPOSE, 0)
    h.votes(0, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 0)
    h.propose(1, A)
    h.votes(1, PREVOTE, A, others(h, 2))
    assert h.machine.locked_round == 1
    h.votes(1, PRECOMMIT, None, others(h, 3))
    h.timeout(TimeoutKind.PRECOMMIT, 1)
    (cast,) = sent_votes(h.propose(2, A, pol_round=0))  # vr = 0 < lockedRound, but v = locked
    assert cast.block_id == value_id(A)


def test_L28_a_pol_round_not_below_the_round_is_refused() -> None:
    h = follower_of(1)
    h.start()
    with pytest.raises(InvalidVote):
        h.propose(0, A, pol_round=0)
    assert h.machine.current_step == Step.PROPOSE


# --- [L34-L35] 2f+1 prevotes of any kind ----------------------------------------------------
def test_L34_L35_any_2f1_prevotes_schedule_the_prevote_timeout_once() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, A)  # prevotes A
    actions = h.votes(0, PREVOTE, None, others(h, 1))
    assert scheduled(actions) == []  # two votes: not yet 2f+1
    actions = h.votes(0, PREVOTE, B, others(h, 2)[1:])
    (timer,) = scheduled(actions)
    assert (timer.kind, timer.round, timer.duration_ms) == (
        TimeoutKind.PREVOTE,
        0,
        TIMEOUTS.prevote_ms,
    )
    assert scheduled(h.votes(0, PREVOTE, None, others(h, 3)[2:])) == []  # first time only


# --- [L36-L43] lock on 2f+1 prevotes for the proposal ----------------------------------------
def test_L36_L43_lock_precommit_and_valid_value_on_2f1_prevotes() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, A)
    actions = h.votes(0, PREVOTE, A, others(h, 2))
    (cast,) = sent_votes(actions)
    assert (cast.type, cast.block_id) == (PRECOMMIT, value_id(A))
    m = h.machine
    assert (m.locked_value, m.locked_round, m.valid_value, m.valid_round) == (A, 0, A, 0)
    assert m.current_step == Step.PRECOMMIT


def test_L36_L42_in_the_precommit_step_only_the_valid_value_moves() -> None:
    h = follower_of(0)
    h.start()
    h.timeout(TimeoutKind.PROPOSE, 0)  # prevote nil
    h.votes(0, PREVOTE, A, others(h, 2))
    h.timeout(TimeoutKind.PREVOTE, 0)  # precommit nil
    h.votes(0, PREVOTE, A, others(h, 3)[2:])  # 2f+1 prevotes A, but no proposal yet
    assert h.machine.valid_value is None
    actions = h.propose(0, A)  # the proposal arrives late
    assert sent_votes(actions) == []
    m = h.machine
    assert (m.valid_value, m.valid_round, m.locked_value, m.locked_round) == (A, 0, None, -1)


def test_L36_an_invalid_value_is_never_locked() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, b"bad")  # prevote nil
    h.votes(0, PREVOTE, b"bad", others(h, 3))
    m = h.machine
    assert (m.locked_value, m.valid_value) == (None, None)
    assert h.valid_calls == [b"bad"]  # valid(v) asked once per value


# --- [L44-L46] 2f+1 nil prevotes -------------------------------------------------------------
def test_L44_L46_precommit_nil_on_2f1_nil_prevotes() -> None:
    h = follower_of(0)
    h.start()
    h.timeout(TimeoutKind.PROPOSE, 0)
    (cast,) = sent_votes(h.votes(0, PREVOTE, None, others(h, 2)))
    assert (cast.type, cast.block_id) == (PRECOMMIT, None)
    assert h.machine.current_step == Step.PRECOMMIT


# --- [L47-L48] 2f+1 precommits of any kind ---------------------------------------------------
def test_L47_L48_any_2f1_precommits_schedule_the_precommit_timeout_once() -> None:
    h = follower_of(0)
    h.start()
    h.votes(0, PRECOMMIT, A, others(h, 1))
    actions = h.votes(0, PRECOMMIT, None, others(h, 3)[1:])
    (timer,) = scheduled(actions)
    assert (timer.kind, timer.round) == (TimeoutKind.PRECOMMIT, 0)
    h.timeout(TimeoutKind.PROPOSE, 0)
    assert all(
        t.kind != TimeoutKind.PRECOMMIT for t in scheduled(h.votes(0, PREVOTE, None, others(h, 3)))
    )


# --- [L49-L54] decide ------------------------------------------------------------------------
def test_L49_L51_decide_on_the_proposal_and_2f1_precommits() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, A)
    h.votes(0, PREVOTE, A, others(h, 2))  # the machine precommits A itself
    (decided,) = commits(h.votes(0, PRECOMMIT, A, others(h, 2)))
    assert (decided.height, decided.value) == (1, A)
    verify_commit(VS, CHAIN, 1, value_id(A), decided.certificate)
    assert h.machine.decision == decided


def test_L49_decide_on_precommits_of_an_earlier_round() -> None:
    h = follower_of(1)
    h.start()
    h.propose(0, A)
    h.feed(Timeout(TimeoutKind.PRECOMMIT, 1, 0))
    assert h.machine.round == 1
    (decided,) = commits(h.votes(0, PRECOMMIT, A, others(h, 3)))
    assert decided.certificate.round == 0
    assert decided.value == A


def test_L49_L50_no_decision_for_an_invalid_value() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, b"bad")
    assert commits(h.votes(0, PRECOMMIT, b"bad", others(h, 3))) == []
    assert h.machine.decision is None


def test_L52_L54_a_new_height_resets_locks_and_starts_round_0() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, A)
    h.votes(0, PREVOTE, A, others(h, 2))
    h.votes(0, PRECOMMIT, A, others(h, 2))
    assert h.feed(VoteReceived(vote(KEYS[0], 1, 0, PREVOTE, B))) == []  # decided: ignores
    h.height = 2
    h.start()
    m = h.machine
    assert (m.height, m.round, m.current_step, m.decision) == (2, 0, Step.PROPOSE, None)
    assert (m.locked_value, m.locked_round, m.valid_value, m.valid_round) == (None, -1, None, -1)


# --- [L55-L56] round skipping ----------------------------------------------------------------
def test_L55_L56_f1_messages_of_a_higher_round_skip_to_it() -> None:
    h = follower_of(0)
    h.start()
    assert h.votes(5, PREVOTE, A, others(h, 1)) == []  # one of four: not f+1
    actions = h.votes(5, PRECOMMIT, None, others(h, 2)[1:])
    assert h.machine.round == 5
    assert scheduled(actions)[0].round == 5


def test_L55_round_skip_counts_power_not_heads() -> None:
    vs = make_set(4, [1, 1, 1, 10])
    h = Harness(vs, KEYS[0])
    h.start()
    h.votes(3, PREVOTE, None, [KEYS[1], KEYS[2]])  # 2 of 13: not f+1
    assert h.machine.round == 0
    h.votes(3, PREVOTE, None, [KEYS[3]])  # 10 of 13 > 1/3
    assert h.machine.round == 3


# --- [L57-L67] timeouts ----------------------------------------------------------------------
def test_L57_L60_propose_timeout_prevotes_nil() -> None:
    h = follower_of(0)
    h.start()
    (cast,) = sent_votes(h.timeout(TimeoutKind.PROPOSE, 0))
    assert (cast.type, cast.block_id) == (PREVOTE, None)
    assert h.machine.current_step == Step.PREVOTE


def test_L58_a_stale_propose_timeout_does_nothing() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, A)
    assert h.timeout(TimeoutKind.PROPOSE, 0) == []  # already prevoted
    assert h.feed(Timeout(TimeoutKind.PROPOSE, 7, 0)) == []  # another height


def test_L61_L64_prevote_timeout_precommits_nil() -> None:
    h = follower_of(0)
    h.start()
    h.propose(0, A)
    h.votes(0, PREVOTE, None, others(h, 2))
    (cast,) = sent_votes(h.timeout(TimeoutKind.PREVOTE, 0))
    assert (cast.type, cast.block_id) == (PRECOMMIT, None)
    assert h.machine.current_step == Step.PRECOMMIT
    assert h.timeout(TimeoutKind.PREVOTE, 0) == []  # [L62] only in the prevote step


def test_L65_L67_precommit_timeout_starts_the_next_round() -> None:
    h = follower_of(1)
    h.start()
    actions = h.timeout(TimeoutKind.PRECOMMIT, 0)
    assert h.machine.round == 1
    (timer,) = scheduled(actions)
    assert timer.duration_ms == TIMEOUTS.propose_ms + TIMEOUTS.propose_delta_ms
    assert h.feed(Timeout(TimeoutKind.PRECOMMIT, 1, 0)) == []  # [L66] stale round


def test_timeouts_grow_with_the_round() -> None:
    for kind in TimeoutKind:
        durations = [TIMEOUTS.duration(kind, r) for r in range(5)]
        assert durations == sorted(set(durations))


@pytest.mark.parametrize("bad", [{"propose_ms": 0}, {"prevote_delta_ms": -1}])
def test_timeouts_must_be_positive_and_never_shrink(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        Timeouts(**bad)


# --- counting by power, validation, evidence, followers --------------------------------------
def test_quorums_count_power_not_heads() -> None:
    vs = make_set(4, [1, 1, 1, 10])
    h = Harness(vs, KEYS[0])
    h.start()
    h.feed(proposal(vs, 1, 0, A))
    assert h.machine.locked_value is None
    h.votes(0, PREVOTE, A, [KEYS[1], KEYS[2]])  # 3 of 13 (own vote included)
    assert h.machine.locked_value is None
    h.votes(0, PREVOTE, A, [KEYS[3]])  # 13 of 13
    assert h.machine.locked_value == A


def test_a_second_different_vote_is_evidence_and_counts_for_its_own_block() -> None:
    h = follower_of(0)
    h.start()
    h.timeout(TimeoutKind.PROPOSE, 0)  # own prevote: nil
    x, y, z = others(h, 3)
    h.votes(0, PREVOTE, A, [x, y])  # 2f+1 of any kind: prevote timer, no quorum for a value
    actions = h.votes(0, PREVOTE, None, [x])  # x equivocates
    (report,) = [a for a in actions if isinstance(a, ReportEvidence)]
    assert report.evidence.validator == x.public
    assert h.machine.current_step == Step.PREVOTE  # nil has 20 of 40: no precommit yet
    assert h.votes(0, PREVOTE, A, [x]) == []  # an exact repeat: not evidence, not counted
    assert h.votes(0, PREVOTE, B, [x]) == []  # a third vote: dropped (bounded memory)
    # z's nil prevote makes 2f+1 for nil only because x's second message counts (the paper)
    (cast,) = sent_votes(h.votes(0, PREVOTE, None, [z]))
    assert (cast.type, cast.block_id) == (PRECOMMIT, None)


def test_bad_votes_raise_and_change_nothing() -> None:
    h = follower_of(0)
    h.start()
    good = vote(others(h, 1)[0], 1, 0, PREVOTE, A)
    with pytest.raises(BadVoteSignature):
        h.feed(VoteReceived(wrong_signature(good)))
    with pytest.raises(UnknownValidator):
        h.feed(VoteReceived(vote(KEYS[8], 1, 0, PREVOTE, A)))
    with pytest.raises(InvalidVote):
        h.feed(VoteReceived(replace(good, type=VoteType.PROPOSAL)))
    # The good vote still counts once: nothing of the bad ones was recorded
    assert h.feed(VoteReceived(good)) == []
    assert h.machine.current_step == Step.PROPOSE


def test_a_proposal_from_another_validator_is_refused() -> None:
    h = follower_of(0)
    h.start()
    theirs = proposal(VS, 1, 1, A)  # round 1's proposer signs for round 1 ...
    claimed = replace(theirs.proposal, round=0)  # ... and claims round 0
    with pytest.raises(InvalidVote):
        h.feed(ProposalReceived(claimed, A))
    honest = proposal(VS, 1, 0, A)
    with pytest.raises(InvalidVote):
        h.feed(ProposalReceived(honest.proposal, B))  # the value is not the block it names
    forged = replace(honest.proposal, signature=theirs.proposal.signature)
    with pytest.raises(BadVoteSignature):
        h.feed(ProposalReceived(forged, A))
    assert h.machine.current_step == Step.PROPOSE
    assert sent_votes(h.feed(honest)) != []  # the real one still counts


def test_messages_of_other_heights_are_ignored() -> None:
    h = follower_of(0)
    h.start()
    assert h.feed(VoteReceived(vote(KEYS[1], 2, 0, PREVOTE, A))) == []
    assert h.feed(proposal(VS, 0, 0, A)) == []


def test_a_follower_decides_without_voting() -> None:
    h = Harness(VS, None)
    actions = h.start()
    actions += h.propose(0, A)
    actions += h.votes(0, PREVOTE, A, KEYS[:4])
    actions += h.votes(0, PRECOMMIT, A, KEYS[:3])
    assert sent_votes(actions) == [] and sent_proposals(actions) == []
    assert [c.value for c in commits(actions)] == [A]


def test_every_line_of_algorithm_1_is_marked_in_the_code() -> None:
    """Lines 1-67 of the paper's pseudocode are each findable as ``[Lnn]`` or ``[La-Lb]``."""
    source = Path(tendermint.__file__).read_text()
    marked: set[int] = set()
    for first, last in re.findall(r"\[L(\d+)(?:-L(\d+))?\]", source):
        marked.update(range(int(first), int(last or first) + 1))
    assert set(range(1, 68)) - marked == set()
