"""Blocks: header, body (transactions and an optional PoSap section), Merkle root, shares.

A block's hash is the hash of its unsigned header; the proposer signs
``fedcoin/block/v1 || hash``. The header commits to the transactions (``tx_root``, a Merkle root
over each transaction's full encoding), to the PoSap section (``posap_root``) and to the
post-state (``state_root``). A PoSap section settles one SV task with miners' shares, or voids it
when it carries none.
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
from fedcoin.data.keys import TAG_BLOCK, TAG_SHARE, PrivateKey, verify
from fedcoin.data.tx import MAX_CLIENTS, Transaction
from fedcoin.errors import DecodeError

BLOCK_VERSION = 1
ZERO_HASH = bytes(32)
#: Bounds a decoder enforces before any rule runs.
MAX_BLOCK_TXS = 10_000
MAX_SHARES = 32
MAX_TABLE = 1 << 16


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
    """Proposer's clock, milliseconds since the epoch; increases along the chain."""
    proposer_pubkey: bytes = wire(PUBKEY_OR_ZERO)
    """Who made the block and collects fees and the remainder of the miners' pool."""
    tx_root: bytes = wire(HASH)
    """Merkle root of the transactions."""
    posap_root: bytes = wire(HASH)
    """Hash of the PoSap section, or zeros when there is none."""
    state_root: bytes = wire(HASH)
    """Hash of the state after this block."""
    weight: int = wire(U64)
    """Cumulative chain weight up to and including this block."""
    signature: bytes = wire(SIGNATURE)
    """Proposer's signature over ``fedcoin/block/v1 || hash``; zeros for genesis."""

    @property
    def hash(self) -> bytes:
        return sha256(encode(self.to_wire()[:-1]))

    def signature_ok(self) -> bool:
        return verify(self.proposer_pubkey, TAG_BLOCK, self.hash, self.signature)

    def signed(self, key: PrivateKey) -> BlockHeader:
        unsigned = replace(self, proposer_pubkey=key.public, signature=bytes(64))
        return replace(unsigned, signature=key.sign(TAG_BLOCK, unsigned.hash))


_TXS = list_of(nested(Transaction), MAX_BLOCK_TXS)  # type: ignore[arg-type]
_POSAP = optional(nested(PosapSection))


@dataclass(frozen=True, slots=True)
class Block:
    """A header and its body."""

    header: BlockHeader
    """The header."""
    txs: tuple[Transaction, ...]
    """Transactions, applied in order after the PoSap section."""
    posap: PosapSection | None = None
    """Settlement or void of the oldest pending SV task, if any is pending."""

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
        return [self.header.to_wire(), _TXS.pack(self.txs), _POSAP.pack(self.posap)]

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if type(raw) is not list or len(raw) != 3:
            raise DecodeError("Block: expected an array of 3 fields")
        return cls(BlockHeader.from_wire(raw[0]), _TXS.unpack(raw[1]), _POSAP.unpack(raw[2]))

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def max_objects(cls) -> int:
        return 1 + BlockHeader.max_objects() + _TXS.objects + _POSAP.objects

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


def block_weight(section: PosapSection | None) -> int:
    """A block's own weight: 1, plus one per share it carries (DESIGN §5)."""
    return 1 + (len(section.shares) if section is not None else 0)
