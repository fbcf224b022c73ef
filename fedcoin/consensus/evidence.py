"""Equivocation: two signed votes of one validator that cannot both be honest.

DESIGN §5: two votes by one validator with the same (height, round, type) and different block
ids — nil counts as an id — are evidence; a block that includes it slashes and jails the
validator. ``detect`` builds the canonical evidence from two votes a node has seen (no signature
check: the node checked each vote when it arrived); ``verify_evidence`` is the rule a block's
evidence must pass: well formed, not too old, both signatures valid under the set of that height.
"""

from __future__ import annotations

from fedcoin.consensus.validators import ValidatorSet, VoteVerifier, check_signature, verify_vote
from fedcoin.data.vote import DuplicateVoteEvidence, Vote, block_id_key
from fedcoin.errors import EvidenceTooOld, NotEquivocation


def conflicting(a: Vote, b: Vote) -> bool:
    """Same validator, height, round and type, different block ids (nil included)."""
    return (
        a.validator == b.validator
        and a.height == b.height
        and a.round == b.round
        and a.type == b.type
        and a.block_id != b.block_id
    )


def detect(a: Vote, b: Vote) -> DuplicateVoteEvidence | None:
    """The canonical evidence that ``a`` and ``b`` equivocate, or ``None`` if they do not."""
    if not conflicting(a, b) or not a.well_formed:
        return None
    first, second = sorted((a, b), key=lambda v: block_id_key(v.block_id))
    return DuplicateVoteEvidence(first, second)


def verify_evidence(
    evidence: DuplicateVoteEvidence,
    validators: ValidatorSet,
    chain_id: str,
    *,
    current_height: int,
    max_age: int,
    check: VoteVerifier = check_signature,
) -> None:
    """Raise unless ``evidence`` proves an equivocation under ``validators`` (its height's set)."""
    a, b = evidence.vote_a, evidence.vote_b
    # The two votes are one validator's, same height, round and type, different blocks
    if not conflicting(a, b) or not a.well_formed:
        raise NotEquivocation(validator=a.validator, height=a.height)
    # Canonical order: the smaller block id first (nil first)
    if block_id_key(a.block_id) >= block_id_key(b.block_id):
        raise NotEquivocation(reason="votes out of canonical order")
    # Not from the future, and at most max_age blocks old
    if a.height > current_height or current_height - a.height > max_age:
        raise EvidenceTooOld(height=a.height, current=current_height, max_age=max_age)
    # Both signatures verify under a member's key
    verify_vote(a, validators, chain_id, check)
    verify_vote(b, validators, chain_id, check)
