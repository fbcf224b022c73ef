"""Peer bookkeeping: misbehaviour scores, bans with expiry, per-peer rate limits, send queues.

Penalties follow one rule: invalid data costs the sender score, merely late or duplicate data
costs nothing. A peer whose score reaches ``ban_threshold`` is disconnected and banned (by node
key and by listen address) for ``ban_seconds``. Every structure here is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fedcoin.network.messages import (
    BUNDLE_PAYLOAD_BYTES,
    MAX_BUNDLED,
    MAX_BUNDLED_FRAME_BYTES,
    Hello,
    Message,
    bundle,
    encode_message,
)
from fedcoin.network.transport import Connection, TransportError

Clock = Callable[[], float]

PENALTY_MALFORMED = 25
PENALTY_INVALID = 20
PENALTY_FLOOD = 5
#: An unexpected error (a bug, or input no rule foresaw) while handling the peer's message.
PENALTY_UNEXPECTED = 10
#: Gossip ids remembered per peer as "it has this" (it sent it to us, or we sent it to it).
KNOWN_PER_PEER = 4096


@dataclass(frozen=True)
class PeerLimits:
    max_inbound: int = 16
    """Most peers that dialled us."""
    max_outbound: int = 8
    """Most peers we dial."""
    ban_threshold: int = 100
    """Score at which a peer is disconnected and banned."""
    ban_seconds: float = 600.0
    """How long a ban lasts."""
    rate_per_second: float = 2000.0
    """Sustained messages per second a peer may send."""
    burst: float = 4000.0
    """Messages a peer may send at once."""
    send_queue: int = 1024
    """Frames queued for a peer before it counts as too slow and is dropped."""
    handshake_slots: int = 8
    """Inbound connections that may be in the handshake at once (beyond ``max_inbound``)."""
    max_per_ip: int = 4
    """Most inbound connections (in the handshake or not) from one remote IP."""
    per_ip_exempt_loopback: bool = True
    """Loopback is one IP for every local node (tests, one-process simulations): no per-IP cap."""
    evict_idle_seconds: float = 5.0
    """When full, an inbound peer that sent nothing useful for this long may give way."""
    sync_bytes_per_second: float = 4 * 1024 * 1024
    """Sustained GetBlocks answer bytes a peer may cost us."""
    sync_burst_bytes: float = 32 * 1024 * 1024
    """GetBlocks answer bytes a peer may cost us at once."""
    getblocks_base_cost: int = 64 * 1024
    """What one GetBlocks costs before its answer (the height lookup), in answer bytes."""
    max_answer_bytes: int = 4 * 1024 * 1024
    """Bytes of blocks in one ``Blocks`` answer (at least one block is always sent)."""
    max_addresses_per_peer: int = 32
    """Addresses one connection may add to the address book."""
    max_known: int = 1024
    """Addresses the address book keeps."""
    dial_parallel: int = 8
    """Learnt addresses dialled at once (bootstrap peers are always dialled)."""


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) otherwise."""
        self._refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def charge(self, cost: float) -> None:
        """Spend ``cost`` tokens after the fact (work already done); the bucket may go negative."""
        self._refill()
        self.tokens -= cost

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


class BanList:
    """Keys (node keys, addresses) banned until an expiry; bounded, oldest forgotten first."""

    def __init__(self, clock: Clock = time.monotonic, capacity: int = 4096) -> None:
        self.clock = clock
        self.capacity = capacity
        self.until: OrderedDict[str, float] = OrderedDict()

    def ban(self, key: str, seconds: float) -> None:
        self.until[key] = self.clock() + seconds
        self.until.move_to_end(key)
        while len(self.until) > self.capacity:
            self.until.popitem(last=False)

    def banned(self, key: str) -> bool:
        expiry = self.until.get(key)
        if expiry is None:
            return False
        if expiry <= self.clock():
            del self.until[key]
            return False
        return True


class Peer:
    """A connected peer: its connection, what it said in Hello, its score and its queue."""

    def __init__(self, conn: Connection, limits: PeerLimits, clock: Clock) -> None:
        self.conn = conn
        self.hello: Hello | None = None
        #: The node key the peer proved in the handshake (hex), even if it was then refused.
        self.proven_key = ""
        #: The peer's listen address as checked at the handshake (canonical), or "".
        self.advertised = ""
        self.score = 0
        self.bucket = TokenBucket(limits.rate_per_second, limits.burst, clock)
        #: Frames waiting to be sent, each with its gossip id (None: point to point).
        self.queue: asyncio.Queue[tuple[bytes, bytes | None]] = asyncio.Queue(limits.send_queue)
        #: Node keys the peer says it is connected to (its last ``Neighbours``).
        self.neighbours: frozenset[bytes] = frozenset()
        #: Gossip ids the peer is known to have, in two generations (bounded: when the newer
        #: holds KNOWN_PER_PEER / 2 ids, it becomes the older and the older is forgotten).
        self.known: set[bytes] = set()
        self._known_before: set[bytes] = set()
        self.sync_bucket = TokenBucket(limits.sync_bytes_per_second, limits.sync_burst_bytes, clock)
        self.syncing = False
        #: The peer's committed height as we last learnt it (Hello, a Blocks answer).
        self.height = 0
        self.pongs = 0
        self.connected_at = clock()
        #: When the peer last gave us something new and valid (gossip, sync blocks).
        self.last_useful = self.connected_at
        #: The highest height of a consensus message the peer made itself and sent us.
        self.shown_height = 0
        #: The highest height whose committed blocks we offered the peer unasked.
        self.offered = 0
        #: Our ``Blocks`` answer to this peer while it waits in the send queue.
        self.answering: bytes | None = None
        #: Addresses this connection has added to our address book.
        self.addresses_added = 0

    @property
    def key(self) -> str:
        return self.hello.node_pubkey.hex() if self.hello else f"addr:{self.conn.remote}"

    @property
    def name(self) -> str:
        if self.hello is not None:
            where = self.hello.listen or self.conn.remote
            return f"{self.hello.node_pubkey.hex()[:8]}@{where}"
        return self.conn.remote

    def knows(self, gossip_id: bytes) -> bool:
        return gossip_id in self.known or gossip_id in self._known_before

    def learn(self, gossip_id: bytes) -> None:
        """Record that the peer has this gossip message (it sent it to us, or we to it)."""
        self.known.add(gossip_id)
        if len(self.known) >= KNOWN_PER_PEER // 2:
            self._known_before, self.known = self.known, set()

    def enqueue(self, message: Message | bytes, gossip_id: bytes | None = None) -> bool:
        """Queue a message; False when the queue is full (the peer is too slow). A gossip
        frame (``gossip_id`` given) is left out at send time if the peer has sent it to us
        meanwhile: with N validators relaying at once, most copies cross in flight."""
        frame = message if isinstance(message, bytes) else encode_message(message)
        try:
            self.queue.put_nowait((frame, gossip_id))
        except asyncio.QueueFull:
            return False
        return True

    async def writer(self) -> None:
        """Send queued frames until the connection closes; a failed send closes it.

        Small frames that are queued together leave as one ``Bundle`` (nothing waits for a
        bundle to fill: only what is already queued goes with the first frame)."""
        held: bytes | None = None
        try:
            while not self.conn.closed:
                first = held if held is not None else self._unknown(await self.queue.get())
                if first is None:
                    continue
                frames, held = self._take_bundle(first)
                await self.conn.send(bundle(frames))
                if any(f is self.answering for f in frames):
                    self.answering = None
        except TransportError as exc:
            await self.conn.close(str(exc))

    def _take_bundle(self, first: bytes) -> tuple[list[bytes], bytes | None]:
        """``first`` and the small frames queued behind it, up to the bundle bounds; and the
        frame taken from the queue that did not fit (sent next), if any."""
        frames = [first]
        if len(first) > MAX_BUNDLED_FRAME_BYTES:
            return frames, None
        size = len(first)
        while len(frames) < MAX_BUNDLED and not self.queue.empty():
            frame = self._unknown(self.queue.get_nowait())
            if frame is None:
                continue
            if len(frame) > MAX_BUNDLED_FRAME_BYTES or size + len(frame) > BUNDLE_PAYLOAD_BYTES:
                return frames, frame
            frames.append(frame)
            size += len(frame)
        return frames, None

    def _unknown(self, item: tuple[bytes, bytes | None]) -> bytes | None:
        """The queued frame, unless it is gossip the peer already has (then None); a gossip
        frame about to be sent is recorded as known to the peer."""
        frame, gossip_id = item
        if gossip_id is None:
            return frame
        if self.knows(gossip_id):
            return None
        self.learn(gossip_id)
        return frame
