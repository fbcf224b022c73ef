"""Bundles: small frames queued together for one peer leave as one frame, and the receiver
handles each of them as if it had come alone. And ``Stale``: a message that can never be useful
again has its later copies dropped unread."""

from __future__ import annotations

import asyncio

from fedcoin.errors import Ignore
from fedcoin.network.gossip import Stale
from fedcoin.network.messages import (
    MAX_BUNDLED_FRAME_BYTES,
    Bundle,
    Message,
    Ping,
    Pong,
    VoteMessage,
    decode_frames,
    decode_message,
    encode_message,
)
from fedcoin.network.peers import PENALTY_INVALID, Peer, PeerLimits
from fedcoin.network.transport import WebSocketConnection, loopback_pair
from tests.helpers import key, precommit
from tests.network.harness import NetNode, Network, handshake_as, net_genesis

GENESIS = net_genesis()


async def test_frames_queued_together_leave_as_one_bundle_in_order() -> None:
    mine, theirs = loopback_pair("me", "them")
    peer = Peer(mine, PeerLimits(), clock=lambda: 0.0)
    small = [encode_message(Ping(n)) for n in range(3)]
    big = b"\x93" + bytes(MAX_BUNDLED_FRAME_BYTES)  # too big to bundle: goes alone, next
    for frame in [*small, big, encode_message(Pong(7))]:
        assert peer.enqueue(frame)
    writer = asyncio.create_task(peer.writer())
    try:
        async with asyncio.timeout(10):
            first, second, third = [await theirs.recv() for _ in range(3)]
    finally:
        writer.cancel()
    assert first is not None and second is not None and third is not None
    assert decode_message(first) == Bundle(tuple(small))
    assert decode_frames(first) == [Ping(0), Ping(1), Ping(2)]
    assert second == big
    assert third == encode_message(Pong(7))  # a frame alone is sent as it is


async def test_each_frame_of_a_bundle_is_handled_and_a_nested_bundle_is_rejected() -> None:
    async with Network() as net:
        node = await net.add(NetNode("a", GENESIS, discover=False))
        conn = await handshake_as(node.address, "bundler", GENESIS)
        pings = tuple(encode_message(Ping(n)) for n in (1, 2, 3))
        await conn.send(encode_message(Bundle(pings)))
        pongs: list[int] = []
        async with asyncio.timeout(20):
            while len(pongs) < 3:
                frame = await conn.recv()
                assert frame is not None, "the node hung up"
                pongs += [m.nonce for m in decode_frames(frame, 1 << 26) if isinstance(m, Pong)]
        assert pongs == [1, 2, 3]
        peer = node.p2p.peers[next(iter(node.p2p.peers))]
        assert peer.score == 0
        nested = encode_message(Bundle((encode_message(Bundle(pings[:1])),)))
        await conn.send(nested)
        await node.p2p.wait_for(lambda: peer.score == PENALTY_INVALID, 20)
        await conn.close()


async def test_a_stale_message_marks_its_copies_seen_and_a_plain_ignore_does_not() -> None:
    async with Network() as net:
        node = await net.add(NetNode("a", GENESIS, discover=False))
        calls: list[int] = []
        verdicts: list[Exception] = [Ignore("not yet"), Stale("committed height"), Ignore("x")]

        async def handler(message: Message, peer: object) -> None:
            calls.append(1)
            raise verdicts[len(calls) - 1]

        node.p2p.register(VoteMessage, handler)
        conn = await handshake_as(node.address, "late", GENESIS)
        frame = encode_message(VoteMessage(precommit(key("node-x"), 1, 0, None)))
        for nonce in range(3):  # each copy followed by a Ping barrier
            await conn.send(frame)
            await conn.send(encode_message(Ping(nonce)))
            async with asyncio.timeout(20):
                while not any(
                    isinstance(m, Pong) and m.nonce == nonce
                    for m in decode_frames(await _recv(conn), 1 << 26)
                ):
                    pass
        # Ignored: the second copy is handled again; Stale: the third is dropped unread
        assert len(calls) == 2
        await conn.close()


async def _recv(conn: WebSocketConnection) -> bytes:
    frame = await conn.recv()
    assert frame is not None, "the node hung up"
    return frame
