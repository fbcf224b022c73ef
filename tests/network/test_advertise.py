"""What peers say about where they listen: parsed strictly at the handshake and in Peers, never
an unspecified address gossiped, and the configured advertise address used (real sockets)."""

from __future__ import annotations

import asyncio

import pytest

from fedcoin.errors import ConfigError
from fedcoin.network.messages import GetPeers, Peers, Ping, Pong, decode_frames, encode_message
from fedcoin.network.peers import PENALTY_INVALID
from tests.helpers import key
from tests.network.harness import NetNode, Network, handshake_as, net_genesis, read_until_closed

GENESIS = net_genesis()


async def ask(conn, message, answer_type, timeout: float = 10):
    await conn.send(encode_message(message))
    async with asyncio.timeout(timeout):
        while True:
            frame = await conn.recv()
            assert frame is not None, "the node hung up"
            for got in decode_frames(frame, 1 << 26):
                if isinstance(got, answer_type):
                    return got


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:80/internal/admin/reset?confirm=yes", "admin@127.0.0.1:80", "127.0.0.1", "a b:1"],
)
async def test_a_hello_with_a_bad_listen_string_is_refused(listen: str) -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))
        conn = await handshake_as(a.address, "ssrf", GENESIS, listen=listen)
        await asyncio.wait_for(read_until_closed(conn), 10)
        assert key("ssrf").public.hex() not in a.p2p.peers


async def test_bad_entries_in_peers_are_dropped_and_scored() -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, discover=False))
        conn = await handshake_as(a.address, "gossip", GENESIS)
        offered = ("evil:80/internal/admin", "127.0.0.1:5555", "0.0.0.0:7", "[::1]:6")
        await conn.send(encode_message(Peers(offered)))
        await ask(conn, Ping(3), Pong)
        assert "127.0.0.1:5555" in a.p2p.book and "[::1]:6" in a.p2p.book
        assert not any(bad in a.p2p.book for bad in ("evil:80/internal/admin", "0.0.0.0:7"))
        assert a.p2p.peers[key("gossip").public.hex()].score == PENALTY_INVALID
        await conn.close()


async def test_only_real_advertised_addresses_are_gossiped() -> None:
    async with Network() as net:
        hub = await net.add(NetNode("h", GENESIS))
        named = await net.add(NetNode("n", GENESIS, advertise="n.fedcoin.test:8700"))
        assert named.p2p.advertised == "n.fedcoin.test:8700"
        await net.link(named, hub)
        # an old node that advertises its bind-all address is accepted, but not gossiped
        old = await handshake_as(hub.address, "old", GENESIS, listen="0.0.0.0:8700")
        await ask(old, Ping(1), Pong)
        assert hub.p2p.peers[key("old").public.hex()].advertised == ""
        assert hub.p2p.peers[key("old").public.hex()].hello.listen == ""  # what the app reads
        asker = await handshake_as(hub.address, "asker", GENESIS, listen="127.0.0.1:9")
        answer = await ask(asker, GetPeers(), Peers)
        assert set(answer.addresses) == {"n.fedcoin.test:8700"}
        for conn in (old, asker):
            await conn.close()


def test_an_unusable_advertise_address_is_a_config_error() -> None:
    for bad in ("0.0.0.0:8700", "host:8700/path", "host"):
        with pytest.raises(ConfigError):
            NetNode("a", GENESIS, advertise=bad)


async def test_content_is_fetched_only_from_strict_peer_addresses(tmp_path) -> None:
    from aiohttp import web

    from fedcoin.application.content import ContentResolver
    from fedcoin.data.content import ContentStore
    from fedcoin.data.tx import ContentRef
    from fedcoin.errors import ContentMissing
    from fedcoin.network.transport import serve

    asked: list[str] = []

    async def record(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        lies = [f"127.0.0.1:{port}/internal/admin/reset?confirm=yes#", f"user@127.0.0.1:{port}"]
        resolver = ContentResolver(
            ContentStore(tmp_path, 1 << 20), lambda: [*lies, f"127.0.0.1:{port}"], timeout=5
        )
        ref = ContentRef(bytes(range(32)), 10, "")
        with pytest.raises(ContentMissing):
            await resolver.ensure([ref])
        await resolver.close()
        assert asked == [f"/content/{ref.sha256.hex()}"]
    finally:
        await runner.cleanup()
