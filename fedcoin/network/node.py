"""The P2P service of a node: handshake, peers, gossip, sync, over any ``Connection``.

``async with P2PNode(...) as p2p`` owns every task it starts (a ``TaskGroup``): the listener,
one reader and one writer per peer, and the loop that keeps bootstrap peers connected with
backoff. Incoming frames follow one pipeline (``_on_frame``): rate limit → decode → Hello
first → point-to-point answers (Ping, GetPeers, GetBlocks, Blocks) or the gossip pipeline
(seen → validate → mark seen → deliver → relay). Errors become silent drops (``Ignore``) or
penalties (``Reject``); a peer that reaches the ban threshold is disconnected and banned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fedcoin.data.keys import TAG_HELLO, PrivateKey, verify
from fedcoin.errors import FedCoinError, HandshakeRefused, Ignore, NeedsSync, Reject
from fedcoin.network.gossip import Handler, Handlers, SeenCache
from fedcoin.network.messages import (
    PROTOCOL_VERSION,
    Auth,
    BlockMessage,
    Blocks,
    GetBlocks,
    GetPeers,
    Hello,
    Message,
    Peers,
    Ping,
    Pong,
    auth_digest,
    decode_message,
    encode_message,
    message_id,
)
from fedcoin.network.peers import (
    PENALTY_FLOOD,
    PENALTY_INVALID,
    PENALTY_MALFORMED,
    BanList,
    Peer,
    PeerLimits,
)
from fedcoin.network.sync import SYNC_BATCH, ChainView
from fedcoin.network.transport import (
    Connection,
    TransportError,
    add_p2p_route,
    connect,
    serve,
)

log = logging.getLogger("fedcoin.p2p")


@dataclass(frozen=True)
class NetConfig:
    chain_id: str
    """Network name; peers on another are refused."""
    genesis: bytes
    """Genesis hash; peers with another are refused."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 0
    """Port to listen on; 0 asks the OS."""
    bootstrap: tuple[str, ...] = ()
    """``host:port`` of peers to keep connected."""
    discover: bool = True
    """Dial peers learnt from ``Peers`` messages, up to ``max_outbound``."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest frame accepted."""
    connect_timeout: float = 5.0
    """Seconds to open a connection."""
    send_timeout: float = 10.0
    """Seconds to send one frame."""
    handshake_timeout: float = 5.0
    """Seconds to wait for the peer's Hello."""
    reconnect_min: float = 0.5
    """First reconnect delay; doubles on each failure."""
    reconnect_max: float = 30.0
    """Longest reconnect delay."""
    limits: PeerLimits = field(default_factory=PeerLimits)
    """Caps, rate limits and ban policy."""
    advertise: str = ""
    """``host:port`` peers should dial to reach this node ("": the listen address)."""


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds``; True if it was set.

    Built on ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11 ``wait_for``
    returns normally when the event is set in the same loop iteration as a cancellation
    arrives, losing the cancellation — a service loop that ticks on it then never stops.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Notifier:
    """Wakes waiters whenever something they may be waiting for changed. Nodes in one
    process (a simulation, a test) can share one, so a waiter needs only one event."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checking after every change."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._event.wait()


class P2PNode:
    def __init__(
        self,
        config: NetConfig,
        chain: ChainView,
        node_key: PrivateKey,
        *,
        app: web.Application | None = None,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.chain = chain
        self.node_key = node_key
        self.node_pubkey = node_key.public
        self.clock = clock
        self.handlers = Handlers()
        self.seen = SeenCache()
        self.validating: set[bytes] = set()
        self.bans = BanList(clock)
        self.peers: dict[str, Peer] = {}
        self.known: dict[str, None] = {}
        self.app = app if app is not None else web.Application()
        self.port = config.port
        self.listen = ""
        self.notifier = notifier if notifier is not None else Notifier()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._dialing: set[str] = set()
        self._stopping = False
        self._wake = asyncio.Event()
        add_p2p_route(
            self.app,
            self._accept,
            max_bytes=config.max_message_bytes,
            send_timeout=config.send_timeout,
        )

    # --- lifetime ---------------------------------------------------------------------------
    async def __aenter__(self) -> P2PNode:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._runner, self.port = await serve(self.app, self.config.host, self.config.port)
        self.listen = f"{self.config.host}:{self.port}"
        for address in self.config.bootstrap:
            self.known[address] = None
        self._spawn(self._maintain())
        log.info("p2p listening on %s", self.listen)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        self._wake.set()
        for peer in list(self.peers.values()):
            await peer.conn.close("shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        if self._group is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._group.__aexit__(None, None, None)

    def register(self, cls: type[Message], handler: Handler) -> None:
        """Register the application's validator/deliverer for a gossiped message type."""
        self.handlers.register(cls, handler)

    def _notify(self) -> None:
        self.notifier.notify()

    # --- connections -----------------------------------------------------------------------
    async def connect_to(self, address: str) -> bool:
        """Dial ``address`` and run the peer; False if it cannot be reached or refused us."""
        if address == self.listen or address in self._dialing or self.bans.banned(address):
            return False
        if any(p.hello and p.hello.listen == address for p in self.peers.values()):
            return True
        self._dialing.add(address)
        try:
            conn = await connect(
                address,
                max_bytes=self.config.max_message_bytes,
                timeout=self.config.connect_timeout,
                send_timeout=self.config.send_timeout,
            )
        except TransportError as exc:
            log.info("%s", exc)
            self._dialing.discard(address)
            return False
        self.known[address] = None
        try:
            return await self.attach(conn)
        finally:
            self._dialing.discard(address)

    async def attach(self, conn: Connection) -> bool:
        """Run a peer over an already-open connection (e.g. a loopback pair in tests)."""
        ready = asyncio.get_running_loop().create_future()
        self._spawn(self._run_peer(conn, ready))
        return bool(await ready)

    async def _accept(self, conn: Connection) -> None:
        inbound = sum(1 for p in self.peers.values() if p.conn.inbound)
        if inbound >= self.config.limits.max_inbound:
            await conn.close("too many peers")
            return
        await self._run_peer(conn, None)

    async def _run_peer(self, conn: Connection, ready: asyncio.Future[bool] | None) -> None:
        peer = Peer(conn, self.config.limits, self.clock)
        writer: asyncio.Task[None] | None = None
        try:
            await self._handshake(peer)
            self.peers[peer.key] = peer
            if ready is not None:
                ready.set_result(True)
            writer = asyncio.create_task(peer.writer())
            log.info("connected to %s (%s)", peer.name, "in" if conn.inbound else "out")
            self._notify()
            peer.enqueue(GetPeers())
            self._maybe_sync(peer)
            while not self._stopping:
                frame = await conn.recv()
                if frame is None:
                    if getattr(conn, "violation", ""):
                        # An oversized or non-binary frame: the transport dropped the link
                        self.penalise(peer, self.config.limits.ban_threshold, conn.violation)  # type: ignore[attr-defined]
                        self._ban(peer)
                    break
                await self._on_frame(peer, frame)
                if peer.score >= self.config.limits.ban_threshold:
                    self._ban(peer)
                    break
        except HandshakeRefused as exc:
            log.warning("refused peer %s: %s", conn.remote, exc)
            await conn.close(str(exc))
        except TransportError as exc:
            log.info("peer %s: %s", peer.name, exc)
        finally:
            if ready is not None and not ready.done():
                ready.set_result(False)
            if writer is not None:
                writer.cancel()
            if self.peers.get(peer.key) is peer:
                del self.peers[peer.key]
                log.info("disconnected from %s", peer.name)
            await conn.close("bye")
            self._notify()
            self._wake.set()

    async def _expect(self, peer: Peer, cls: type[Message]) -> Message:
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                frame = await peer.conn.recv()
        except TimeoutError:
            raise HandshakeRefused(f"no {cls.__name__} in time") from None
        if frame is None:
            raise HandshakeRefused(f"closed before {cls.__name__}")
        try:
            message = decode_message(frame, self.config.max_message_bytes)
        except Reject as exc:
            raise HandshakeRefused(f"malformed {cls.__name__}: {exc}") from None
        if not isinstance(message, cls):
            raise HandshakeRefused(f"got {type(message).__name__}, expected {cls.__name__}")
        return message

    async def _handshake(self, peer: Peer) -> None:
        """Hello both ways, then Auth both ways: each side signs the other's fresh nonce."""
        head, height, weight = self.chain.status()
        nonce = os.urandom(32)
        mine = Hello(
            PROTOCOL_VERSION, self.config.chain_id, self.config.genesis, self.node_pubkey,
            self.listen, head, height, weight, nonce,
        )  # fmt: skip
        await peer.conn.send(encode_message(mine))
        hello = await self._expect(peer, Hello)
        assert isinstance(hello, Hello)
        if hello.protocol != PROTOCOL_VERSION:
            raise HandshakeRefused(f"protocol {hello.protocol}, we speak {PROTOCOL_VERSION}")
        if hello.chain_id != self.config.chain_id or hello.genesis != self.config.genesis:
            raise HandshakeRefused(
                f"other network: chain {hello.chain_id!r} genesis {hello.genesis.hex()[:16]}, "
                f"ours {self.config.chain_id!r} {self.config.genesis.hex()[:16]}"
            )
        if hello.node_pubkey == self.node_pubkey:
            raise HandshakeRefused("connected to ourselves")
        if self.bans.banned(hello.node_pubkey.hex()) or (
            hello.listen and self.bans.banned(hello.listen)
        ):
            raise HandshakeRefused("banned")
        proof = self.node_key.sign(TAG_HELLO, auth_digest(hello.nonce, self.node_pubkey))
        await peer.conn.send(encode_message(Auth(proof)))
        auth = await self._expect(peer, Auth)
        assert isinstance(auth, Auth)
        # The peer holds the key it named (otherwise bans by key could be pinned on others)
        if not verify(
            hello.node_pubkey, TAG_HELLO, auth_digest(nonce, hello.node_pubkey), auth.signature
        ):
            raise HandshakeRefused("the peer could not prove its node key")
        if hello.node_pubkey.hex() in self.peers:
            raise HandshakeRefused("already connected")
        peer.hello = hello

    def _ban(self, peer: Peer) -> None:
        seconds = self.config.limits.ban_seconds
        self.bans.ban(peer.key, seconds)
        # A listen address is only the peer's own claim, unless we dialled it ourselves.
        if (
            peer.hello is not None
            and not peer.conn.inbound
            and peer.hello.listen == peer.conn.remote
        ):
            self.bans.ban(peer.hello.listen, seconds)
        log.warning("banned %s for %.0f s (score %d)", peer.name, seconds, peer.score)

    def penalise(self, peer: Peer, points: int, why: str) -> None:
        peer.score += points
        log.info("peer %s +%d (%s), score %d", peer.name, points, why, peer.score)
        self._notify()

    async def _maintain(self) -> None:
        """Keep bootstrap (and, with discovery, learnt) peers connected, with backoff."""
        delay: dict[str, float] = {}
        next_try: dict[str, float] = {}
        while not self._stopping:
            now = self.clock()
            connected = {p.hello.listen for p in self.peers.values() if p.hello}
            outbound = sum(1 for p in self.peers.values() if not p.conn.inbound)
            wanted = list(self.config.bootstrap)
            if self.config.discover:
                wanted += [a for a in self.known if a not in wanted]
            for address in wanted:
                if address in connected or address == self.listen or self.bans.banned(address):
                    continue
                if (
                    address not in self.config.bootstrap
                    and outbound >= self.config.limits.max_outbound
                ):
                    continue
                if next_try.get(address, 0.0) > now:
                    continue
                if await self.connect_to(address):
                    delay.pop(address, None)
                    outbound += 1
                else:
                    d = min(
                        delay.get(address, self.config.reconnect_min / 2) * 2,
                        self.config.reconnect_max,
                    )
                    delay[address] = d
                    next_try[address] = now + d
            pending = [t - now for t in next_try.values() if t > now]
            timeout = min(pending) if pending else self.config.reconnect_max
            self._wake.clear()
            await wait_event(self._wake, timeout)

    # --- the pipeline ----------------------------------------------------------------------
    async def _on_frame(self, peer: Peer, frame: bytes) -> None:
        # Per-peer rate limit: a flood costs score per message over the limit
        if not peer.bucket.take():
            self.penalise(peer, PENALTY_FLOOD, "flood")
            return
        # Seen: a gossip frame we already have is dropped before it is even decoded
        mid = message_id(frame)
        if mid in self.seen or mid in self.validating:
            return
        # Decode: malformed or unknown messages are protocol violations
        try:
            message = decode_message(frame, self.config.max_message_bytes)
        except Reject as exc:
            self.penalise(peer, PENALTY_MALFORMED, str(exc))
            return
        try:
            if message.GOSSIP:
                await self._gossip(peer, message, frame, mid)
            else:
                await self._direct(peer, message)
        except NeedsSync:
            self._maybe_sync(peer, force=True)
        except Ignore:
            pass
        except Reject as exc:
            self.penalise(peer, PENALTY_INVALID, str(exc))
        except FedCoinError as exc:
            # Our own trouble handling it (store, content, a full mempool), not the peer's
            # fault: drop the message, keep the peer. Escaping here would end the peer's task
            # and, through the TaskGroup, every other task of this service.
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
        self.seen.add(mid)
        self._notify()
        self.relay(frame, exclude=peer)

    def relay(self, frame: bytes, exclude: Peer | None = None) -> None:
        for other in list(self.peers.values()):
            if other is not exclude and not other.enqueue(frame):
                log.warning("peer %s is too slow; dropping it", other.name)
                self._spawn(other.conn.close("send queue full"))

    def broadcast(self, message: Message) -> None:
        """Publish a message this node originated (marked seen so echoes are dropped)."""
        frame = encode_message(message)
        self.seen.add(message_id(frame))
        self.relay(frame)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start a task owned by this service's TaskGroup, cancelled when it stops."""
        if self._group is None:
            raise RuntimeError("P2PNode used outside 'async with'")
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _direct(self, peer: Peer, message: Message) -> None:
        if isinstance(message, Hello | Auth):
            raise Reject(f"second {type(message).__name__}")
        if isinstance(message, Ping):
            peer.enqueue(Pong(message.nonce))
        elif isinstance(message, Pong):
            peer.pongs += 1
            self._notify()
        elif isinstance(message, GetPeers):
            addresses = [p.hello.listen for p in self.peers.values() if p.hello and p.hello.listen]
            peer.enqueue(
                Peers(tuple(a for a in addresses if a != (peer.hello and peer.hello.listen))[:64])
            )
        elif isinstance(message, Peers):
            for address in message.addresses:
                if len(self.known) < 1024 and address != self.listen:
                    self.known.setdefault(address, None)
            if self.config.discover:
                self._wake.set()
        elif isinstance(message, GetBlocks):
            limit = max(1, min(message.limit, SYNC_BATCH))
            peer.enqueue(Blocks(tuple(self.chain.blocks_after(message.locator, limit))))
        elif isinstance(message, Blocks):
            await self._on_blocks(peer, message)

    # --- sync ------------------------------------------------------------------------------
    def _maybe_sync(self, peer: Peer, force: bool = False) -> None:
        """Ask ``peer`` for blocks when it is heavier (or a block of it had no parent here)."""
        if peer.syncing or peer.hello is None:
            return
        _, _, weight = self.chain.status()
        if force or peer.hello.weight > weight:
            peer.syncing = True
            peer.enqueue(GetBlocks(tuple(self.chain.locator()[:64]), SYNC_BATCH))

    async def _on_blocks(self, peer: Peer, message: Blocks) -> None:
        peer.syncing = False
        handler = self.handlers.get(BlockMessage)
        if handler is None or not message.blocks:
            return
        head_before = self.chain.status()[0]
        for block in message.blocks:
            try:
                await handler(BlockMessage(block), peer)
            except NeedsSync:
                raise Reject("sync batch does not connect to our chain") from None
            except Ignore:
                continue
            self.seen.add(message_id(encode_message(BlockMessage(block))))
        self._notify()
        if len(message.blocks) >= SYNC_BATCH:
            self._maybe_sync(peer, force=True)
        elif self.chain.status()[0] != head_before:
            # Announce the new tip to everyone else; a peer that lacks its ancestors syncs.
            tip = message.blocks[-1]
            if self.chain.status()[0] == tip.hash:
                self.relay(encode_message(BlockMessage(tip)), exclude=peer)

    # --- for tests and the application -----------------------------------------------------
    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever this node's state changes."""
        await self.notifier.wait_for(predicate, timeout)
