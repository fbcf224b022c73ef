"""Gossip: the pipeline every incoming frame follows, and the handlers the application registers.

    seen? → decode → validate (handler) → mark seen → deliver → relay (``relay.Relay``)

A handler validates and delivers; it raises ``Ignore`` (drop quietly: late, duplicate,
useless) or ``Reject`` (drop and penalise: invalid). The router — not the handler — turns
those into a silent drop or a score penalty, and never echoes a message back to its source.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fedcoin.errors import FedCoinError, Ignore, NeedsSync, Reject
from fedcoin.network.messages import (
    MAX_PEERS_LISTED,
    Auth,
    Blocks,
    Bundle,
    GetBlocks,
    GetPeers,
    Hello,
    Message,
    Neighbours,
    Peers,
    Ping,
    Pong,
    decode_message,
    encode_message,
    frame_type,
    message_id,
)
from fedcoin.network.peers import (
    PENALTY_FLOOD,
    PENALTY_INVALID,
    PENALTY_MALFORMED,
    PENALTY_UNEXPECTED,
    Peer,
)

if TYPE_CHECKING:
    from fedcoin.network.dialer import AddressBook
    from fedcoin.network.relay import Relay
    from fedcoin.network.sync import Syncer

log = logging.getLogger("fedcoin.p2p")
#: Frames up to this size are decoded on the event loop; larger ones in a worker thread.
DECODE_INLINE_BYTES = 64 * 1024

Handler = Callable[[Message, object], Awaitable[None]]


class Stale(Ignore):
    """Drop quietly, and drop the copies other peers relay unread: the message can never be
    useful here again (a vote of a height this node committed). A plain ``Ignore`` leaves the
    message unseen, so that a copy may be taken later when it has become useful.

    ``behind``: the message shows its sender still deciding a height we committed (a round
    after the one that decided it, or an older height). Sent by its origin, the pipeline then
    offers that peer the committed blocks from there."""

    def __init__(self, reason: str, behind: bool = False) -> None:
        super().__init__(reason)
        self.behind = behind


def _own_height(peer: Peer, message: Message) -> int | None:
    """The height of a consensus message the peer made itself (its origin is the peer's key);
    None for any other message."""
    height = message.consensus_height()
    if height is None or peer.hello is None or message.origin() != peer.hello.node_pubkey:
        return None
    return height


class SeenCache:
    """Bounded set of recently seen message ids; the oldest are forgotten first."""

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self.ids: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, message_id: bytes) -> bool:
        return message_id in self.ids

    def add(self, message_id: bytes) -> None:
        self.ids[message_id] = None
        self.ids.move_to_end(message_id)
        while len(self.ids) > self.capacity:
            self.ids.popitem(last=False)


class Handlers:
    """The typed registry of handlers: one per message class, registered explicitly, each with
    an optional predicate saying whether a message is still worth relaying (default: yes)."""

    def __init__(self) -> None:
        self._by_type: dict[type[Message], Handler] = {}
        self._useful: dict[type[Message], Callable[[Message], bool]] = {}

    def register(
        self,
        cls: type[Message],
        handler: Handler,
        useful: Callable[[Message], bool] | None = None,
    ) -> None:
        if cls in self._by_type:
            raise ValueError(f"a handler for {cls.__name__} is already registered")
        self._by_type[cls] = handler
        if useful is not None:
            self._useful[cls] = useful

    def get(self, cls: type[Message]) -> Handler | None:
        return self._by_type.get(cls)

    def useful(self, message: Message) -> bool:
        """Whether a late copy of ``message`` is still worth sending to a peer."""
        check = self._useful.get(type(message))
        return check is None or check(message)


class Pipeline:
    """Every frame a connected peer sends goes through ``on_frame``, which never raises:

    rate limit → type and per-type bound (from the frame's first bytes, before decoding) →
    seen? → decode (off the event loop when large) → point-to-point answer or gossip
    (validate → mark seen → deliver → relay). ``Ignore`` drops quietly, ``Reject`` scores the
    peer, a ``FedCoinError`` of our own drops the message only, and any other exception — a bug
    or an input no rule foresaw — is logged, dropped and scored, so no input ends a peer's task.
    """

    def __init__(
        self,
        *,
        peers: dict[str, Peer],
        handlers: Handlers,
        seen: SeenCache,
        syncer: Syncer,
        relay: Relay,
        book: AddressBook,
        max_frame_bytes: int,
        penalise: Callable[[Peer, int, str], None],
        notify: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.peers = peers
        self.handlers = handlers
        self.seen = seen
        self.syncer = syncer
        self.relay = relay
        self.book = book
        self.max_frame_bytes = max_frame_bytes
        self.penalise = penalise
        self.notify = notify
        self.clock = clock
        self.validating: set[bytes] = set()
        #: Frames received (each frame of a bundle counted): what gossip costs this node.
        self.received = 0

    async def on_frame(self, peer: Peer, frame: bytes) -> None:
        try:
            await self._on_frame(peer, frame)
        except Exception as exc:  # noqa: BLE001 - the one place any error becomes a drop
            log.warning(
                "unexpected %s handling a frame from %s: %s",
                type(exc).__name__, peer.name, exc, exc_info=log.isEnabledFor(logging.DEBUG),
            )  # fmt: skip
            self.penalise(peer, PENALTY_UNEXPECTED, f"unexpected {type(exc).__name__}")

    async def _on_frame(self, peer: Peer, frame: bytes) -> None:
        self.received += 1
        # Per-peer rate limit: a flood costs score per message over the limit
        if not peer.bucket.take():
            self.penalise(peer, PENALTY_FLOOD, "flood")
            return
        try:
            # The claimed type and its bound, read from the first bytes: nothing decoded yet
            claimed = frame_type(frame, self.max_frame_bytes)
            # Seen: a gossip frame we already have is dropped before it is decoded
            mid = message_id(frame)
            if claimed.GOSSIP:
                peer.learn(mid)  # it has this one: never send it back
            if mid in self.seen or mid in self.validating:
                return
        except Reject as exc:
            self.penalise(peer, PENALTY_MALFORMED, str(exc))
            return
        if not claimed.GOSSIP:
            await self._decode_and_handle(peer, frame, mid)
            return
        # A gossip frame is in flight from here: the copies other peers relay while this one is
        # decoded and checked are dropped, not decoded again (with 32 validators in one process
        # every copy of a block full of shares was decoded, and heights stalled for minutes)
        self.validating.add(mid)
        try:
            await self._decode_and_handle(peer, frame, mid)
        finally:
            self.validating.discard(mid)

    async def _decode_and_handle(self, peer: Peer, frame: bytes, mid: bytes) -> None:
        try:
            if len(frame) > DECODE_INLINE_BYTES:  # a big block: decode it off the event loop
                message = await asyncio.to_thread(decode_message, frame, self.max_frame_bytes)
            else:
                message = decode_message(frame, self.max_frame_bytes)
        except Reject as exc:
            self.penalise(peer, PENALTY_MALFORMED, str(exc))
            return
        own = _own_height(peer, message)
        if own is not None:
            peer.shown_height = max(peer.shown_height, own)  # checked or not: see relay.py
        try:
            if message.GOSSIP:
                await self._gossip(peer, message, frame, mid)
            else:
                await self._direct(peer, message)
        except NeedsSync:
            self.syncer.maybe_sync(peer, force=True)
        except Stale as exc:
            self.seen.add(mid)
            if exc.behind and own is not None:
                self._offer(peer, own)
        except Ignore:
            pass
        except Reject as exc:
            self.penalise(peer, PENALTY_INVALID, str(exc))
        except FedCoinError as exc:
            # Our own trouble handling it (store, content, a full mempool), not the peer's
            # fault: drop the message, keep the peer.
            log.warning("could not handle %s from %s: %s", type(message).__name__, peer.name, exc)

    async def _gossip(self, peer: Peer, message: Message, frame: bytes, mid: bytes) -> None:
        handler = self.handlers.get(type(message))
        if handler is None:
            raise Ignore(f"no handler for {type(message).__name__}")
        # Validate and deliver (the handler raises Ignore / Reject / NeedsSync)
        self.validating.add(mid)
        try:
            await handler(message, peer)
        finally:
            self.validating.discard(mid)
        # Mark seen only once valid, then relay to every peer but the source
        peer.last_useful = self.clock()
        self.seen.add(mid)
        self.notify()
        self.relay.send(frame, mid, message)

    def _offer(self, peer: Peer, height: int) -> None:
        """The peer's own message shows it still deciding ``height``, which we committed: it
        missed what decided it; offer it the blocks."""
        try:
            self.syncer.offer(peer, height)
        except FedCoinError as exc:  # our store's trouble, not the peer's fault
            log.warning("could not offer blocks to %s: %s", peer.name, exc)

    def broadcast(self, message: Message) -> None:
        """Publish a message this node originated (marked seen so echoes are dropped)."""
        frame = encode_message(message)
        mid = message_id(frame)
        self.seen.add(mid)
        self.relay.send(frame, mid)

    async def _direct(self, peer: Peer, message: Message) -> None:
        if isinstance(message, Hello | Auth):
            raise Reject(f"second {type(message).__name__}")
        if isinstance(message, Ping):
            peer.enqueue(Pong(message.nonce))
        elif isinstance(message, Pong):
            peer.pongs += 1
            self.notify()
        elif isinstance(message, GetPeers):
            listed = [p.advertised for p in self.peers.values() if p.advertised]
            listed = [a for a in listed if a != peer.advertised][:MAX_PEERS_LISTED]
            peer.enqueue(Peers(tuple(listed)))
        elif isinstance(message, Peers):
            bad = self.book.learn(peer, message.addresses)
            if bad:
                raise Reject(f"{bad} malformed addresses in Peers")
        elif isinstance(message, GetBlocks):
            await self.syncer.answer(peer, message)
        elif isinstance(message, Blocks):
            await self.syncer.on_blocks(peer, message)
        elif isinstance(message, Bundle):
            await self._unbundle(peer, message)
        elif isinstance(message, Neighbours):
            neighbours = frozenset(message.keys)
            if neighbours != peer.neighbours:
                peer.neighbours = neighbours
                self.notify()

    async def _unbundle(self, peer: Peer, message: Bundle) -> None:
        """Each frame of a bundle goes through the whole pipeline as if it came alone."""
        for frame in message.frames:
            # A bundle holds single frames, never another bundle
            if frame[2:3] == bytes([Bundle.TYPE]):
                raise Reject("a bundle inside a bundle")
            await self._on_frame(peer, frame)
            if peer.conn.closed:
                return
