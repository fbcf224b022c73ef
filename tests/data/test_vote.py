"""Votes, proposals, certificates and evidence: canonical encodings, signatures and tags."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcoin.data.curve import is_small_order
from fedcoin.data.encoding import encode, hash_of
from fedcoin.data.keys import TAG_BLOCK, TAG_TX, PrivateKey
from fedcoin.data.vote import (
    NO_ROUND,
    TAG_PROPOSAL,
    TAG_VOTE,
    UNSIGNED,
    CommitCertificate,
    CommitSig,
    DuplicateVoteEvidence,
    Proposal,
    SignPayload,
    Vote,
    VoteType,
)
from fedcoin.errors import DecodeError, SmallOrderKey

KEY = PrivateKey.from_seed(b"\x07" * 32)
CHAIN = "fedcoin-test"

hashes = st.binary(min_size=32, max_size=32)
keys = st.binary(min_size=32, max_size=32).filter(lambda k: not is_small_order(k))
sigs = st.binary(min_size=64, max_size=64)
heights = st.integers(0, 2**64 - 1)
rounds = st.integers(0, 2**32 - 1)
votes = st.builds(
    Vote,
    heights,
    rounds,
    st.sampled_from([VoteType.PREVOTE, VoteType.PRECOMMIT]),
    st.none() | hashes,
    keys,
    sigs,
)
proposals = st.builds(Proposal, heights, rounds, st.integers(-1, 2**32), hashes, keys, sigs)
certificates = st.builds(
    CommitCertificate,
    heights,
    rounds,
    hashes,
    st.lists(st.builds(CommitSig, keys, sigs), max_size=8).map(tuple),
)


def signed_vote(block_id: bytes | None = b"\x01" * 32, **changes: int) -> Vote:
    fields = {"height": 3, "round": 1, "type": VoteType.PRECOMMIT} | changes
    unsigned = Vote(
        fields["height"], fields["round"], fields["type"], block_id, KEY.public, UNSIGNED
    )
    return unsigned.with_signature(KEY.sign(TAG_VOTE, unsigned.digest(CHAIN)))


@given(votes)
def test_vote_round_trips(vote: Vote) -> None:
    assert Vote.decode(vote.encode()) == vote


@given(proposals)
def test_proposal_round_trips(proposal: Proposal) -> None:
    assert Proposal.decode(proposal.encode()) == proposal


@given(certificates)
def test_certificate_round_trips(cert: CommitCertificate) -> None:
    assert CommitCertificate.decode(cert.encode()) == cert


@given(votes, votes)
def test_evidence_round_trips(a: Vote, b: Vote) -> None:
    evidence = DuplicateVoteEvidence(a, b)
    assert DuplicateVoteEvidence.decode(evidence.encode()) == evidence


def test_nil_and_a_block_id_encode_differently() -> None:
    nil = signed_vote(None)
    assert nil.to_wire()[3] == []
    assert signed_vote().to_wire()[3] == [b"\x01" * 32]
    assert Vote.decode(nil.encode()).block_id is None


def test_a_vote_fits_the_512_byte_frame_bound() -> None:
    worst = Vote(2**64 - 1, 2**32 - 1, 2, b"\xff" * 32, b"\xff" * 32, b"\xff" * 64)
    assert len(worst.encode()) <= 512


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        encode([1, 2]),
        encode([1, 0, 1, [b"\x01" * 31], b"\x00" * 32, b"\x00" * 64]),  # short hash
        encode([1, 0, 1, [b"\x01" * 32, b"\x01" * 32], b"\x00" * 32, b"\x00" * 64]),  # 2 ids
        encode([-1, 0, 1, [], b"\x00" * 32, b"\x00" * 64]),  # negative height
    ],
)
def test_malformed_votes_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        Vote.decode(raw)


def test_the_signed_payload_is_the_six_fields_of_the_design() -> None:
    vote = signed_vote()
    assert vote.payload(CHAIN).to_wire() == [CHAIN.encode(), 3, 1, 2, [b"\x01" * 32], -1]
    proposal = Proposal(3, 2, 1, b"\x02" * 32, KEY.public, UNSIGNED)
    payload = proposal.payload(CHAIN)
    assert payload == SignPayload(CHAIN, 3, 2, VoteType.PROPOSAL, b"\x02" * 32, 1)
    assert proposal.digest(CHAIN) == hash_of(payload)


def test_a_signed_vote_verifies_and_any_change_breaks_it() -> None:
    vote = signed_vote()
    assert vote.signature_ok(CHAIN)
    assert not vote.signature_ok("another-chain")
    assert not replace(vote, round=2).signature_ok(CHAIN)
    assert not replace(vote, height=4).signature_ok(CHAIN)
    assert not replace(vote, type=VoteType.PREVOTE).signature_ok(CHAIN)
    assert not replace(vote, block_id=None).signature_ok(CHAIN)
    other = PrivateKey.from_seed(b"\x08" * 32)
    assert not replace(vote, validator=other.public).signature_ok(CHAIN)


def test_signatures_are_domain_separated() -> None:
    """A vote's signature is not a proposal's, a block's or a transaction's."""
    vote = signed_vote(type=VoteType.PREVOTE)
    for tag in (TAG_PROPOSAL, TAG_BLOCK, TAG_TX):
        wrong = vote.with_signature(KEY.sign(tag, vote.digest(CHAIN)))
        assert not wrong.signature_ok(CHAIN)
    proposal = Proposal(3, 1, NO_ROUND, b"\x01" * 32, KEY.public, UNSIGNED)
    as_vote_tag = proposal.with_signature(KEY.sign(TAG_VOTE, proposal.digest(CHAIN)))
    assert not as_vote_tag.signature_ok(CHAIN)
    right = proposal.with_signature(KEY.sign(TAG_PROPOSAL, proposal.digest(CHAIN)))
    assert right.signature_ok(CHAIN)


def test_a_proposal_pol_round_must_precede_its_round() -> None:
    assert Proposal(1, 2, -1, b"\x01" * 32, KEY.public, UNSIGNED).well_formed
    assert Proposal(1, 2, 1, b"\x01" * 32, KEY.public, UNSIGNED).well_formed
    assert not Proposal(1, 2, 2, b"\x01" * 32, KEY.public, UNSIGNED).well_formed
    assert not Proposal(1, 2, -2, b"\x01" * 32, KEY.public, UNSIGNED).well_formed


def test_a_certificate_is_built_sorted_by_validator() -> None:
    keys = [PrivateKey.from_seed(bytes([i]) * 32) for i in range(1, 6)]
    precommits = []
    for key in keys:
        unsigned = Vote(9, 0, VoteType.PRECOMMIT, b"\x05" * 32, key.public, UNSIGNED)
        precommits.append(unsigned.with_signature(key.sign(TAG_VOTE, unsigned.digest(CHAIN))))
    cert = CommitCertificate.from_votes(precommits)
    assert [s.validator for s in cert.signatures] == sorted(k.public for k in keys)
    assert all(cert.vote_of(s).signature_ok(CHAIN) for s in cert.signatures)
    with pytest.raises(ValueError):
        CommitCertificate.from_votes([replace(precommits[0], block_id=None)])


def test_a_vote_from_a_small_order_key_does_not_decode() -> None:
    raw = encode([1, 0, 1, [], bytes(32), b"\x00" * 64])  # the identity point as validator
    with pytest.raises(SmallOrderKey):
        Vote.decode(raw)
