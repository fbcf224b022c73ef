"""Blocks: header, body (transactions, the parent's commit certificate and evidence), Merkle
roots.

A block's id is ``header.hash``, the sha256 of the header's encoding; nothing in the block is
signed by its creator (the Tendermint ``Proposal`` naming the id is what a proposer signs, and a
block is final once a ``CommitCertificate`` for its id exists). The header commits to every part
of the body: the transactions (``tx_root``, a Merkle root over each transaction's full
encoding), the parent's certificate (``last_commit_hash``)
and the evidence (``evidence_root``); and to the post-state (``state_root``) and the validator
sets of this height and the next (``validators_hash``, ``next_validators_hash``). Proof of
Shapley travels in transactions (``ShareCommit``, ``ShareReveal``, ``FraudProof``) and settles
as an end-of-block step of the state, so a block has no PoSap part of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from fedcoin.data.encoding import (
    HASH,
    MAX_OBJECTS,
    PUBKEY_OR_ZERO,
    U16,
    U64,
    Record,
    decode_raw,
    encode,
    list_of,
    nested,
    optional,
    sha256,
    wire,
)
from fedcoin.data.tx import Transaction
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence
from fedcoin.errors import DecodeError

BLOCK_VERSION = 1
ZERO_HASH = bytes(32)
#: Bounds a decoder enforces before any rule runs.
MAX_BLOCK_TXS = 10_000
MAX_EVIDENCE = 64


@dataclass(frozen=True, slots=True)
class BlockHeader(Record):
    """What a block commits to; its hash identifies the block."""

    version: int = wire(U16)
    """Block format version."""
    height: int = wire(U64)
    """Parent's height + 1; genesis is 0."""
    parent: bytes = wire(HASH)
    """Parent's hash; for genesis, the hash of the genesis configuration."""
    timestamp_ms: int = wire(U64)
    """Creator's clock, milliseconds since the epoch; ≥ parent's + min_block_interval_ms."""
    proposer_pubkey: bytes = wire(PUBKEY_OR_ZERO)
    """The block's creator (a member of the height's set): collects fees and the block reward,
    even when another validator re-proposes the block in a later round; zeros for genesis."""
    tx_root: bytes = wire(HASH)
    """Merkle root of the transactions."""
    state_root: bytes = wire(HASH)
    """Hash of the state after this block."""
    validators_hash: bytes = wire(HASH)
    """Hash of the (public key, power) list of this height's validator set."""
    next_validators_hash: bytes = wire(HASH)
    """The same for the next height's set (differs only after an epoch's last block)."""
    randao_reveal: bytes = wire(HASH)
    """The creator's next randao preimage: its sha256 is the creator's registered tip."""
    last_commit_hash: bytes = wire(HASH)
    """Hash of the parent's commit certificate; zeros at height 1 (genesis has none)."""
    evidence_root: bytes = wire(HASH)
    """Merkle root of the evidence items; zeros when there is none."""

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())


_TXS = list_of(nested(Transaction), MAX_BLOCK_TXS)  # type: ignore[arg-type]
_LAST_COMMIT = optional(nested(CommitCertificate))
_EVIDENCE = list_of(nested(DuplicateVoteEvidence), MAX_EVIDENCE)


@dataclass(frozen=True, slots=True)
class Block:
    """A header and its body."""

    header: BlockHeader
    """The header."""
    txs: tuple[Transaction, ...]
    """Transactions, applied in order after the evidence."""
    last_commit: CommitCertificate | None = None
    """The parent's commit certificate; None only at height 1 (genesis has none)."""
    evidence: tuple[DuplicateVoteEvidence, ...] = ()
    """Equivocations to punish, each at most ``evidence_max_age`` blocks old."""

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def parent(self) -> bytes:
        return self.header.parent

    def to_wire(self) -> list[Any]:
        return [
            self.header.to_wire(),
            _TXS.pack(self.txs),
            _LAST_COMMIT.pack(self.last_commit),
            _EVIDENCE.pack(self.evidence),
        ]

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if type(raw) is not list or len(raw) != 4:
            raise DecodeError("Block: expected an array of 4 fields")
        return cls(
            BlockHeader.from_wire(raw[0]),
            _TXS.unpack(raw[1]),
            _LAST_COMMIT.unpack(raw[2]),
            _EVIDENCE.unpack(raw[3]),
        )

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def max_objects(cls) -> int:
        """The decoder's object bound: the sum of the parts' bounds, capped at ``MAX_OBJECTS``.
        The cap matters since ``ShareReveal`` tables: 10 000 of them would be 41 M objects,
        while an honest block holds at most one reveal per validator (≤ 1 024 × 4 100)."""
        parts = (
            1 + BlockHeader.max_objects() + _TXS.objects + _LAST_COMMIT.objects + _EVIDENCE.objects
        )
        return min(parts, MAX_OBJECTS)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls.from_wire(decode_raw(data, max_objects=cls.max_objects()))


def merkle_root(leaves: list[bytes]) -> bytes:
    """Merkle root with domain-separated leaves and nodes; an odd node is promoted, not copied.

    Leaves are hashed as ``sha256(0x00 || leaf)`` and nodes as ``sha256(0x01 || l || r)`` so no
    leaf can pose as a node and no list has the same root as a list with a duplicated tail.
    """
    if not leaves:
        return ZERO_HASH
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def tx_root(txs: Sequence[Transaction]) -> bytes:
    return merkle_root([tx.leaf_hash() for tx in txs])


def last_commit_hash(certificate: CommitCertificate | None) -> bytes:
    return ZERO_HASH if certificate is None else sha256(certificate.encode())


def evidence_root(evidence: Sequence[DuplicateVoteEvidence]) -> bytes:
    return merkle_root([item.encode() for item in evidence])
