"""The P2P service of a node: its configuration, its lifetime, and the life of each peer.

``async with P2PNode(...) as p2p`` owns every task it starts (a ``TaskGroup``): the listener,
one reader and one writer per peer, and the dialler. The concerns live in their own modules
and are wired here through constructors:

- ``slots.PeerTable``: who holds a connection (handshakes count; per-IP caps; eviction),
- ``handshake``: Hello/Auth within one deadline, advertised addresses checked strictly,
- ``gossip.Pipeline``: every frame after the handshake (bounded per type, never raises),
- ``relay.Relay``: which peers get a gossip frame now, later or never (``Neighbours``),
- ``sync.Syncer``: GetBlocks/Blocks, answers within a per-peer cost budget,
- ``dialer``: the address book and concurrent dialling with backoff.

A peer that reaches the ban threshold is disconnected and banned. No exception ends the
service: a peer's task turns anything unexpected into a dropped peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fedcoin.data.keys import PrivateKey
from fedcoin.errors import BadAddress, ConfigError, HandshakeRefused
from fedcoin.network.addresses import advertised_address, format_host_port, parse_host_port
from fedcoin.network.dialer import AddressBook, Dialer
from fedcoin.network.gossip import Handler, Handlers, Pipeline, SeenCache
from fedcoin.network.handshake import ALREADY_CONNECTED, Identity, handshake
from fedcoin.network.messages import MAX_FRAME_BYTES, GetPeers, Hello, Message
from fedcoin.network.peers import BanList, Peer, PeerLimits
from fedcoin.network.relay import Relay
from fedcoin.network.slots import PeerTable
from fedcoin.network.sync import ChainView, Syncer
from fedcoin.network.transport import (
    Connection,
    DelayedLink,
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
    advertise: str = ""
    """``host:port`` gossiped as ours (Hello, Peers); "" = the bound address, unless that is
    unspecified (0.0.0.0 / ::), in which case nothing is advertised."""
    port: int = 0
    """Port to listen on; 0 asks the OS."""
    bootstrap: tuple[str, ...] = ()
    """``host:port`` of peers to keep connected."""
    discover: bool = True
    """Dial peers learnt from ``Peers`` messages, up to ``max_outbound``."""
    max_message_bytes: int = MAX_FRAME_BYTES
    """Largest frame accepted (each message type has its own, smaller bound too)."""
    connect_timeout: float = 5.0
    """Seconds to open a connection."""
    send_timeout: float = 10.0
    """Seconds to send one frame."""
    handshake_timeout: float = 5.0
    """Seconds the whole handshake (Hello and Auth both ways) may take."""
    reconnect_min: float = 0.5
    """First reconnect delay; doubles on each failure."""
    reconnect_max: float = 30.0
    """Longest reconnect delay."""
    limits: PeerLimits = field(default_factory=PeerLimits)
    """Caps, rate limits and ban policy."""
    relay_defer: float = 1.0
    """Seconds before a vote or proposal is relayed to a peer connected to its origin (which
    has it from there, unless the origin is faulty); see ``relay.py``."""
    link_delay_ms: float = 0.0
    """Benchmarks only: every frame from a peer is handed over this long after it arrived
    (``transport.DelayedLink``), an emulated network latency for nodes on one loopback."""


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
        limits = config.limits
        self.handlers = Handlers()
        self.seen = SeenCache()
        self.bans = BanList(clock)
        self.table = PeerTable(limits, clock)
        self.peers: dict[str, Peer] = self.table.peers
        self.app = app if app is not None else web.Application()
        self.port = config.port
        self.listen = ""
        """Where this node accepts peers (the bound ``host:port``)."""
        self.advertised = _checked_advertise(config.advertise, config.host, config.port)
        """What this node tells peers it listens on; "" for nothing."""
        self.notifier = notifier if notifier is not None else Notifier()
        self.max_frame_bytes = min(config.max_message_bytes, MAX_FRAME_BYTES)
        self.book = AddressBook(config.bootstrap, limits, self._own_addresses)
        self.syncer = Syncer(chain, limits, self.penalise, self._notify)
        self.relay = Relay(
            self.peers, self.node_pubkey, defer=config.relay_defer, useful=self.handlers.useful,
            spawn=self._spawn, clock=clock,
        )  # fmt: skip
        self.pipeline = Pipeline(
            peers=self.peers, handlers=self.handlers, seen=self.seen, syncer=self.syncer,
            relay=self.relay, book=self.book, max_frame_bytes=self.max_frame_bytes,
            penalise=self.penalise, notify=self._notify, clock=clock,
        )  # fmt: skip
        self.dialer = Dialer(
            self.book, peers=self.peers, limits=limits, discover=config.discover,
            backoff=(config.reconnect_min, config.reconnect_max), connect_to=self.connect_to,
            spawn=self._spawn, clock=clock,
        )  # fmt: skip
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._dialing: set[str] = set()
        self._stopping = False
        add_p2p_route(
            self.app,
            self._accept,
            max_bytes=self.max_frame_bytes,
            send_timeout=config.send_timeout,
        )

    # --- lifetime ---------------------------------------------------------------------------
    async def __aenter__(self) -> P2PNode:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._runner, self.port = await serve(self.app, self.config.host, self.config.port)
        self.listen = format_host_port(self.config.host, self.port)
        self.advertised = _checked_advertise(self.config.advertise, self.config.host, self.port)
        self._spawn(self.dialer.run())
        self._spawn(self.relay.run())
        log.info("p2p listening on %s, advertising %s", self.listen, self.advertised or "nothing")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        self.dialer.stopping = True
        self.dialer.wake.set()
        for peer in list(self.peers.values()):
            await peer.conn.close("shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        if self._group is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._group.__aexit__(None, None, None)

    def register(
        self, cls: type[Message], handler: Handler, useful: Callable[[Message], bool] | None = None
    ) -> None:
        """Register the application's validator/deliverer for a gossiped message type, and
        optionally whether a late copy of one is still worth relaying."""
        self.handlers.register(cls, handler, useful)

    def broadcast(self, message: Message) -> None:
        """Publish a message this node originated (marked seen so echoes are dropped)."""
        self.pipeline.broadcast(message)

    def _notify(self) -> None:
        self.notifier.notify()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start a task owned by this service's TaskGroup, cancelled when it stops."""
        if self._group is None:
            coro.close()
            raise RuntimeError("P2PNode used outside 'async with'")
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _own_addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.listen, self.advertised) if a)

    # --- connections -----------------------------------------------------------------------
    async def connect_to(self, address: str) -> bool:
        """Dial ``address`` and run the peer; False if it cannot be reached or refused us."""
        if address in self._own_addresses() or address in self._dialing:
            return False
        if self.bans.banned(address):
            return False
        if address in self.dialer.connected()[0]:
            return True
        try:
            parse_host_port(address)
        except BadAddress as exc:
            log.warning("not dialling %s", exc)
            return False
        self._dialing.add(address)
        try:
            try:
                conn = await connect(
                    address,
                    max_bytes=self.max_frame_bytes,
                    timeout=self.config.connect_timeout,
                    send_timeout=self.config.send_timeout,
                )
            except TransportError as exc:
                log.info("%s", exc)
                return False
            self.book.add(address)
            return await self.attach(conn)
        finally:
            self._dialing.discard(address)

    async def attach(self, conn: Connection) -> bool:
        """Run a peer over an already-open connection (e.g. a loopback pair in tests)."""
        ready = asyncio.get_running_loop().create_future()
        self._spawn(self._run_peer(conn, ready))
        return bool(await ready)

    async def _accept(self, conn: Connection) -> None:
        await self._run_peer(conn, None)

    def _refusal(self, peer: Peer, hello: Hello, proven: bool) -> str | None:
        """A local reason to refuse this peer, checked before we prove our key and after."""
        if self.bans.banned(hello.node_pubkey.hex()) or (
            hello.listen and self.bans.banned(hello.listen)
        ):
            return "banned"
        if proven and hello.node_pubkey.hex() in self.peers:
            return ALREADY_CONNECTED
        if not self.table.room_for(peer)[0]:
            return "too many peers, none idle"
        return None

    async def _run_peer(self, conn: Connection, ready: asyncio.Future[bool] | None) -> None:
        if self.config.link_delay_ms > 0:
            conn = DelayedLink(conn, self.config.link_delay_ms / 1000)
        peer = Peer(conn, self.config.limits, self.clock)
        writer: asyncio.Task[None] | None = None
        try:
            if conn.inbound:
                self.table.admit(peer)
            else:
                self.table.start_outbound(peer)
            me = Identity(self.config.chain_id, self.config.genesis, self.node_key, self.advertised)
            await handshake(
                peer, me, self.chain, deadline=self.config.handshake_timeout,
                refused=lambda hello, proven: self._refusal(peer, hello, proven),
            )  # fmt: skip
            victim = self.table.join(peer)
            if victim is not None:
                log.info("evicting idle peer %s for %s", victim.name, peer.name)
                self._spawn(victim.conn.close("evicted for a new peer"))
            if ready is not None:
                ready.set_result(True)
            writer = asyncio.create_task(peer.writer())
            log.info("connected to %s (%s)", peer.name, "in" if conn.inbound else "out")
            self._notify()
            peer.enqueue(GetPeers())
            self.relay.announce()
            self.syncer.maybe_sync(peer)
            await self._read(peer)
        except HandshakeRefused as exc:
            level = logging.INFO if exc.routine else logging.WARNING
            log.log(level, "refused peer %s: %s", conn.remote, exc)
            if not conn.inbound and peer.proven_key:
                self.book.note_key(conn.remote, peer.proven_key)  # do not dial it again
            await conn.close(str(exc))
        except TransportError as exc:
            log.info("peer %s: %s", peer.name, exc)
        except Exception:  # noqa: BLE001 - a bug must drop this peer, never the service
            log.exception("peer %s dropped on an unexpected error", peer.name)
        finally:
            if ready is not None and not ready.done():
                ready.set_result(False)
            if writer is not None:
                writer.cancel()
            was_peer = self.peers.get(peer.key) is peer
            if was_peer:
                log.info("disconnected from %s", peer.name)
                if (
                    not conn.inbound
                    and self.clock() - peer.connected_at > self.config.reconnect_max
                ):
                    self.book.reset(conn.remote)  # a long good link: redial it at once
            self.table.release(peer)
            if was_peer and not self._stopping:
                self.relay.announce()
            await conn.close("bye")
            self._notify()
            self.dialer.wake.set()

    async def _read(self, peer: Peer) -> None:
        conn = peer.conn
        while not self._stopping and self.peers.get(peer.key) is peer:
            frame = await conn.recv()
            if frame is None:
                violation = getattr(conn, "violation", "")
                if violation:
                    # An oversized or non-binary frame: the transport dropped the link
                    self.penalise(peer, self.config.limits.ban_threshold, violation)
                    self._ban(peer)
                return
            await self.pipeline.on_frame(peer, frame)
            if peer.score >= self.config.limits.ban_threshold:
                self._ban(peer)
                return

    def _ban(self, peer: Peer) -> None:
        seconds = self.config.limits.ban_seconds
        self.bans.ban(peer.key, seconds)
        # A listen address is only the peer's own claim, unless we dialled it ourselves.
        if peer.advertised and not peer.conn.inbound and peer.advertised == peer.conn.remote:
            self.bans.ban(peer.advertised, seconds)
        log.warning("banned %s for %.0f s (score %d)", peer.name, seconds, peer.score)

    def penalise(self, peer: Peer, points: int, why: str) -> None:
        peer.score += points
        log.info("peer %s +%d (%s), score %d", peer.name, points, why, peer.score)
        self._notify()

    # --- for tests and the application -----------------------------------------------------
    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever this node's state changes."""
        await self.notifier.wait_for(predicate, timeout)


def _checked_advertise(configured: str, host: str, port: int) -> str:
    """``advertised_address``, with a bad configured address as a ``ConfigError``."""
    try:
        return advertised_address(configured, host, port)
    except BadAddress as exc:
        raise ConfigError(f"advertise address: {exc}") from None
