"""P2P messages: frozen records, a typed registry, and the ``[version, type, body]`` envelope.

Every frame on the wire is the canonical msgpack of ``[PROTOCOL_VERSION, type, body]``. The
registry ``MESSAGE_TYPES`` maps each type number to its class; a number that is not in it, a
body that does not decode as its class, or a frame over ``max_bytes`` is a protocol violation.
No class is ever built from a name that came off the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fedcoin.data.block import Block, Share
from fedcoin.data.encoding import (
    HASH,
    PUBKEY,
    SIGNATURE,
    U16,
    U64,
    Record,
    decode_raw,
    encode,
    list_of,
    nested,
    sha256,
    text,
    wire,
)
from fedcoin.data.tx import Transaction
from fedcoin.errors import DecodeError, ProtocolViolation

PROTOCOL_VERSION = 1
MAX_PEERS_LISTED = 64
MAX_LOCATOR = 64
MAX_BLOCKS_BATCH = 128


class Message(Record):
    """A P2P message; ``TYPE`` is its wire number."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0
    #: Gossiped messages are relayed to every peer but the source; the rest are point to point.
    GOSSIP: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Both sides' first message: who they are, which network, and where their head is."""

    TYPE: ClassVar[int] = 1
    protocol: int = wire(U16)
    """Protocol version."""
    chain_id: str = wire(text(64))
    """Network name."""
    genesis: bytes = wire(HASH)
    """Genesis block hash: the network identity."""
    node_pubkey: bytes = wire(PUBKEY)
    """The node's key (its identity for scoring and bans)."""
    listen: str = wire(text(128))
    """``host:port`` where the node accepts peers, or empty."""
    head: bytes = wire(HASH)
    """Hash of the node's head."""
    height: int = wire(U64)
    """Height of the head."""
    weight: int = wire(U64)
    """Cumulative weight of the head."""
    nonce: bytes = wire(HASH)
    """Fresh random challenge; the other side proves its key by signing it (``Auth``)."""


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Second message both ways: proof that the sender holds the key its Hello named."""

    TYPE: ClassVar[int] = 11
    signature: bytes = wire(SIGNATURE)
    """Signature over ``fedcoin/hello/v1 || sha256(receiver's nonce || sender's key)``."""


@dataclass(frozen=True, slots=True)
class GetPeers(Message):
    """Ask for addresses of other peers."""

    TYPE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class Peers(Message):
    """Addresses (``host:port``) of peers the sender knows."""

    TYPE: ClassVar[int] = 3
    addresses: tuple[str, ...] = wire(list_of(text(128), MAX_PEERS_LISTED))
    """Listen addresses."""


@dataclass(frozen=True, slots=True)
class TxMessage(Message):
    """A transaction for the mempool."""

    TYPE: ClassVar[int] = 4
    GOSSIP: ClassVar[bool] = True
    tx: Transaction = wire(nested(Transaction))  # type: ignore[arg-type]
    """The transaction."""


@dataclass(frozen=True, slots=True)
class ShareMessage(Message):
    """A miner's PoSap share."""

    TYPE: ClassVar[int] = 5
    GOSSIP: ClassVar[bool] = True
    share: Share = wire(nested(Share))
    """The share."""


@dataclass(frozen=True, slots=True)
class BlockMessage(Message):
    """A new block."""

    TYPE: ClassVar[int] = 6
    GOSSIP: ClassVar[bool] = True
    block: Block = wire(nested(Block))  # type: ignore[arg-type]
    """The block."""


@dataclass(frozen=True, slots=True)
class GetBlocks(Message):
    """Ask for canonical blocks after the first locator hash the receiver knows."""

    TYPE: ClassVar[int] = 7
    locator: tuple[bytes, ...] = wire(list_of(HASH, MAX_LOCATOR))
    """Hashes back from the asker's head to genesis."""
    limit: int = wire(U16)
    """Most blocks wanted."""


@dataclass(frozen=True, slots=True)
class Blocks(Message):
    """Blocks in chain order, answering ``GetBlocks``."""

    TYPE: ClassVar[int] = 8
    blocks: tuple[Block, ...] = wire(
        list_of(nested(Block), MAX_BLOCKS_BATCH)  # type: ignore[arg-type]
    )
    """The blocks."""


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Liveness probe and ordering barrier."""

    TYPE: ClassVar[int] = 9
    nonce: int = wire(U64)
    """Echoed by Pong."""


@dataclass(frozen=True, slots=True)
class Pong(Message):
    """Answer to Ping."""

    TYPE: ClassVar[int] = 10
    nonce: int = wire(U64)
    """The Ping's nonce."""


_ALL: tuple[type[Message], ...] = (Hello, GetPeers, Peers, TxMessage, ShareMessage)
_ALL += (BlockMessage, GetBlocks, Blocks, Ping, Pong, Auth)
MESSAGE_TYPES: dict[int, type[Message]] = {cls.TYPE: cls for cls in _ALL}


def encode_message(message: Message) -> bytes:
    return encode([PROTOCOL_VERSION, message.TYPE, message.to_wire()])


def decode_message(frame: bytes, max_bytes: int) -> Message:
    """Decode one frame; raise ``ProtocolViolation`` for anything malformed or unknown."""
    try:
        raw: Any = decode_raw(frame, max_bytes=max_bytes)
    except DecodeError as exc:
        raise ProtocolViolation(str(exc)) from None
    if type(raw) is not list or len(raw) != 3:
        raise ProtocolViolation("envelope must be [version, type, body]")
    version, kind, body = raw
    if version != PROTOCOL_VERSION:
        raise ProtocolViolation(f"protocol version {version!r}")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is int else None
    if cls is None:
        raise ProtocolViolation(f"unknown message type {kind!r}")
    try:
        return cls.from_wire(body)
    except DecodeError as exc:
        raise ProtocolViolation(f"{cls.__name__}: {exc}") from None


def auth_digest(nonce: bytes, signer_pubkey: bytes) -> bytes:
    """What a node signs to prove its key: the other side's nonce, bound to its own key."""
    return sha256(nonce + signer_pubkey)


def message_id(frame: bytes) -> bytes:
    """Identity of a gossiped frame for the seen-cache (canonical bytes ⇒ one id per content)."""
    return sha256(frame)
