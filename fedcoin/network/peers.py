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

from fedcoin.network.messages import Hello, Message, encode_message
from fedcoin.network.transport import Connection

Clock = Callable[[], float]

PENALTY_MALFORMED = 25
PENALTY_INVALID = 20
PENALTY_FLOOD = 5


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


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


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
        self.score = 0
        self.bucket = TokenBucket(limits.rate_per_second, limits.burst, clock)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(limits.send_queue)
        self.syncing = False
        self.pongs = 0

    @property
    def key(self) -> str:
        return self.hello.node_pubkey.hex() if self.hello else f"addr:{self.conn.remote}"

    @property
    def name(self) -> str:
        if self.hello is not None:
            where = self.hello.listen or self.conn.remote
            return f"{self.hello.node_pubkey.hex()[:8]}@{where}"
        return self.conn.remote

    def enqueue(self, message: Message | bytes) -> bool:
        """Queue a message; False when the queue is full (the peer is too slow)."""
        frame = message if isinstance(message, bytes) else encode_message(message)
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    async def writer(self) -> None:
        """Send queued frames until the connection closes."""
        while not self.conn.closed:
            frame = await self.queue.get()
            await self.conn.send(frame)
