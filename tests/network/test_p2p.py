"""Many nodes, one chain: gossip, catch-up, partitions, misbehaving peers, other networks.

Real websockets on 127.0.0.1 with ports from the OS; waits are on facts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest

from fedcoin.consensus.validators import SignatureCache
from fedcoin.data.keys import TAG_HELLO
from fedcoin.data.tx import Transfer, make_tx
from fedcoin.network.messages import (
    PROTOCOL_VERSION,
    Auth,
    Hello,
    Ping,
    ProposalMessage,
    TxMessage,
    auth_digest,
    decode_message,
    encode_message,
)
from fedcoin.network.peers import PeerLimits
from fedcoin.network.transport import TransportError, connect
from tests.helpers import CHAIN_ID, key
from tests.network.harness import NetNode, Network, net_genesis, other_genesis

GENESIS = net_genesis()


async def make_nodes(net: Network, count: int, **kwargs) -> list[NetNode]:
    return [await net.add(NetNode("abcdefghij"[i], GENESIS, **kwargs)) for i in range(count)]


def a_tx(i: int):
    sender = key("node-z")
    return make_tx(sender, CHAIN_ID, i, Transfer(key("node-y").address, 1 + i))


@pytest.mark.parametrize("topology", ["line", "ring"])
async def test_tx_and_block_reach_every_node_exactly_once(topology: str) -> None:
    async with Network() as net:
        nodes = await make_nodes(net, 5)
        for a, b in zip(nodes, nodes[1:], strict=False):
            await net.link(a, b)
        if topology == "ring":
            await net.link(nodes[-1], nodes[0])
        tx = a_tx(0)
        nodes[2].txs[tx.id] += 1
        nodes[2].p2p.broadcast(TxMessage(tx))
        await net.wait_until(lambda: all(n.txs[tx.id] for n in nodes))
        block = await nodes[0].produce()
        await net.wait_until(lambda: all(n.head == block.hash for n in nodes))
        # a ping barrier through every link: anything still in flight has arrived
        await barrier(net)
        # every node got each exactly once; the originator never had its own message echoed
        assert [n.handled[tx.id] for n in nodes] == [1, 1, 0, 1, 1]
        assert [n.handled[block.hash] for n in nodes] == [0, 1, 1, 1, 1]


async def barrier(net: Network) -> None:
    """Ping every peer of every node and wait for every pong. Frames on a connection arrive
    in order, so once a peer answers, everything sent to it before the ping was handled."""
    expected = []
    for node in net.nodes:
        for peer in node.p2p.peers.values():
            expected.append((peer, peer.pongs + 1))
            peer.enqueue(Ping(7))
    await net.wait_until(lambda: all(peer.pongs >= want for peer, want in expected))


async def test_late_node_catches_up_from_genesis() -> None:
    async with Network() as net:
        a, b = await make_nodes(net, 2)
        await net.link(a, b)
        for _ in range(150):  # more than two sync batches
            await a.produce()
        await net.wait_until(lambda: b.head == a.head)
        late = await net.add(NetNode("z", GENESIS))
        await net.link(late, b)
        await net.wait_until(lambda: late.head == a.head, timeout=60)
        assert late.chain.head.height == 150
        assert late.chain.head_state() == a.chain.head_state()


@pytest.mark.slow
async def test_a_late_node_syncs_a_thousand_blocks_verifying_every_certificate() -> None:
    async with Network() as net:
        (a,) = await make_nodes(net, 1)
        for _ in range(1000):
            await a.produce(gossip=False)
        # The late node verifies signatures itself (not through the producer's cache)
        checked = SignatureCache()
        late = await net.add(NetNode("z", GENESIS, vote_check=checked))
        await net.link(late, a)
        await net.wait_until(lambda: late.head == a.head, timeout=300)
        store = late.chain.store
        signatures = 0
        for height in range(1, 1001):
            certificate = late.chain.certificate(height)
            assert certificate is not None and certificate == a.chain.certificate(height)
            assert certificate.block_id == store.canonical_hash(height)
            signatures += len(certificate.signatures)
        # Every precommit of every certificate was verified once (LastCommit repeats hit)
        assert checked.misses >= signatures
        assert late.chain.head_state() == a.chain.head_state()


async def test_partition_heals_without_reverting_what_either_side_committed() -> None:
    """Committed blocks are final: after a partition, a node with a conflicting committed
    block at a height refuses the other side's (no heavier-branch rule, no reorg)."""
    async with Network() as net:
        a, b, c, d = await make_nodes(net, 4)
        await net.link(a, b)
        await net.link(c, d)
        await a.produce()
        await c.produce()
        await net.wait_until(lambda: b.head == a.head and d.head == c.head)
        assert a.head != c.head
        mine, theirs = a.chain.head, c.chain.head
        await net.link(b, c)
        block = await c.produce()  # a child of c's block: b and a cannot take it
        await net.wait_until(lambda: d.head == block.hash)
        for node in (a, b):
            assert node.chain.store.canonical_hash(1) == mine.hash
        for node in (c, d):
            assert node.chain.store.canonical_hash(1) == theirs.hash


async def raw_peer(
    target: NetNode, name: str = "rogue", genesis=GENESIS, max_bytes: int = 1 << 22, claim=None
):
    """A hand-driven peer: connect, Hello and Auth (as ``name``, or claiming another key)."""
    conn = await connect(target.address, max_bytes=max_bytes, timeout=5, send_timeout=5)
    me = key(name)
    claimed = claim or me.public
    head = genesis.block().hash
    hello = Hello(PROTOCOL_VERSION, genesis.chain_id, head, claimed, "", head, 0, b"\x05" * 32)
    await conn.send(encode_message(hello))
    first = await conn.recv()
    assert first is not None  # the node's own Hello
    theirs = decode_message(first, max_bytes)
    proof = me.sign(TAG_HELLO, auth_digest(theirs.nonce, claimed))
    with contextlib.suppress(TransportError):  # a node that refused us may be gone already
        await conn.send(encode_message(Auth(proof)))
    return conn


async def drain_until_closed(conn) -> None:
    """Read until the node hangs up on us, then release our side."""
    while await conn.recv() is not None:
        pass
    await conn.close()


async def assert_banned_and_network_fine(
    net: Network, victim: NetNode, other: NetNode, name: str
) -> None:
    rogue = key(name).public.hex()
    await net.wait_until(lambda: victim.p2p.bans.banned(rogue) and rogue not in victim.p2p.peers)
    # coming back with the same key is refused at the handshake
    again = await raw_peer(victim, name)
    await asyncio.wait_for(drain_until_closed(again), 5)
    assert rogue not in victim.p2p.peers
    # and the honest nodes keep working
    block = await other.produce()
    await net.wait_until(lambda: victim.head == block.hash)


async def test_garbage_sender_is_scored_disconnected_and_banned() -> None:
    async with Network() as net:
        a, b = await make_nodes(net, 2)
        await net.link(a, b)
        conn = await raw_peer(a, "garbage")
        for i in range(10):
            await conn.send(b"\xc1garbage" + bytes([i]))
        await asyncio.wait_for(drain_until_closed(conn), 5)
        await assert_banned_and_network_fine(net, a, b, "garbage")


async def test_oversized_frame_is_a_ban() -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS, max_message_bytes=64 * 1024))
        b = await net.add(NetNode("b", GENESIS))
        await net.link(a, b)
        conn = await raw_peer(a, "big")
        await conn.send(b"\x00" * (200 * 1024))
        await asyncio.wait_for(drain_until_closed(conn), 5)
        await assert_banned_and_network_fine(net, a, b, "big")


async def test_invalid_blocks_are_scored_then_banned() -> None:
    async with Network() as net:
        a, b = await make_nodes(net, 2)
        await net.link(a, b)
        forger = NetNode("x", GENESIS)
        conn = await raw_peer(a, "forger")
        block = await forger.produce(gossip=False)
        for i in range(6):  # distinct children of genesis that no certificate commits
            header = replace(block.header, timestamp_ms=block.header.timestamp_ms + 1 + i)
            forged = replace(block, header=header)
            await conn.send(
                encode_message(ProposalMessage(forger.proposal_of(forged).proposal, forged))
            )
        await asyncio.wait_for(drain_until_closed(conn), 5)
        assert a.chain.head.height == 0
        await assert_banned_and_network_fine(net, a, b, "forger")


async def test_flooding_peer_is_banned() -> None:
    async with Network() as net:
        limits = PeerLimits(rate_per_second=20, burst=20)
        a = await net.add(NetNode("a", GENESIS, limits=limits))
        b = await net.add(NetNode("b", GENESIS))
        await net.link(a, b)
        conn = await raw_peer(a, "flood")
        sent = 0
        try:
            for i in range(2000):
                await conn.send(encode_message(Ping(i)))
                sent += 1
        except Exception:
            pass  # the node hung up on us mid-flood
        await asyncio.wait_for(drain_until_closed(conn), 5)
        assert sent < 2000 or a.p2p.bans.banned(key("flood").public.hex())
        await assert_banned_and_network_fine(net, a, b, "flood")


async def test_peer_on_another_network_is_refused_at_handshake() -> None:
    async with Network() as net:
        a = await net.add(NetNode("a", GENESIS))
        stranger = await net.add(NetNode("s", other_genesis(GENESIS)))
        assert not await stranger.p2p.connect_to(a.address)
        assert not a.p2p.peers and not stranger.p2p.peers
        conn = await raw_peer(a, "alien", genesis=other_genesis(GENESIS))
        await asyncio.wait_for(drain_until_closed(conn), 5)
        assert not a.p2p.peers


async def test_a_peer_cannot_claim_someone_elses_key() -> None:
    async with Network() as net:
        a, c = await make_nodes(net, 2)  # not linked yet
        # An impostor claims c's key (it cannot sign for it), then misbehaves.
        impostor = await raw_peer(a, "impostor", claim=c.key.public)
        with contextlib.suppress(TransportError):
            for i in range(10):
                await impostor.send(b"\xc1garbage" + bytes([i]))
        await asyncio.wait_for(drain_until_closed(impostor), 5)
        # Refused at the handshake: c's key is not banned, and c can still join.
        assert not a.p2p.bans.banned(c.key.public.hex())
        await net.link(c, a)
        block = await c.produce()
        await net.wait_until(lambda: a.head == block.hash)


async def test_peer_exchange_discovers_the_network() -> None:
    async with Network() as net:
        hub = await net.add(NetNode("h", GENESIS))
        spokes = [
            await net.add(NetNode(c, GENESIS, bootstrap=[hub.address], discover=True))
            for c in "pqr"
        ]
        # every spoke learns the others through the hub and dials them
        await net.wait_until(lambda: all(len(s.p2p.peers) == 3 for s in spokes))
        block = await spokes[0].produce()
        await net.wait_until(lambda: all(n.head == block.hash for n in net.nodes))


async def test_a_local_error_in_a_handler_drops_the_message_not_the_node() -> None:
    from fedcoin.errors import StoreError

    async with Network() as net:
        a, b = await make_nodes(net, 2)
        await net.link(b, a)  # b dialled a: b's side of the link runs in b's TaskGroup
        failures = []

        async def broken(message, peer) -> None:
            failures.append(message)
            net.notifier.notify()  # wake waiters: the fact they wait on changed
            raise StoreError("disk trouble")

        b.p2p.handlers._by_type[TxMessage] = broken  # this node's store fails on transactions
        tx = a_tx(0)
        a.txs[tx.id] += 1
        a.p2p.broadcast(TxMessage(tx))
        await net.wait_until(lambda: failures)
        # the peer is still connected, not penalised, and blocks still flow both ways
        await barrier(net)
        assert a.key.public.hex() in b.p2p.peers and b.key.public.hex() in a.p2p.peers
        assert b.p2p.peers[a.key.public.hex()].score == 0
        for producer, other in ((a, b), (b, a)):
            block = await producer.produce()
            await net.wait_until(lambda block=block, other=other: other.head == block.hash)
