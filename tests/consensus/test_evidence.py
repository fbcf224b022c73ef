"""Equivocation evidence: detection from two votes, and the rule a block's evidence passes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.consensus.evidence import conflicting, detect, verify_evidence
from fedcoin.data.vote import DuplicateVoteEvidence, Vote
from fedcoin.errors import BadVoteSignature, EvidenceTooOld, NotEquivocation, UnknownValidator
from tests.consensus.bft_helpers import (
    CHAIN,
    KEYS,
    PRECOMMIT,
    PREVOTE,
    make_set,
    vote,
    wrong_signature,
)

VS = make_set(4)
A, B = b"block-A", b"block-B"


def check(evidence: DuplicateVoteEvidence, current: int = 12, max_age: int = 10) -> None:
    verify_evidence(evidence, VS, CHAIN, current_height=current, max_age=max_age)


@pytest.mark.parametrize(("first", "second"), [(A, B), (A, None), (None, B)])
def test_two_votes_for_different_blocks_are_evidence(
    first: bytes | None, second: bytes | None
) -> None:
    a = vote(KEYS[0], 10, 2, PREVOTE, first)
    b = vote(KEYS[0], 10, 2, PREVOTE, second)
    evidence = detect(a, b)
    assert evidence is not None
    assert evidence == detect(b, a)  # canonical whatever the order seen
    assert evidence.validator == KEYS[0].public
    check(evidence)


@pytest.mark.parametrize(
    "b",
    [
        vote(KEYS[0], 10, 2, PREVOTE, A),  # the same vote
        vote(KEYS[1], 10, 2, PREVOTE, B),  # another validator
        vote(KEYS[0], 11, 2, PREVOTE, B),  # another height
        vote(KEYS[0], 10, 3, PREVOTE, B),  # another round
        vote(KEYS[0], 10, 2, PRECOMMIT, B),  # another step
    ],
)
def test_votes_that_may_both_be_honest_are_not_evidence(b: Vote) -> None:
    a = vote(KEYS[0], 10, 2, PREVOTE, A)
    assert detect(a, b) is None
    assert not conflicting(a, b)
    with pytest.raises(NotEquivocation):
        check(DuplicateVoteEvidence(a, b))


def test_evidence_must_be_in_canonical_order() -> None:
    evidence = detect(vote(KEYS[0], 10, 2, PREVOTE, A), vote(KEYS[0], 10, 2, PREVOTE, B))
    assert evidence is not None
    with pytest.raises(NotEquivocation):
        check(DuplicateVoteEvidence(evidence.vote_b, evidence.vote_a))


def test_evidence_expires_and_cannot_come_from_the_future() -> None:
    evidence = detect(vote(KEYS[0], 10, 2, PREVOTE, A), vote(KEYS[0], 10, 2, PREVOTE, B))
    assert evidence is not None
    check(evidence, current=20, max_age=10)
    with pytest.raises(EvidenceTooOld):
        check(evidence, current=21, max_age=10)
    with pytest.raises(EvidenceTooOld):
        check(evidence, current=9)


def test_both_signatures_must_verify_under_a_member() -> None:
    a = vote(KEYS[0], 10, 2, PREVOTE, A)
    b = vote(KEYS[0], 10, 2, PREVOTE, B)
    forged = detect(a, wrong_signature(b))
    assert forged is not None
    with pytest.raises(BadVoteSignature):
        check(forged)
    stranger = detect(vote(KEYS[7], 10, 2, PREVOTE, A), vote(KEYS[7], 10, 2, PREVOTE, B))
    assert stranger is not None
    with pytest.raises(UnknownValidator):
        check(stranger)


def test_a_vote_reattributed_to_another_validator_is_not_evidence_against_it() -> None:
    a = vote(KEYS[0], 10, 2, PREVOTE, A)
    framed = replace(vote(KEYS[1], 10, 2, PREVOTE, B), validator=KEYS[0].public)
    evidence = detect(a, framed)
    assert evidence is not None
    with pytest.raises(BadVoteSignature):
        check(evidence)
