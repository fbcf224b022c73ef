"""Byte transport between peers: aiohttp websockets (the only module that imports aiohttp for
P2P), and an in-memory loopback pair so the protocol can be tested without sockets.

A ``Connection`` moves whole binary frames: ``send`` (with a timeout), ``recv`` (``None`` once
the other side is gone), ``close`` with a reason. Frames above ``max_bytes`` are refused by
aiohttp itself before they are buffered whole; text frames are a protocol error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
from aiohttp import web

log = logging.getLogger("fedcoin.transport")
P2P_PATH = "/p2p"
#: Seconds the HTTP server waits for running handlers when it stops, before cancelling them.
SHUTDOWN_GRACE = 0.25


class TransportError(Exception):
    """A connection could not be opened, or broke."""


class Connection(Protocol):
    remote: str
    """The other side's address, as seen from here (``host:port``)."""
    inbound: bool
    """True when the other side dialled us."""

    async def send(self, frame: bytes) -> None: ...

    async def recv(self) -> bytes | None: ...

    async def close(self, reason: str = "") -> None: ...

    @property
    def closed(self) -> bool: ...


class WebSocketConnection:
    """One websocket, either side. ``recv`` returns ``None`` on close or on a bad frame."""

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        remote: str,
        inbound: bool,
        send_timeout: float,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.ws = ws
        self.remote = remote
        self.inbound = inbound
        self.send_timeout = send_timeout
        self.session = session
        self.violation = ""

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, frame: bytes) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.ws.send_bytes(frame)
        except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise TransportError(f"send to {self.remote} failed: {exc!r}") from None

    async def recv(self) -> bytes | None:
        try:
            msg = await self.ws.receive()
        except (ConnectionError, RuntimeError, aiohttp.ClientError, ValueError):
            return None
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == aiohttp.WSMsgType.ERROR:
            self.violation = f"bad frame: {self.ws.exception()!r}"
        elif msg.type == aiohttp.WSMsgType.TEXT:
            self.violation = "text frame"
        return None

    async def close(self, reason: str = "") -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.ws.close(message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
            pass
        if self.session is not None:
            await self.session.close()


def add_p2p_route(
    app: web.Application,
    on_connection: Callable[[Connection], Awaitable[None]],
    *,
    max_bytes: int,
    send_timeout: float,
) -> None:
    """Serve peers on ``/p2p`` of an aiohttp app (the node's HTTP API shares the app)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=max_bytes, heartbeat=30.0)
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        remote = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        await on_connection(WebSocketConnection(ws, remote, True, send_timeout))
        return ws

    app.router.add_get(P2P_PATH, handler)


async def connect(
    address: str, *, max_bytes: int, timeout: float, send_timeout: float
) -> WebSocketConnection:
    """Dial a peer's ``host:port``; ``TransportError`` if it does not answer in time."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=timeout))
    try:
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(
                f"ws://{address}{P2P_PATH}", max_msg_size=max_bytes, heartbeat=30.0
            )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await session.close()
        raise TransportError(f"cannot connect to {address}: {exc!r}") from None
    except BaseException:
        # Cancelled mid-dial (the node is stopping): the session must not leak.
        await session.close()
        raise
    return WebSocketConnection(ws, address, False, send_timeout, session)


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; return the runner and the bound port (``port=0`` asks the OS)."""
    # On shutdown, a handler still running after SHUTDOWN_GRACE is cancelled: a peer's
    # websocket handler can outlive our close of it, and aiohttp would wait 60 s for each node
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # noqa: SLF001 - aiohttp exposes the bound socket only here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


class LoopbackConnection:
    """One end of an in-memory connection pair (bounded queues, no sockets)."""

    def __init__(self, remote: str, inbound: bool, inbox: asyncio.Queue[bytes | None]) -> None:
        self.remote = remote
        self.inbound = inbound
        self.inbox = inbox
        self.peer: LoopbackConnection | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frame: bytes) -> None:
        if self._closed or self.peer is None or self.peer.closed:
            raise TransportError("loopback peer closed")
        await self.peer.inbox.put(frame)

    async def recv(self) -> bytes | None:
        if self._closed:
            return None
        return await self.inbox.get()

    async def close(self, reason: str = "") -> None:
        for end in (self, self.peer):
            if end is not None and not end._closed:
                end._closed = True
                with contextlib.suppress(asyncio.QueueFull):
                    end.inbox.put_nowait(None)


class DelayedLink:
    """A ``Connection`` whose received frames are handed over ``delay`` seconds after they
    arrived: an emulated network latency (benchmarks only; nodes on one loopback have none).

    A reader task owned by the link takes frames off the connection as they come and stamps
    them; ``recv`` returns each at its stamp plus ``delay``. Order is kept, throughput is not
    limited (frames in flight overlap, as on a real link), and at most ``bound`` frames wait.
    Sending is untouched: both ends of a link delay what they receive, so a round trip costs
    two delays and one hop one.
    """

    def __init__(self, inner: Connection, delay: float, bound: int = 4096) -> None:
        self.inner = inner
        self.delay = delay
        self.remote = inner.remote
        self.inbound = inner.inbound
        self._arrived: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(bound)
        self._reader: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def violation(self) -> str:
        return str(getattr(self.inner, "violation", ""))

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame)

    async def recv(self) -> bytes | None:
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._reader = loop.create_task(self._read(), name=f"delay {self.remote}")
        arrived, frame = await self._arrived.get()
        wait = arrived + self.delay - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return frame

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.inner.recv()
            await self._arrived.put((loop.time(), frame))
            if frame is None:
                return

    async def close(self, reason: str = "") -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.inner.close(reason)


def loopback_pair(
    a: str, b: str, bound: int = 1024
) -> tuple[LoopbackConnection, LoopbackConnection]:
    """(a's end dialling b, b's end accepting a)."""
    left = LoopbackConnection(b, False, asyncio.Queue(bound))
    right = LoopbackConnection(a, True, asyncio.Queue(bound))
    left.peer, right.peer = right, left
    return left, right
