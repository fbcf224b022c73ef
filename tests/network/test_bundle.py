"""Bundles: small frames queued together for one peer leave as one frame, and the receiver
handles each of them as if it had come alone."""

from __future__ import annotations

import asyncio

from fedcoin.network.messages import (
    MAX_BUNDLED_FRAME_BYTES,
    Bundle,
    Ping,
    Pong,
    decode_frames,
    decode_message,
    encode_message,
)
from fedcoin.network.peers import PENALTY_INVALID, Peer, PeerLimits
from fedcoin.network.transport import loopback_pair
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
