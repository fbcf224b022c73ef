"""P2P messages: frozen records, a typed registry, and the ``[version, type, body]`` envelope.

Every frame on the wire is the canonical msgpack of ``[PROTOCOL_VERSION, type, body]``. The
registry ``MESSAGE_TYPES`` maps each type number to its class; a number that is not in it, a
body that does not decode as its class, or a frame over ``max_bytes`` is a protocol violation.
No class is ever built from a name that came off the wire.

Frames are bounded **per message type** (``FRAME_BOUNDS``): the type is read from the frame's
first three bytes (canonical msgpack puts it there) and the length checked before anything is
decoded, so a 50 MiB "Ping" costs nothing but its bytes. Only blocks are large; no frame carries
model content. Before the handshake completes only ``HANDSHAKE_FRAME_BYTES`` are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fedcoin.data.block import Block
from fedcoin.data.encoding import (
    HASH,
    PUBKEY,
    SIGNATURE,
    U16,
    U64,
    Record,
    blob,
    decode_raw,
    encode,
    list_of,
    nested,
    sha256,
    text,
    wire,
)
from fedcoin.data.tx import Transaction
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence, Proposal, Vote
from fedcoin.errors import DecodeError, FrameTooLarge, ProtocolViolation

PROTOCOL_VERSION = 4
"""3: PoSap v1's Share message (type 5) is gone and Bundle (type 15) carries queued frames.
4: Neighbours (type 16) tells a peer whom the sender is connected to (the relay policy)."""
MAX_PEERS_LISTED = 64
#: Keys in one ``Neighbours``: more than a node's inbound and outbound peers together.
MAX_NEIGHBOURS = 64
MAX_BLOCKS_BATCH = 128

#: Largest transaction frame: a SubmitRound with MAX_CLIENTS updates is under 20 KiB, and a
#: ShareReveal of MAX_TABLE_ENTRIES (4 096) u32 entries at most 5 bytes each about 20 KiB.
MAX_TX_BYTES = 32 * 1024
#: The network's block size limit: a few thousand transactions.
MAX_BLOCK_BYTES = 40 * 1024 * 1024
#: Hello and Auth: a few hundred bytes.
HANDSHAKE_FRAME_BYTES = 1024
#: Ping, Pong, GetPeers, GetBlocks and Peers (64 addresses): a few KiB.
SMALL_FRAME_BYTES = 16 * 1024
#: A vote is about 160 bytes (DESIGN §7: a vote ≤ 512 B).
MAX_VOTE_BYTES = 512
#: Evidence: two votes and an envelope.
MAX_EVIDENCE_BYTES = 1024
#: A commit certificate of MAX_VALIDATORS signatures (about 101 bytes each) and its envelope.
MAX_CERTIFICATE_BYTES = 128 * 1024
#: A ``Bundle`` carries at most this many frames, each at most ``MAX_BUNDLED_FRAME_BYTES``.
MAX_BUNDLED = 256
MAX_BUNDLED_FRAME_BYTES = MAX_TX_BYTES
#: Bytes of frames a sender puts in one ``Bundle`` (the bound adds the envelope's few bytes each).
BUNDLE_PAYLOAD_BYTES = 128 * 1024


class Message(Record):
    """A P2P message; ``TYPE`` is its wire number."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0
    #: Gossiped messages are relayed to every peer but the source; the rest are point to point.
    GOSSIP: ClassVar[bool] = False

    def origin(self) -> bytes | None:
        """The node key of the node that made and first sent this message, when it is signed
        by it (a validator's vote or proposal: validators sign with their node key); None when
        any node may have been first (a transaction, evidence)."""
        return None

    def consensus_height(self) -> int | None:
        """The height a consensus message belongs to; None for other messages."""
        return None


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
    """Hash of the node's last committed block."""
    height: int = wire(U64)
    """Height of the last committed block (committed blocks are final: no weight)."""
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
class ProposalMessage(Message):
    """A round's proposer offers a block: the signed ``Proposal`` and the block it names."""

    TYPE: ClassVar[int] = 12
    GOSSIP: ClassVar[bool] = True
    proposal: Proposal = wire(nested(Proposal))
    """The signed proposal (height, round, pol_round, block id, proposer)."""
    block: Block = wire(nested(Block))  # type: ignore[arg-type]
    """The proposed block; its hash must be ``proposal.block_id``."""

    def origin(self) -> bytes | None:
        return self.proposal.proposer

    def consensus_height(self) -> int | None:
        return self.proposal.height


@dataclass(frozen=True, slots=True)
class VoteMessage(Message):
    """A signed prevote or precommit."""

    TYPE: ClassVar[int] = 13
    GOSSIP: ClassVar[bool] = True
    vote: Vote = wire(nested(Vote))
    """The vote."""

    def origin(self) -> bytes | None:
        return self.vote.validator

    def consensus_height(self) -> int | None:
        return self.vote.height


@dataclass(frozen=True, slots=True)
class EvidenceMessage(Message):
    """Proof that a validator signed two different votes for one height, round and type."""

    TYPE: ClassVar[int] = 14
    GOSSIP: ClassVar[bool] = True
    evidence: DuplicateVoteEvidence = wire(nested(DuplicateVoteEvidence))
    """The two conflicting votes, in canonical order."""


@dataclass(frozen=True, slots=True)
class GetBlocks(Message):
    """Ask for committed blocks from ``from_height`` on, each with its certificate."""

    TYPE: ClassVar[int] = 7
    from_height: int = wire(U64)
    """The first height wanted (the asker's committed height + 1)."""
    limit: int = wire(U16)
    """Most blocks wanted."""


@dataclass(frozen=True, slots=True)
class CommittedBlock(Record):
    """A committed block and the certificate that committed it (an item of ``Blocks``)."""

    block: Block = wire(nested(Block))  # type: ignore[arg-type]
    """The block."""
    certificate: CommitCertificate = wire(nested(CommitCertificate))
    """Precommits for it from more than 2/3 of its height's power."""


@dataclass(frozen=True, slots=True)
class Blocks(Message):
    """Committed blocks in height order from the asked height, answering ``GetBlocks``."""

    TYPE: ClassVar[int] = 8
    blocks: tuple[CommittedBlock, ...] = wire(list_of(nested(CommittedBlock), MAX_BLOCKS_BATCH))
    """The blocks with their certificates; empty when the answerer has none from there."""
    height: int = wire(U64)
    """The answerer's committed height (more may follow)."""


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


@dataclass(frozen=True, slots=True)
class Bundle(Message):
    """Small frames that waited in one peer's send queue together, sent as one websocket
    message: one write and one frame header instead of one each (in a vote wave a node sends
    each peer a dozen votes at once). The receiver handles every frame as if it came alone —
    its own type bound, rate-limit token, seen check and handler; a bundle never holds one."""

    TYPE: ClassVar[int] = 15
    frames: tuple[bytes, ...] = wire(list_of(blob(MAX_BUNDLED_FRAME_BYTES), MAX_BUNDLED))
    """The frames, in the order they were queued."""


@dataclass(frozen=True, slots=True)
class Neighbours(Message):
    """The node keys of the sender's connected peers, sent to every peer whenever they change.
    A node does not relay a validator's vote or proposal at once to a peer that is connected
    to that validator (it has it from the source); see ``network/relay.py``."""

    TYPE: ClassVar[int] = 16
    keys: tuple[bytes, ...] = wire(list_of(PUBKEY, MAX_NEIGHBOURS))
    """Node keys of the sender's peers."""


_ALL: tuple[type[Message], ...] = (Hello, GetPeers, Peers, TxMessage)
_ALL += (GetBlocks, Blocks, Ping, Pong, Auth, ProposalMessage, VoteMessage, EvidenceMessage)
_ALL += (Bundle, Neighbours)
MESSAGE_TYPES: dict[int, type[Message]] = {cls.TYPE: cls for cls in _ALL}
FRAME_BOUNDS: dict[type[Message], int] = {
    Hello: HANDSHAKE_FRAME_BYTES,
    Auth: HANDSHAKE_FRAME_BYTES,
    GetPeers: SMALL_FRAME_BYTES,
    Neighbours: 64 + MAX_NEIGHBOURS * 34,
    Peers: SMALL_FRAME_BYTES,
    Ping: SMALL_FRAME_BYTES,
    Pong: SMALL_FRAME_BYTES,
    GetBlocks: SMALL_FRAME_BYTES,
    TxMessage: MAX_TX_BYTES,
    VoteMessage: MAX_VOTE_BYTES,
    EvidenceMessage: MAX_EVIDENCE_BYTES,
    ProposalMessage: MAX_BLOCK_BYTES + 1024,
    # An answer holds items up to MAX_BLOCK_BYTES in all, and always at least one whole item
    Blocks: MAX_BLOCK_BYTES + MAX_CERTIFICATE_BYTES + 64 * 1024,
    # The payload, a last frame that may overshoot it, and a few bytes of envelope per frame
    Bundle: BUNDLE_PAYLOAD_BYTES + MAX_BUNDLED_FRAME_BYTES + 8 * MAX_BUNDLED + 16,
}
#: The largest frame of any type: what the transport accepts at most.
MAX_FRAME_BYTES = max(FRAME_BOUNDS.values())


def encode_message(message: Message) -> bytes:
    return encode([PROTOCOL_VERSION, message.TYPE, message.to_wire()])


def frame_type(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> type[Message]:
    """The message class a frame claims to be, checked against its bound, without decoding.

    ``FrameTooLarge`` over the type's bound (or ``max_bytes``); ``ProtocolViolation`` when the
    first bytes are not the canonical ``[PROTOCOL_VERSION, type, …`` of a known type.
    """
    if len(frame) < 3:
        raise ProtocolViolation(f"malformed frame of {len(frame)} bytes")
    if frame[0] != 0x93:  # a canonical three-element array
        raise ProtocolViolation("envelope must be [version, type, body]")
    if frame[1] != PROTOCOL_VERSION:
        raise ProtocolViolation(f"protocol version {frame[1]}")
    cls = MESSAGE_TYPES.get(frame[2])
    if cls is None:
        raise ProtocolViolation(f"unknown message type {frame[2]}")
    bound = min(FRAME_BOUNDS[cls], max_bytes)
    if len(frame) > bound:
        raise FrameTooLarge(f"{cls.__name__} of {len(frame)} bytes exceeds its {bound}-byte bound")
    return cls


def decode_message(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Decode one frame; raise ``ProtocolViolation`` for anything malformed or unknown."""
    cls = frame_type(frame, max_bytes)
    try:
        # The envelope (array, version, type) plus the most objects the claimed type can hold
        raw: Any = decode_raw(frame, max_bytes=max_bytes, max_objects=3 + cls.max_objects())
    except DecodeError as exc:
        raise ProtocolViolation(str(exc)) from None
    if type(raw) is not list or len(raw) != 3:
        raise ProtocolViolation("envelope must be [version, type, body]")
    version, kind, body = raw
    if version != PROTOCOL_VERSION or kind != cls.TYPE:  # canonical: the header bytes say it
        raise ProtocolViolation(f"envelope [{version!r}, {kind!r}, …] is not canonical")
    try:
        return cls.from_wire(body)
    except DecodeError as exc:
        raise ProtocolViolation(f"{cls.__name__}: {exc}") from None


def bundle(frames: list[bytes]) -> bytes:
    """The frame to send for ``frames`` queued together: the frame itself when alone, else a
    ``Bundle`` of them (the caller keeps each under ``MAX_BUNDLED_FRAME_BYTES``)."""
    if len(frames) == 1:
        return frames[0]
    return encode_message(Bundle(tuple(frames)))


def decode_frames(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> list[Message]:
    """Every message a frame carries: the message, or each message of a ``Bundle`` in order
    (for clients that read a node's frames themselves; the node's pipeline unbundles its own)."""
    message = decode_message(frame, max_bytes)
    if isinstance(message, Bundle):
        return [decode_message(inner, max_bytes) for inner in message.frames]
    return [message]


def auth_digest(nonce: bytes, signer_pubkey: bytes) -> bytes:
    """What a node signs to prove its key: the other side's nonce, bound to its own key."""
    return sha256(nonce + signer_pubkey)


def message_id(frame: bytes) -> bytes:
    """Identity of a gossiped frame for the seen-cache (canonical bytes ⇒ one id per content)."""
    return sha256(frame)
