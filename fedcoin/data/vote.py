"""Tendermint's signed messages: votes, proposals, commit certificates and equivocation evidence.

Validators order blocks by voting on them (DESIGN §5). Every message here is a frozen record with
the canonical encoding of ``data/encoding.py``. What a validator signs is always the same six
fields, ``[chain_id, height, round, type, block_id, pol_round]`` (``SignPayload``), hashed and
signed under a tag of its own: ``fedcoin/vote/v1`` for prevotes and precommits,
``fedcoin/proposal/v1`` for proposals. A signature for one chain, height, round, step or block
is therefore useless for any other. ``block_id`` is the block hash, or ``None`` (nil) in a vote
for no block; ``pol_round`` is ``-1`` in every vote and in a proposal without a proof of lock.

A vote does not carry the chain id: the receiver verifies it under its own chain id, so a vote
for another network simply fails its signature check.

Simplification: a vote names its validator by public key (32 bytes), not by an index into the
set; a vote is still well under the 512-byte frame bound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from fedcoin.data.encoding import (
    HASH,
    I64,
    PUBKEY,
    SIGNATURE,
    U8,
    U32,
    U64,
    Record,
    hash_of,
    list_of,
    nested,
    optional,
    text,
    wire,
)
from fedcoin.data.keys import verify

TAG_VOTE = b"fedcoin/vote/v1"
TAG_PROPOSAL = b"fedcoin/proposal/v1"

#: The placeholder signature of a message the consensus machine wants sent but has not signed.
UNSIGNED = bytes(64)
#: Upper bound on the members of a validator set (and so on the signatures of a certificate).
MAX_VALIDATORS = 1024
#: ``pol_round`` of a proposal without a proof of lock, and of every vote.
NO_ROUND = -1


class VoteType(IntEnum):
    """The ``type`` field of the signed payload (CometBFT's numbers)."""

    PREVOTE = 1
    PRECOMMIT = 2
    PROPOSAL = 32


@dataclass(frozen=True, slots=True)
class SignPayload(Record):
    """What a validator signs: ``sha256`` of this record's encoding, under the message's tag."""

    chain_id: str = wire(text(64))
    """The network's chain id."""
    height: int = wire(U64)
    """The height being decided."""
    round: int = wire(U32)
    """The round within the height."""
    type: int = wire(U8)
    """A ``VoteType``."""
    block_id: bytes | None = wire(optional(HASH))
    """The block's hash, or nil (``None``), packed as ``[]`` or ``[hash]``."""
    pol_round: int = wire(I64)
    """The proposal's proof-of-lock round, ``-1`` if none (always ``-1`` for votes)."""


@dataclass(frozen=True, slots=True)
class Vote(Record):
    """A prevote or precommit of one validator at one height and round, for a block or nil."""

    height: int = wire(U64)
    """The height being decided."""
    round: int = wire(U32)
    """The round within the height."""
    type: int = wire(U8)
    """``VoteType.PREVOTE`` or ``VoteType.PRECOMMIT``."""
    block_id: bytes | None = wire(optional(HASH))
    """The block voted for, or ``None`` for nil."""
    validator: bytes = wire(PUBKEY)
    """The voter's public key."""
    signature: bytes = wire(SIGNATURE)
    """Ed25519 over ``fedcoin/vote/v1 || sha256(SignPayload)``; ``UNSIGNED`` before signing."""

    def payload(self, chain_id: str) -> SignPayload:
        return SignPayload(chain_id, self.height, self.round, self.type, self.block_id, NO_ROUND)

    def digest(self, chain_id: str) -> bytes:
        return hash_of(self.payload(chain_id))

    def signature_ok(self, chain_id: str) -> bool:
        return verify(self.validator, TAG_VOTE, self.digest(chain_id), self.signature)

    def with_signature(self, signature: bytes) -> Vote:
        return replace(self, signature=signature)

    @property
    def well_formed(self) -> bool:
        """The type is a vote type (the codec already bounds everything else)."""
        return self.type in (VoteType.PREVOTE, VoteType.PRECOMMIT)


@dataclass(frozen=True, slots=True)
class Proposal(Record):
    """The round's proposer offers a block; ``pol_round ≥ 0`` re-proposes a block locked then.

    The block itself travels next to the proposal (it is the value, not part of the signature);
    the receiver checks that its hash is ``block_id``.
    """

    height: int = wire(U64)
    """The height being decided."""
    round: int = wire(U32)
    """The round of this proposal."""
    pol_round: int = wire(I64)
    """The round of the proof of lock (2f+1 prevotes for this block), ``-1`` if none."""
    block_id: bytes = wire(HASH)
    """The proposed block's hash (a proposal is never nil)."""
    proposer: bytes = wire(PUBKEY)
    """The proposer's public key."""
    signature: bytes = wire(SIGNATURE)
    """Ed25519 over ``fedcoin/proposal/v1 || sha256(SignPayload)``; ``UNSIGNED`` before signing."""

    def payload(self, chain_id: str) -> SignPayload:
        return SignPayload(
            chain_id, self.height, self.round, VoteType.PROPOSAL, self.block_id, self.pol_round
        )

    def digest(self, chain_id: str) -> bytes:
        return hash_of(self.payload(chain_id))

    def signature_ok(self, chain_id: str) -> bool:
        return verify(self.proposer, TAG_PROPOSAL, self.digest(chain_id), self.signature)

    def with_signature(self, signature: bytes) -> Proposal:
        return replace(self, signature=signature)

    @property
    def well_formed(self) -> bool:
        """``-1 ≤ pol_round < round``: a proof of lock comes from an earlier round."""
        return NO_ROUND <= self.pol_round < self.round


@dataclass(frozen=True, slots=True)
class CommitSig(Record):
    """One validator's precommit signature inside a commit certificate."""

    validator: bytes = wire(PUBKEY)
    """The precommitting validator's public key."""
    signature: bytes = wire(SIGNATURE)
    """Its signature of the precommit ``[chain_id, height, round, 2, block_id, -1]``."""


@dataclass(frozen=True, slots=True)
class CommitCertificate(Record):
    """Proof that a block is committed: precommits for it from > 2/3 of the power, one round.

    Canonical form: ``signatures`` sorted by validator key, strictly ascending (no duplicates).
    Block h+1 carries the certificate of block h as its ``LastCommit``.
    """

    height: int = wire(U64)
    """The committed block's height."""
    round: int = wire(U32)
    """The round whose precommits committed it."""
    block_id: bytes = wire(HASH)
    """The committed block's hash."""
    signatures: tuple[CommitSig, ...] = wire(list_of(nested(CommitSig), MAX_VALIDATORS))
    """The precommit signatures, sorted by validator key."""

    def vote_of(self, sig: CommitSig) -> Vote:
        """The precommit that ``sig`` signs."""
        return Vote(
            self.height, self.round, VoteType.PRECOMMIT, self.block_id, sig.validator, sig.signature
        )

    @classmethod
    def from_votes(cls, votes: list[Vote] | tuple[Vote, ...]) -> CommitCertificate:
        """Build the canonical certificate from precommits of one height, round and block."""
        first = votes[0]
        if first.block_id is None:
            raise ValueError("a certificate commits a block, not nil")
        sigs = sorted((CommitSig(v.validator, v.signature) for v in votes), key=_by_validator)
        return cls(first.height, first.round, first.block_id, tuple(sigs))


#: Block h+1's name for the certificate of block h.
LastCommit = CommitCertificate


@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence(Record):
    """Two signed votes of one validator, same height, round and type, different block ids.

    Canonical form: ``vote_a`` has the smaller block id, nil (encoded ``[]``) first.
    """

    vote_a: Vote = wire(nested(Vote))
    """The vote with the smaller block id."""
    vote_b: Vote = wire(nested(Vote))
    """The vote with the larger block id."""

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height


def block_id_key(block_id: bytes | None) -> bytes:
    """Sort key of block ids: nil sorts before every hash."""
    return b"" if block_id is None else block_id


def _by_validator(sig: CommitSig) -> bytes:
    return sig.validator
