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
    BlockMessage,
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
            message = messages.decode_message(frame)
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
        else:  # a block fetched by sync goes through the same handler
            await a.produce(gossip=False)
            b.p2p.handlers._by_type[BlockMessage] = broken
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
        assert all(n <= messages.HANDSHAKE_FRAME_BYTES for n, _ in decoded_sizes)
        # the node is fine
        honest = await handshake_as(a.address, "honest", GENESIS)
        await ping_pong(honest)
        await honest.close()


async def test_after_the_handshake_each_type_has_its_bound(decoded_sizes) -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, max_message_bytes=128 * 1024 * 1024))
        conn = await handshake_as(a.address, "chatty", GENESIS)
        big_ping = b"\x93\x01" + bytes([Ping.TYPE]) + bytes(100 * 1024)
        big_tx = b"\x93\x01" + bytes([TxMessage.TYPE]) + bytes(messages.MAX_TX_BYTES)
        for frame in (big_ping, big_tx):
            await conn.send(frame)
        await ping_pong(conn)
        assert not any(n > messages.SMALL_FRAME_BYTES for n, _ in decoded_sizes)
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
        assert len(encode_message(BlockMessage(block))) > 64 * 1024
        await net.wait_until(lambda: b.head == block.hash)
        big = [thread for n, thread in decoded_sizes if n > 64 * 1024]
        assert big and all(thread != threading.main_thread().name for thread in big)


# --- 3. connection slots ------------------------------------------------------------------
async def test_idle_authenticated_attackers_cannot_lock_out_an_honest_node() -> None:
    limits = PeerLimits(evict_idle_seconds=0.5)
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, limits=limits))
        attackers = [await handshake_as(a.address, f"idle-{i}", GENESIS) for i in range(16)]
        await net.wait_until(lambda: len(a.p2p.peers) == 16)
        honest = await net.add(NetNode("h", GENESIS, bootstrap=[a.address], reconnect_max=1.0))
        started = time.monotonic()
        await net.wait_until(
            lambda: (
                honest.key.public.hex() in a.p2p.peers and a.key.public.hex() in honest.p2p.peers
            ),
            timeout=10,
        )
        assert time.monotonic() - started < 10
        # an idle attacker gave way; the honest node stays
        assert len(a.p2p.peers) == 16
        block = await honest.produce()
        await net.wait_until(lambda: a.head == block.hash)
        for conn in attackers:
            await conn.close()


async def test_connections_in_the_handshake_take_slots_and_time_out() -> None:
    limits = PeerLimits(handshake_slots=4)
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, limits=limits, handshake_timeout=1.0))
        started = time.monotonic()
        silent = [
            await connect(a.address, max_bytes=1 << 16, timeout=5, send_timeout=5)
            for _ in range(12)
        ]
        assert len(a.p2p.table.handshaking) <= 4
        # every silent connection is closed: the extra ones at once, the rest at the deadline
        await asyncio.wait_for(asyncio.gather(*(read_until_closed(c) for c in silent)), 10)
        assert time.monotonic() - started < 8
        assert not a.p2p.table.handshaking
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
            assert (
                sum(a in x.p2p.book for a in addresses)
                <= x.p2p.config.limits.max_addresses_per_peer
            )
            # b drops x; x must be back quickly, not after 64 dial timeouts
            await b.p2p.peers[x.key.public.hex()].conn.close("test")
            await net.wait_until(lambda: b.key.public.hex() not in x.p2p.peers)
            started = time.monotonic()
            await net.wait_until(lambda: b.key.public.hex() in x.p2p.peers, timeout=15)
            assert time.monotonic() - started < 4
            await liar.close()
    finally:
        for s in tarpits:
            s.close()


async def test_a_connected_node_is_not_redialled() -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))
        b = await net.add(NetNode("b", GENESIS, discover=True))
        await net.link(a, b)  # a dialled b: b knows a only as an inbound peer
        dials = []
        real = b.p2p.connect_to

        async def counting(address: str) -> bool:
            dials.append(address)
            return await real(address)

        b.p2p.dialer.connect_to = counting
        teller = await handshake_as(b.address, "teller", GENESIS)
        await teller.send(encode_message(Peers((a.address,))))
        await ping_pong(teller)
        b.p2p.dialer.wake.set()
        await ping_pong(teller, nonce=100)
        assert a.address in b.p2p.book
        assert dials == []
        assert len(a.p2p.peers) == 1 and len(b.p2p.peers) == 2
        await teller.close()


# --- 5. GetBlocks costs the asker --------------------------------------------------------
async def test_getblocks_is_rate_limited_by_cost_and_answers_are_bounded() -> None:
    limits = PeerLimits(
        sync_bytes_per_second=256 * 1024, sync_burst_bytes=1024 * 1024, max_answer_bytes=8 * 1024
    )
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, limits=limits))
        for _ in range(70):
            await a.produce(gossip=False)
        conn = await handshake_as(a.address, "asker", GENESIS)
        locator = (GENESIS.block().hash,)
        # one request at a time is served, and one answer holds at most ~8 KiB of blocks
        await conn.send(encode_message(GetBlocks(locator, MAX_BLOCKS_BATCH)))
        async with asyncio.timeout(10):
            while not isinstance(answer := messages.decode_message(await conn.recv()), Blocks):
                pass
        sizes = [len(block.encode()) for block in answer.blocks]
        assert 1 <= len(sizes) < 70 and sum(sizes[:-1]) <= 8 * 1024
        # a flood of pipelined requests is penalised until the asker is banned
        with contextlib.suppress(TransportError):  # the node hangs up on us mid-flood
            for _ in range(400):
                await conn.send(encode_message(GetBlocks(locator, MAX_BLOCKS_BATCH)))
        got = await asyncio.wait_for(read_until_closed(conn), 20)
        assert len([m for m in got if isinstance(m, Blocks)]) <= 20
        assert a.p2p.bans.banned(key("asker").public.hex())
        # an honest late node still syncs the whole chain from a, batch by batch
        late = await net.add(NetNode("l", GENESIS))
        await net.link(late, a)
        await net.wait_until(lambda: late.head == a.head)
