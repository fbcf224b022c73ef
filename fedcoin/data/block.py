"""Blocks: header, body (transactions, an optional PoSap section, the parent's commit
certificate and evidence), Merkle roots, shares.

A block's id is ``header.hash``, the sha256 of the header's encoding; nothing in the block is
signed by its creator (the Tendermint ``Proposal`` naming the id is what a proposer signs, and a
block is final once a ``CommitCertificate`` for its id exists). The header commits to every part
of the body: the transactions (``tx_root``, a Merkle root over each transaction's full
encoding), the PoSap section (``posap_root``), the parent's certificate (``last_commit_hash``)
and the evidence (``evidence_root``); and to the post-state (``state_root``) and the validator
sets of this height and the next (``validators_hash``, ``next_validators_hash``). A PoSap section
settles one SV task with validators' shares, or voids it when it carries none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

from fedcoin.data.encoding import (
    HASH,
    I64,
    PUBKEY,
    PUBKEY_OR_ZERO,
    SIGNATURE,
    U8,
    U16,
    U32,
    U64,
    Record,
    decode_raw,
    encode,
    list_of,
    nested,
    optional,
    sha256,
    tuple_of,
    wire,
)
from fedcoin.data.keys import TAG_SHARE, PrivateKey, verify
from fedcoin.data.tx import MAX_CLIENTS, Transaction
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence
from fedcoin.errors import DecodeError

BLOCK_VERSION = 1
ZERO_HASH = bytes(32)
#: Bounds a decoder enforces before any rule runs.
MAX_BLOCK_TXS = 10_000
MAX_SHARES = 32
MAX_TABLE = 1 << 16
MAX_EVIDENCE = 64


@dataclass(frozen=True, slots=True)
class Share(Record):
    """A miner's Proof-of-Shapley work for one SV task: evaluated coalitions and the SVs."""

    sv_task_id: bytes = wire(HASH)
    """The SV task (the id of the SubmitRound transaction that queued it)."""
    miner_pubkey: bytes = wire(PUBKEY)
    """The miner; its address is paid a part of the miners' pool."""
    estimator: int = wire(U8)
    """Which estimator made the table (0 = exact)."""
    table: tuple[tuple[int, int], ...] = wire(list_of(tuple_of(U64, U32), MAX_TABLE))
    """(coalition bitmask, U) for every coalition evaluated, in schedule order."""
    estimate: tuple[int, ...] = wire(list_of(I64, MAX_CLIENTS))
    """Shapley value per client in fixed point (SV_SCALE per validation sample)."""
    signature: bytes = wire(SIGNATURE)
    """The miner's signature over ``fedcoin/share/v1 || id``."""

    @property
    def id(self) -> bytes:
        return sha256(encode(self.to_wire()[:-1]))

    def signature_ok(self) -> bool:
        return verify(self.miner_pubkey, TAG_SHARE, self.id, self.signature)

    def signed(self, key: PrivateKey) -> Share:
        unsigned = replace(self, miner_pubkey=key.public, signature=bytes(64))
        return replace(unsigned, signature=key.sign(TAG_SHARE, unsigned.id))


@dataclass(frozen=True, slots=True)
class PosapSection(Record):
    """Settles (with shares) or voids (with none) the oldest pending SV task."""

    sv_task_id: bytes = wire(HASH)
    """The SV task settled or voided."""
    shares: tuple[Share, ...] = wire(list_of(nested(Share), MAX_SHARES))
    """Valid shares from distinct miners; empty means the round is voided."""

    @property
    def voids(self) -> bool:
        return not self.shares


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
    posap_root: bytes = wire(HASH)
    """Hash of the PoSap section, or zeros when there is none."""
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
_POSAP = optional(nested(PosapSection))
_LAST_COMMIT = optional(nested(CommitCertificate))
_EVIDENCE = list_of(nested(DuplicateVoteEvidence), MAX_EVIDENCE)


@dataclass(frozen=True, slots=True)
class Block:
    """A header and its body."""

    header: BlockHeader
    """The header."""
    txs: tuple[Transaction, ...]
    """Transactions, applied in order after the evidence and the PoSap section."""
    posap: PosapSection | None = None
    """Settlement or void of the oldest pending SV task, if the block carries one."""
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
            _POSAP.pack(self.posap),
            _LAST_COMMIT.pack(self.last_commit),
            _EVIDENCE.pack(self.evidence),
        ]

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if type(raw) is not list or len(raw) != 5:
            raise DecodeError("Block: expected an array of 5 fields")
        return cls(
            BlockHeader.from_wire(raw[0]),
            _TXS.unpack(raw[1]),
            _POSAP.unpack(raw[2]),
            _LAST_COMMIT.unpack(raw[3]),
            _EVIDENCE.unpack(raw[4]),
        )

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def max_objects(cls) -> int:
        return (
            1
            + BlockHeader.max_objects()
            + _TXS.objects
            + _POSAP.objects
            + _LAST_COMMIT.objects
            + _EVIDENCE.objects
        )

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


def posap_root(section: PosapSection | None) -> bytes:
    return ZERO_HASH if section is None else sha256(section.encode())


def last_commit_hash(certificate: CommitCertificate | None) -> bytes:
    return ZERO_HASH if certificate is None else sha256(certificate.encode())


def evidence_root(evidence: Sequence[DuplicateVoteEvidence]) -> bytes:
    return merkle_root([item.encode() for item in evidence])
