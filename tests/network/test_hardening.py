"""Issue 9 on real sockets: no input ends a peer's task, frames are bounded per type before
decoding, idle or half-open connections cannot lock honest nodes out, silent addresses cannot
delay reconnecting, and GetBlocks answers cost the asker. Waits are on facts, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from fedcoin.data.tx import Transfer, make_tx
from fedcoin.network import messages
from fedcoin.network.messages import (
    MAX_BLOCKS_BATCH,
    Blocks,
    GetBlocks,
    Peers,
    Ping,
    Pong,
    TxMessage,
    encode_message,
)
from fedcoin.network.peers import PENALTY_UNEXPECTED, PeerLimits
from fedcoin.network.transport import TransportError, connect
from tests.helpers import CHAIN_ID, key
from tests.network.harness import (
    NetNode,
    Network,
    handshake_as,
    net_genesis,
    read_until_closed,
)

GENESIS = net_genesis()


def a_tx(i: int):
    return make_tx(key("node-z"), CHAIN_ID, i, Transfer(key("node-y").address, 1 + i))


async def ping_pong(conn, nonce: int = 99, timeout: float = 10) -> None:
    """The node still answers this connection: a Ping gets its Pong."""
    await conn.send(encode_message(Ping(nonce)))
    async with asyncio.timeout(timeout):
        while True:
            frame = await conn.recv()
            assert frame is not None, "the node hung up"
            for message in messages.decode_frames(frame, 1 << 26):
                if isinstance(message, Pong) and message.nonce == nonce:
                    return


# --- 1. no exception of any type ends a peer task ------------------------------------------
@pytest.mark.parametrize("error", [ValueError, KeyError, TypeError, ZeroDivisionError, IndexError])
@pytest.mark.parametrize("path", ["gossip", "sync"])
async def test_an_unexpected_error_in_a_handler_is_a_drop_and_a_penalty(error, path) -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))
        b = await net.add(NetNode("b", GENESIS))
        calls = []

        async def broken(message, peer) -> None:
            calls.append(message)
            net.notifier.notify()
            raise error("attacker-chosen content broke the handler")

        if path == "gossip":
            await net.link(b, a)
            b.p2p.handlers._by_type[TxMessage] = broken
            a.p2p.broadcast(TxMessage(a_tx(0)))
        else:  # a block fetched by sync is committed through the chain link
            await a.produce(gossip=False)

            async def broken_import(item) -> bool:
                await broken(item, None)
                return True

            b.link.import_committed = broken_import  # type: ignore[method-assign]
            await net.link(b, a)
        await net.wait_until(lambda: calls)
        a_at_b = a.key.public.hex()
        await net.wait_until(
            lambda: a_at_b in b.p2p.peers and b.p2p.peers[a_at_b].score >= PENALTY_UNEXPECTED
        )
        # b's service and its link to a are alive: a ping still gets its pong both ways
        await net.wait_until(lambda: b.key.public.hex() in a.p2p.peers)
        for node, other in ((a, b), (b, a)):
            peer = node.p2p.peers[other.key.public.hex()]
            want = peer.pongs + 1
            peer.enqueue(Ping(1))
            await net.wait_until(lambda peer=peer, want=want: peer.pongs >= want)
        conn = await handshake_as(b.address, "late", GENESIS)
        await ping_pong(conn)
        await conn.close()


# --- 2. frames bounded per type, before decoding; large ones decoded off the loop ---------
@pytest.fixture
def decoded_sizes(monkeypatch) -> Iterator[list[tuple[int, str]]]:
    """Record (size, thread name) of every frame handed to the msgpack decoder."""
    seen: list[tuple[int, str]] = []
    real = messages.decode_raw

    def recording(data, **kwargs):
        seen.append((len(data), threading.current_thread().name))
        return real(data, **kwargs)

    monkeypatch.setattr(messages, "decode_raw", recording)
    yield seen


async def test_a_huge_first_frame_is_refused_without_decoding(decoded_sizes) -> None:
    async with Network() as net:
        # a node configured like a full node with a 64 MiB content cap (128 MiB frames)
        a = await net.add(NetNode("a", GENESIS, max_message_bytes=128 * 1024 * 1024))
        for size in (2 * 1024 * 1024, 57 * 1024 * 1024):
            conn = await connect(a.address, max_bytes=1 << 22, timeout=5, send_timeout=30)
            started = time.monotonic()
            frame = b"\x93\x01\x01" + bytes(size - 3)  # claims to be a Hello
            try:
                await conn.send(frame)
            except Exception:  # noqa: BLE001 - the node may hang up mid-frame
                pass
            await asyncio.wait_for(read_until_closed(conn), 30)
            assert time.monotonic() - started < 20
        assert all(n <= 1024 for n, _ in decoded_sizes)  # a Hello is a few hundred bytes
        # the node is fine
        honest = await handshake_as(a.address, "honest", GENESIS)
        await ping_pong(honest)
        await honest.close()


async def test_after_the_handshake_each_type_has_its_bound(decoded_sizes) -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, max_message_bytes=128 * 1024 * 1024))
        conn = await handshake_as(a.address, "chatty", GENESIS)
        big_ping = b"\x93\x01" + bytes([Ping.TYPE]) + bytes(100 * 1024)
        big_tx = b"\x93\x01" + bytes([TxMessage.TYPE]) + bytes(64 * 1024)  # no tx is this big
        for frame in (big_ping, big_tx):
            await conn.send(frame)
        await ping_pong(conn)
        assert not any(n > 16 * 1024 for n, _ in decoded_sizes)
        peer = a.p2p.peers[key("chatty").public.hex()]
        assert peer.score >= 2 * 25  # two malformed frames
        await conn.close()


async def test_a_large_block_is_decoded_off_the_event_loop(decoded_sizes) -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))
        b = await net.add(NetNode("b", GENESIS))
        await net.link(a, b)
        sender = a.key
        txs = [make_tx(sender, CHAIN_ID, i, Transfer(key("node-y").address, 1)) for i in range(600)]
        block = await a.produce(txs)
        assert len(encode_message(a.proposal_of(block))) > 64 * 1024
        await net.wait_until(lambda: b.head == block.hash)
        big = [thread for n, thread in decoded_sizes if n > 64 * 1024]
        assert big and all(thread != threading.main_thread().name for thread in big)


# --- 3. connection slots ------------------------------------------------------------------
async def test_idle_authenticated_attackers_cannot_lock_out_an_honest_node() -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))  # default limits: 16 inbound, 5 s idle
        attackers = [await handshake_as(a.address, f"idle-{i}", GENESIS) for i in range(16)]
        await net.wait_until(lambda: len(a.p2p.peers) == 16)
        honest = await net.add(NetNode("h", GENESIS, bootstrap=[a.address], reconnect_max=1.0))
        started = time.monotonic()
        await net.wait_until(
            lambda: (
                honest.key.public.hex() in a.p2p.peers and a.key.public.hex() in honest.p2p.peers
            ),
            timeout=15,
        )
        assert time.monotonic() - started < 15
        # an idle attacker gave way; the honest node stays and its blocks flow
        assert len(a.p2p.peers) == 16
        block = await honest.produce()
        await net.wait_until(lambda: a.head == block.hash)
        for conn in attackers:
            await conn.close()


async def test_connections_in_the_handshake_take_slots_and_time_out() -> None:
    async with Network() as net:
        # default limits: at most 8 inbound connections in the handshake at once
        a = await net.add(NetNode("a", GENESIS, handshake_timeout=4.0))
        started = time.monotonic()
        silent = [
            await connect(a.address, max_bytes=1 << 16, timeout=5, send_timeout=5)
            for _ in range(30)
        ]

        async def closed_after(conn) -> float:
            await read_until_closed(conn)
            return time.monotonic() - started

        # every silent connection is closed: those over the slots at once, the rest at the
        # handshake deadline (4 s)
        times = await asyncio.wait_for(asyncio.gather(*(closed_after(c) for c in silent)), 20)
        assert sum(t < 2.0 for t in times) >= 30 - 8
        assert max(times) < 15
        honest = await net.add(NetNode("h", GENESIS))
        await net.link(honest, a)


# --- 4. tarpit peer lists -----------------------------------------------------------------
async def test_silent_addresses_do_not_delay_reconnecting_to_bootstrap() -> None:
    tarpits = []
    for _ in range(64):  # they accept TCP (backlog) but never answer the websocket upgrade
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        tarpits.append(s)
    try:
        async with Network() as net:
            b = await net.add(NetNode("b", GENESIS))
            x = await net.add(
                NetNode("x", GENESIS, bootstrap=[b.address], discover=True, reconnect_min=0.2)
            )
            await net.wait_until(lambda: b.key.public.hex() in x.p2p.peers)
            addresses = tuple(f"127.0.0.1:{s.getsockname()[1]}" for s in tarpits)
            liar = await handshake_as(x.address, "liar", GENESIS)
            await liar.send(encode_message(Peers(addresses)))
            await ping_pong(liar)  # the Peers message was handled
            # b drops x; x must be back quickly, not after 64 dial timeouts
            await b.p2p.peers[x.key.public.hex()].conn.close("test")
            await net.wait_until(lambda: b.key.public.hex() not in x.p2p.peers)
            started = time.monotonic()
            await net.wait_until(lambda: b.key.public.hex() in x.p2p.peers, timeout=15)
            assert time.monotonic() - started < 4
            # and one peer could add only a few of its addresses
            limit = x.p2p.config.limits.max_addresses_per_peer
            assert sum(a in x.p2p.book for a in addresses) <= limit
            await liar.close()
    finally:
        for s in tarpits:
            s.close()


async def test_a_connected_node_is_not_redialled_under_another_address(monkeypatch) -> None:
    import fedcoin.network.node as node_module

    dials: list[str] = []
    real_connect = node_module.connect

    async def counting(address: str, **kwargs):
        dials.append(address)
        return await real_connect(address, **kwargs)

    monkeypatch.setattr(node_module, "connect", counting)
    async with Network() as net:
        # a advertises a name b cannot match to the address it will learn for a
        a = await net.add(NetNode("a", GENESIS, advertise="a.fedcoin.test:8700"))
        b = await net.add(NetNode("b", GENESIS, discover=True, reconnect_min=0.1))
        await net.link(a, b)
        dials.clear()
        teller = await handshake_as(b.address, "teller", GENESIS)
        await teller.send(encode_message(Peers((a.address,))))
        await ping_pong(teller)
        await net.wait_until(lambda: dials == [a.address])  # one try: it reaches a, known
        # the dialler wakes again and again on its backoff timer (0.1 s, doubling) but skips a
        with contextlib.suppress(TimeoutError):
            await net.wait_until(lambda: len(dials) > 1, timeout=3)
        assert dials == [a.address]
        assert len(a.p2p.peers) == 1 and len(b.p2p.peers) == 2
        await teller.close()


# --- 5. GetBlocks costs the asker --------------------------------------------------------
async def test_a_getblocks_flood_is_penalised_until_banned() -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))  # default limits
        for _ in range(70):
            await a.produce(gossip=False)
        conn = await handshake_as(a.address, "asker", GENESIS)
        with contextlib.suppress(TransportError):  # the node hangs up on us mid-flood
            for _ in range(400):
                await conn.send(encode_message(GetBlocks(1, MAX_BLOCKS_BATCH)))
        got = await asyncio.wait_for(read_until_closed(conn), 30)
        assert len([m for m in got if isinstance(m, Blocks)]) <= 20
        assert a.p2p.bans.banned(key("asker").public.hex())


async def answer_to(conn, request) -> Blocks:
    await conn.send(encode_message(request))
    async with asyncio.timeout(10):
        while True:
            frame = await conn.recv()
            assert frame is not None
            for answer in messages.decode_frames(frame, 1 << 26):
                if isinstance(answer, Blocks):
                    return answer


async def test_answers_are_bounded_in_bytes_and_sync_still_completes() -> None:
    limits = PeerLimits(max_answer_bytes=8 * 1024)
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, limits=limits))
        for _ in range(70):
            await a.produce(gossip=False)
        conn = await handshake_as(a.address, "asker", GENESIS)
        answer = await answer_to(conn, GetBlocks(1, MAX_BLOCKS_BATCH))
        sizes = [len(item.encode()) for item in answer.blocks]
        assert [item.block.height for item in answer.blocks] == list(range(1, len(sizes) + 1))
        assert 1 <= len(sizes) < 64 and sum(sizes[:-1]) <= 8 * 1024
        await conn.close()
        # an honest late node still syncs the whole chain from a, short answer by short answer
        late = await net.add(NetNode("l", GENESIS))
        await net.link(late, a)
        await net.wait_until(lambda: late.head == a.head)
