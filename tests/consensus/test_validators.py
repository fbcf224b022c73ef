"""The validator set: invariants, hash, quorum arithmetic, the epoch rule, certificates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.consensus.validators import (
    MAX_TOTAL_POWER,
    SignatureCache,
    Validator,
    ValidatorSet,
    select_validators,
    verify_commit,
)
from fedcoin.data.vote import CommitCertificate, CommitSig
from fedcoin.errors import (
    BadVoteSignature,
    CertificateMismatch,
    CertificateNotCanonical,
    InsufficientPower,
    InvalidValidatorSet,
    UnknownValidator,
)
from tests.consensus.bft_helpers import (
    CHAIN,
    KEYS,
    PRECOMMIT,
    make_set,
    value_id,
    vote,
    wrong_signature,
)

PK = sorted(k.public for k in KEYS)
BLOCK = b"committed block"


def certificate(voters: list[int], *, height: int = 5, round_: int = 1) -> CommitCertificate:
    votes = [vote(KEYS[i], height, round_, PRECOMMIT, BLOCK) for i in voters]
    return CommitCertificate.from_votes(votes)


# --- the set ---------------------------------------------------------------------------------
def test_members_are_sorted_distinct_and_positive() -> None:
    with pytest.raises(InvalidValidatorSet):
        ValidatorSet((Validator(PK[1], 1, 0), Validator(PK[0], 1, 0)))
    with pytest.raises(InvalidValidatorSet):
        ValidatorSet((Validator(PK[0], 1, 0), Validator(PK[0], 2, 0)))
    with pytest.raises(InvalidValidatorSet):
        ValidatorSet((Validator(PK[0], 0, 0),))
    with pytest.raises(InvalidValidatorSet):
        ValidatorSet.of([(PK[0], MAX_TOTAL_POWER), (PK[1], 1)])
    assert ValidatorSet.of([(PK[1], 1), (PK[0], 2)]).members[0].pubkey == PK[0]


def test_the_hash_covers_keys_and_powers_not_priorities() -> None:
    base = ValidatorSet.of([(PK[0], 5), (PK[1], 7)])
    moved = ValidatorSet(tuple(replace(v, priority=v.priority + 3) for v in base.members))
    assert moved.hash == base.hash
    assert ValidatorSet.of([(PK[0], 5), (PK[1], 8)]).hash != base.hash
    assert ValidatorSet.of([(PK[0], 5), (PK[2], 7)]).hash != base.hash


@pytest.mark.parametrize(
    ("total", "power", "two_thirds", "one_third"),
    [(3, 1, False, False), (3, 2, False, True), (3, 3, True, True), (30, 20, False, True),
     (30, 21, True, True), (30, 10, False, False), (30, 11, False, True), (40, 27, True, True)],
)  # fmt: skip
def test_quorums_are_strictly_more_than_two_thirds_and_one_third(
    total: int, power: int, two_thirds: bool, one_third: bool
) -> None:
    validators = ValidatorSet.of([(PK[0], total)])
    assert validators.has_two_thirds(power) is two_thirds
    assert validators.has_one_third(power) is one_third


def test_power_of_all_counts_each_member_once() -> None:
    validators = ValidatorSet.of([(PK[0], 5), (PK[1], 7)])
    assert validators.power_of_all([PK[0], PK[0], PK[1], PK[5]]) == 12


# --- the epoch rule --------------------------------------------------------------------------
def test_epoch_rule_takes_the_top_bonds_above_the_minimum_not_jailed() -> None:
    bonds = {PK[0]: 50, PK[1]: 80, PK[2]: 9, PK[3]: 70, PK[4]: 60}
    chosen = select_validators(bonds, [PK[3]], max_validators=2, min_bond=10)
    assert chosen == sorted([(PK[1], 80), (PK[4], 60)])


def test_epoch_rule_breaks_ties_toward_the_lower_key() -> None:
    bonds = {PK[3]: 10, PK[1]: 10, PK[2]: 10}
    assert select_validators(bonds, [], max_validators=2, min_bond=1) == [(PK[1], 10), (PK[2], 10)]


def test_epoch_rule_can_yield_nobody() -> None:
    assert select_validators({PK[0]: 5}, [], max_validators=3, min_bond=6) == []


# --- certificates ----------------------------------------------------------------------------
def test_a_certificate_of_more_than_two_thirds_verifies() -> None:
    verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), certificate([0, 1, 2]))


def test_exactly_two_thirds_is_not_enough() -> None:
    validators = make_set(3)
    with pytest.raises(InsufficientPower):
        verify_commit(validators, CHAIN, 5, value_id(BLOCK), certificate([0, 1]))


def test_a_certificate_for_another_height_or_block_is_refused() -> None:
    cert = certificate([0, 1, 2])
    with pytest.raises(CertificateMismatch):
        verify_commit(make_set(4), CHAIN, 6, value_id(BLOCK), cert)
    with pytest.raises(CertificateMismatch):
        verify_commit(make_set(4), CHAIN, 5, value_id(b"other"), cert)


def test_signatures_must_be_sorted_and_distinct() -> None:
    cert = certificate([0, 1, 2])
    reordered = replace(cert, signatures=tuple(reversed(cert.signatures)))
    with pytest.raises(CertificateNotCanonical):
        verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), reordered)
    doubled = replace(cert, signatures=(cert.signatures[0],) * 3)
    with pytest.raises(CertificateNotCanonical):
        verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), doubled)


def test_every_signer_must_be_a_member_with_a_valid_signature() -> None:
    with pytest.raises(UnknownValidator):
        verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), certificate([0, 1, 2, 7]))
    cert = certificate([0, 1, 2])
    first = cert.signatures[0]
    forged = replace(
        cert, signatures=(CommitSig(first.validator, bytes(64)),) + cert.signatures[1:]
    )
    with pytest.raises(BadVoteSignature):
        verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), forged)


def test_signatures_bind_round_and_chain() -> None:
    cert = certificate([0, 1, 2], round_=1)
    with pytest.raises(BadVoteSignature):
        verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), replace(cert, round=2))
    with pytest.raises(BadVoteSignature):
        verify_commit(make_set(4), "another-chain", 5, value_id(BLOCK), cert)


# --- the signature cache ---------------------------------------------------------------------
def test_the_cache_verifies_once_and_never_remembers_a_failure() -> None:
    cache = SignatureCache(capacity=2)
    good = vote(KEYS[0], 1, 0, PRECOMMIT, BLOCK)
    bad = wrong_signature(good)
    assert cache(good, CHAIN) and cache(good, CHAIN)
    assert (cache.hits, cache.misses) == (1, 1)
    assert not cache(bad, CHAIN) and not cache(bad, CHAIN)
    assert not cache(good, "another-chain")
    assert len(cache) == 1


def test_the_cache_is_bounded_and_evicts_the_oldest() -> None:
    cache = SignatureCache(capacity=2)
    votes = [vote(KEYS[i], 1, 0, PRECOMMIT, BLOCK) for i in range(3)]
    for v in votes:
        assert cache(v, CHAIN)
    assert len(cache) == 2
    misses = cache.misses
    cache(votes[0], CHAIN)  # evicted: verified again
    assert cache.misses == misses + 1


def test_the_cache_is_a_drop_in_verifier_for_certificates() -> None:
    cache = SignatureCache()
    cert = certificate([0, 1, 2])
    verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), cert, cache)
    verify_commit(make_set(4), CHAIN, 5, value_id(BLOCK), cert, cache)
    assert (cache.hits, cache.misses) == (3, 3)
