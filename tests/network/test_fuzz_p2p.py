"""Fuzzing every P2P message type (Hypothesis): random and mutated frames are protocol
violations or drops, never a crash, and the node keeps answering.

- The decoder alone: any bytes either decode or raise ``ProtocolViolation``, nothing else.
- A live node (real websockets on 127.0.0.1, in a background event loop): frames sent after the
  handshake, and first frames before it. After every example the node still answers a Ping on
  the same connection; at the end a fresh peer still gets in and the chain is unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcoin.data.tx import ShareReveal, Transfer, make_tx
from fedcoin.errors import ProtocolViolation
from fedcoin.network.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Auth,
    Blocks,
    Bundle,
    CommittedBlock,
    EvidenceMessage,
    GetBlocks,
    GetPeers,
    Hello,
    Message,
    Neighbours,
    Peers,
    Ping,
    Pong,
    ProposalMessage,
    TxMessage,
    VoteMessage,
    decode_frames,
    decode_message,
    encode_message,
)
from fedcoin.network.peers import PeerLimits
from fedcoin.network.transport import TransportError, connect
from tests.helpers import CHAIN_ID, equivocation, key, precommit
from tests.network.harness import CERTIFICATES, NetNode, Network, handshake_as, net_genesis

GENESIS = net_genesis()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def examples() -> list[Message]:
    """One valid message of every registered type."""
    producer = NetNode("x", GENESIS)
    block = asyncio.run(producer.produce(gossip=False))
    head = GENESIS.block().hash
    reveal = ShareReveal(head, bytes(range(32)), bytes(32), tuple(range(1024)))  # travels as a Tx
    share = make_tx(key("miner"), CHAIN_ID, 0, reveal)
    tx = make_tx(key("node-z"), CHAIN_ID, 0, Transfer(key("node-y").address, 5))
    hello = Hello(
        PROTOCOL_VERSION, GENESIS.chain_id, head, key("h").public, "127.0.0.1:1", head, 0, head
    )
    committed = CommittedBlock(block, CERTIFICATES[block.hash])
    found = [
        hello, Auth(bytes(64)), GetPeers(), Peers(("127.0.0.1:2", "[::1]:3")), TxMessage(tx),
        TxMessage(share), producer.proposal_of(block), GetBlocks(1, 64),
        Blocks((committed,), 1), Ping(7), Pong(8),
        VoteMessage(precommit(key("node-x"), 1, 0, None)),
        EvidenceMessage(equivocation(key("node-x"), 1)),
        Bundle((encode_message(Ping(9)), encode_message(TxMessage(tx)))),
        Neighbours((key("node-y").public, key("node-z").public)),
    ]  # fmt: skip
    assert {type(m) for m in found} == set(MESSAGE_TYPES.values())  # every type is fuzzed
    return found


EXAMPLES = examples()
VALID = [encode_message(m) for m in EXAMPLES]
#: The one valid block among the examples: a "mutation" that happens to leave it intact (a byte
#: set to the value it had) is an honest block, which the node may rightly adopt.
INTACT_BLOCK = next(m.block.hash for m in EXAMPLES if isinstance(m, ProposalMessage))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame of some type with a few bytes flipped, cut, inserted or appended."""
    frame = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "append", "set"]))
        if not frame:
            how = "append"
        at = draw(st.integers(0, max(0, len(frame) - 1)))
        if how == "flip":
            frame[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del frame[at : at + draw(st.integers(1, 64))]
        elif how == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif how == "append":
            frame += draw(st.binary(min_size=1, max_size=64))
        else:
            frame[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCC, 0xDC, 0xFF]))
    return bytes(frame)


def with_header() -> st.SearchStrategy[bytes]:
    """Random bodies behind a valid envelope header of every type (and some unknown ones)."""
    types = st.sampled_from([*MESSAGE_TYPES, 0, 12, 99, 127])
    return st.builds(
        lambda t, body: bytes([0x93, PROTOCOL_VERSION, t]) + body, types, st.binary(max_size=512)
    )


FRAMES = st.one_of(mutated(), with_header(), st.binary(max_size=256))


@FUZZ
@given(frame=FRAMES)
def test_the_decoder_raises_only_protocol_violations(frame: bytes) -> None:
    try:
        message = decode_message(frame)
    except ProtocolViolation:
        return
    assert encode_message(message) == frame  # what decodes is canonical


class LiveNode:
    """A node on 127.0.0.1 served by its own event loop in a thread, for synchronous fuzzing."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.net = Network()
        await self.net.__aenter__()
        # The fuzzer is penalised for every bad frame; a huge threshold keeps it connected.
        limits = PeerLimits(ban_threshold=10**12, rate_per_second=1e6, burst=1e6)
        node = NetNode("f", GENESIS, limits=limits, handshake_timeout=1.0)
        self.node = await self.net.add(node)
        self.head = node.head
        self.conn = await handshake_as(node.address, "fuzzer", GENESIS)

    async def ping(self, conn, nonce: int) -> None:
        await conn.send(encode_message(Ping(nonce)))
        async with asyncio.timeout(20):
            while True:
                frame = await conn.recv()
                assert frame is not None, "the node hung up"
                for got in decode_frames(frame, 1 << 26):
                    if isinstance(got, Pong) and got.nonce == nonce:
                        return

    async def send_then_ping(self, frame: bytes, nonce: int) -> None:
        await self.conn.send(frame)
        await self.ping(self.conn, nonce)

    async def first_frame(self, frame: bytes) -> None:
        """A new connection whose first frame is ``frame``; wait until the node is done with it."""
        conn = await connect(self.node.address, max_bytes=1 << 20, timeout=5, send_timeout=5)
        try:
            await conn.send(frame)
            async with asyncio.timeout(10):
                while await conn.recv() is not None:
                    pass
        except TransportError:
            pass
        finally:
            await conn.close()

    async def fresh_peer_gets_in(self) -> None:
        conn = await handshake_as(self.node.address, "honest", GENESIS)
        await self.ping(conn, 424242)
        await conn.close()

    def close(self) -> None:
        async def stop() -> None:
            await self.conn.close()
            await self.net.__aexit__(None, None, None)

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveNode]:
    node = LiveNode()
    yield node
    node.close()


COUNTER = iter(range(10**9))


@FUZZ
@given(frame=FRAMES)
def test_frames_after_the_handshake_never_stop_the_node(live: LiveNode, frame: bytes) -> None:
    live.run(live.send_then_ping(frame, next(COUNTER)))


@settings(FUZZ, max_examples=40)
@given(frame=FRAMES)
def test_first_frames_before_the_handshake_never_stop_the_node(
    live: LiveNode, frame: bytes
) -> None:
    live.run(live.first_frame(frame))


def test_after_the_fuzz_the_node_still_serves(live: LiveNode) -> None:
    live.run(live.ping(live.conn, 1))
    live.run(live.fresh_peer_gets_in())
    assert key("fuzzer").public.hex() in live.node.p2p.peers
    # Nothing a fuzzer sent changed the chain, but for the intact honest block it may have sent
    assert live.node.head in (live.head, INTACT_BLOCK)
