"""The relay policy: a validator's vote goes at once only to peers that cannot have it from the
validator itself; the others get it after a delay, if it is still useful and they still lack
it. And the catch-up offer: a peer whose own vote shows it is still deciding a height we
committed is sent the committed blocks."""

from __future__ import annotations

import asyncio

from fedcoin.errors import Ignore
from fedcoin.network.gossip import Stale
from fedcoin.network.messages import (
    PROTOCOL_VERSION,
    Blocks,
    Hello,
    Message,
    Neighbours,
    TxMessage,
    VoteMessage,
    decode_frames,
    encode_message,
    message_id,
)
from fedcoin.network.peers import Peer, PeerLimits
from fedcoin.network.relay import EAGER_RELAYERS, Relay
from fedcoin.network.transport import loopback_pair
from tests.helpers import ALICE, BOB, key, make_transfer, precommit
from tests.network.harness import NetNode, Network, net_genesis

GENESIS = net_genesis()
ORIGIN = key("validator-origin")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def a_peer(name: str, *, neighbours: tuple[bytes, ...] = (), node_key: bytes = b"") -> Peer:
    conn, _ = loopback_pair(name, f"{name}-far")
    peer = Peer(conn, PeerLimits(), clock=lambda: 0.0)
    pubkey = node_key or key(f"peer-{name}").public
    peer.hello = Hello(PROTOCOL_VERSION, "c", bytes(32), pubkey, "", bytes(32), 0, bytes(32))
    peer.neighbours = frozenset(neighbours)
    return peer


def queued(peer: Peer) -> list[bytes]:
    frames = []
    while not peer.queue.empty():
        frames.append(peer.queue.get_nowait()[0])
    return frames


class World:
    """Peers around a node: ``near`` is connected to the vote's origin, ``far`` is not,
    ``origin`` is the validator itself, ``source`` sent us the vote."""

    def __init__(self, *, useful: bool = True, capacity: int = 1000) -> None:
        self.near = a_peer("near", neighbours=(ORIGIN.public,))
        self.far = a_peer("far", neighbours=(BOB.public,))
        self.origin = a_peer("origin", node_key=ORIGIN.public)
        self.source = a_peer("source", neighbours=(ORIGIN.public,))
        self.peers = {p.key: p for p in (self.near, self.far, self.origin, self.source)}
        self.clock = Clock()
        self.useful = useful
        self.relay = Relay(
            self.peers, key("me").public, defer=1.0, useful=lambda m: self.useful,
            spawn=lambda c: c.close(), clock=self.clock, capacity=capacity,
        )  # fmt: skip
        self.vote = VoteMessage(precommit(ORIGIN, 5, 0, b"\x07" * 32))
        self.frame = encode_message(self.vote)
        self.mid = message_id(self.frame)

    def receive(self) -> None:
        """The vote arrived from ``source`` and passed: the pipeline relays it."""
        self.source.learn(self.mid)
        self.relay.send(self.frame, self.mid, self.vote)


def test_a_vote_goes_at_once_only_to_peers_not_connected_to_its_origin() -> None:
    world = World()
    world.receive()
    assert queued(world.far) == [world.frame]
    assert queued(world.near) == []  # it has the vote from the origin, one hop away
    assert queued(world.origin) == []  # its own vote
    assert queued(world.source) == []  # it sent it to us


def test_a_deferred_copy_leaves_after_the_delay_while_still_useful() -> None:
    world = World()
    world.receive()
    world.clock.now += 0.5
    world.relay.flush()
    assert queued(world.near) == []  # not due yet
    world.clock.now += 0.6
    world.relay.flush()
    assert queued(world.near) == [world.frame]  # the origin may have left it out
    assert queued(world.origin) == [] and queued(world.source) == []
    assert world.relay.deferred == type(world.relay.deferred)()


def test_a_deferred_copy_is_dropped_when_useless_known_or_the_peer_left() -> None:
    useless = World(useful=False)
    useless.receive()
    useless.near.shown_height = 5
    useless.clock.now += 2
    useless.relay.flush()
    assert queued(useless.near) == []  # committed here, and the peer has voted in that height

    stuck = World(useful=False)
    stuck.receive()
    stuck.near.shown_height = 4
    stuck.clock.now += 2
    stuck.relay.flush()
    assert queued(stuck.near) == [stuck.frame]  # committed here; the peer showed nothing of it

    known = World()
    known.receive()
    known.near.learn(known.mid)  # the near peer sent us a copy meanwhile
    known.clock.now += 2
    known.relay.flush()
    assert queued(known.near) == []

    gone = World()
    gone.receive()
    del gone.peers[gone.near.key]
    gone.clock.now += 2
    gone.relay.flush()
    assert queued(gone.near) == []
    assert gone.relay.dropped_later == 1 and gone.relay.waiting == 0

    redialled = World()  # the peer reconnected meanwhile: its new connection gets the copy
    redialled.receive()
    again = a_peer("near", neighbours=(ORIGIN.public,))
    redialled.peers[again.key] = again
    redialled.clock.now += 2
    redialled.relay.flush()
    assert queued(redialled.near) == [] and queued(again) == [redialled.frame]


def test_own_messages_and_messages_without_origin_go_to_every_peer_at_once() -> None:
    world = World()
    world.relay.send(world.frame, world.mid)  # this node's own vote
    assert all(queued(p) == [world.frame] for p in world.peers.values())
    world.relay.send(world.frame, world.mid)  # published again: again to every peer
    assert all(queued(p) == [world.frame] for p in world.peers.values())
    tx = TxMessage(make_transfer(ALICE, BOB, 1, 0))
    frame = encode_message(tx)
    world.source.learn(message_id(frame))
    world.relay.send(frame, message_id(frame), tx)  # a transaction: any node may be first
    assert queued(world.near) == [frame] and queued(world.origin) == [frame]
    assert queued(world.source) == []


def test_a_peer_not_connected_to_the_origin_gets_it_at_once_from_only_a_few_relayers() -> None:
    """Five relayers, each connected to the origin and to a peer that is not; each is told the
    same lists (minus itself), and exactly ``EAGER_RELAYERS`` of them send at once."""
    relayers = [key(f"relayer-{i}") for i in range(5)]
    vote = VoteMessage(precommit(ORIGIN, 5, 0, None))
    frame = encode_message(vote)
    mid = message_id(frame)
    at_once = 0
    for me in relayers:
        others = tuple(r.public for r in relayers if r is not me)
        target = a_peer("target", neighbours=others)
        origin = a_peer("origin", node_key=ORIGIN.public, neighbours=others)
        peers = {p.key: p for p in (target, origin)}
        relay = Relay(
            peers, me.public, defer=1.0, useful=lambda m: True, spawn=lambda c: c.close(),
            clock=Clock(),
        )  # fmt: skip
        relay.send(frame, mid, vote)
        sent = queued(target)
        assert sent in ([], [frame])
        assert bool(sent) != bool(relay.deferred)  # at once, or deferred: never lost
        at_once += len(sent)
    assert at_once == EAGER_RELAYERS


def test_a_usefulness_check_that_fails_counts_as_useful_and_the_timer_survives_a_bug() -> None:
    def broken(message: Message) -> bool:
        raise RuntimeError("a bug in the application's predicate")

    world = World()
    world.relay.useful = broken
    world.receive()
    world.clock.now += 2
    world.relay.flush()
    assert queued(world.near) == [world.frame]  # when in doubt, the copy goes

    async def timer_with_a_bug() -> bool:
        calls = 0
        ticked_again = asyncio.Event()

        def failing_flush() -> None:
            nonlocal calls
            calls += 1
            if calls >= 2:
                ticked_again.set()
            raise RuntimeError("a bug in flush")

        world.relay.flush = failing_flush  # type: ignore[method-assign]
        world.relay.defer = 0.04  # ticks every 10 ms
        task = asyncio.create_task(world.relay.run())
        async with asyncio.timeout(10):
            await ticked_again.wait()  # a tick after the first failure
        alive = not task.done()
        task.cancel()
        return alive

    assert asyncio.run(timer_with_a_bug())


def test_the_deferred_queue_is_bounded_and_beyond_it_copies_leave_at_once() -> None:
    world = World(capacity=0)
    world.receive()
    assert queued(world.near) == [world.frame]  # no room to defer: flooding, as before


def test_a_frame_the_peer_sent_us_while_queued_is_left_out_at_send_time() -> None:
    async def scenario() -> list[Message]:
        mine, theirs = loopback_pair("me", "them")
        peer = Peer(mine, PeerLimits(), clock=lambda: 0.0)
        vote = VoteMessage(precommit(ORIGIN, 5, 0, None))
        frame = encode_message(vote)
        assert peer.enqueue(frame, message_id(frame))
        peer.learn(message_id(frame))  # its own copy reached us before ours left
        assert peer.enqueue(encode_message(TxMessage(make_transfer(ALICE, BOB, 1, 0))))
        writer = asyncio.create_task(peer.writer())
        try:
            async with asyncio.timeout(10):
                got = await theirs.recv()
        finally:
            writer.cancel()
        assert got is not None
        return decode_frames(got)

    assert [type(m) for m in asyncio.run(scenario())] == [TxMessage]


def test_announce_tells_each_peer_its_other_peers() -> None:
    world = World()
    world.relay.announce()
    for peer in world.peers.values():
        (frame,) = queued(peer)
        (message,) = decode_frames(frame)
        assert isinstance(message, Neighbours)
        others = {p.hello.node_pubkey for p in world.peers.values() if p is not peer and p.hello}
        assert set(message.keys) == others


async def test_in_a_full_mesh_a_proposal_crosses_each_link_once_and_the_peer_lists_are_kept() -> (
    None
):
    async with Network() as net:
        a, b, c = [await net.add(NetNode(n, GENESIS)) for n in "abc"]
        await net.link(a, b)
        await net.link(a, c)
        await net.link(b, c)
        # Each node learns whom the others are connected to
        await net.wait_until(
            lambda: all(len(p.neighbours) == 1 for n in (a, b, c) for p in n.p2p.peers.values())
        )
        block = await a.produce()  # a's own proposal: a sends it to b and c
        await net.wait_until(lambda: b.blocks[block.hash] == 1 and c.blocks[block.hash] == 1)
        assert b.handled[block.hash] == 1 and c.handled[block.hash] == 1
        assert b.p2p.relay.sent_now == 0 and c.p2p.relay.sent_now == 0  # not relayed at once
        assert len(b.p2p.relay.deferred) == 1 and len(c.p2p.relay.deferred) == 1
        # A link goes: the others hear of it
        await c.p2p.peers[b.key.public.hex()].conn.close("test")
        await net.wait_until(
            lambda: (
                a.p2p.peers[b.key.public.hex()].neighbours == frozenset()
                and a.p2p.peers[c.key.public.hex()].neighbours == frozenset()
            )
        )


async def test_a_peer_still_deciding_a_height_we_committed_is_offered_the_blocks() -> None:
    async with Network() as net:
        a, b = [await net.add(NetNode(n, GENESIS)) for n in "ab"]
        await net.link(b, a)
        block = await a.produce(gossip=False)  # a committed height 1, and b does not know
        seen: list[Blocks] = []
        handled: list[VoteMessage] = []

        async def stale_vote(message: Message, peer: object) -> None:
            assert isinstance(message, VoteMessage)
            handled.append(message)
            net.notifier.notify()
            if message.vote.height <= a.chain.head.height:
                raise Stale("committed here", behind=message.vote.round > 0)
            raise Ignore("not now")

        a.p2p.register(VoteMessage, stale_vote)
        original = b.p2p.syncer.on_blocks

        async def on_blocks(peer: Peer, message: Blocks) -> None:
            seen.append(message)
            await original(peer, message)

        b.p2p.syncer.on_blocks = on_blocks  # type: ignore[method-assign]
        offers: list[int] = []
        send_blocks = a.p2p.syncer._send_blocks

        def counted(peer: Peer, from_height: int, limit: int, answer: bool = True) -> None:
            offers.append(from_height)
            send_blocks(peer, from_height, limit, answer)

        a.p2p.syncer._send_blocks = counted  # type: ignore[method-assign]
        # A late vote of the deciding round (0) shows nothing: no offer (decided as a handles it)
        b.p2p.broadcast(VoteMessage(precommit(b.key, 1, 0, None)))
        await net.wait_until(lambda: len(handled) == 1)
        assert offers == []
        # b's own vote of a later round reaches a: a offers b the block that decided it
        b.p2p.broadcast(VoteMessage(precommit(b.key, 1, 2, None)))
        await net.wait_until(lambda: b.chain.head.hash == block.hash)
        assert [m.blocks[0].block.hash for m in seen] == [block.hash]
        assert offers == [1]
        # once per height: b's next vote of that height brings no second offer
        b.p2p.broadcast(VoteMessage(precommit(b.key, 1, 3, None)))
        b.p2p.broadcast(VoteMessage(precommit(ORIGIN, 1, 3, None)))  # and never for others' votes
        await net.wait_until(lambda: len(handled) == 4)
        assert offers == [1] and len(seen) == 1
        # An offer is not an answer: b asking for blocks while it is queued is no offence
        peer_b = a.p2p.peers[b.key.public.hex()]
        assert peer_b.answering is None and peer_b.score == 0


async def test_our_republished_message_reaches_a_peer_that_ignored_the_first_copy() -> None:
    async with Network() as net:
        a, b = [await net.add(NetNode(n, GENESIS)) for n in "ab"]
        await net.link(a, b)
        calls: list[int] = []

        async def not_yet_then_take(message: Message, peer: object) -> None:
            calls.append(1)
            net.notifier.notify()
            if len(calls) == 1:
                raise Ignore("not now (e.g. behind)")  # left unseen for a later copy

        b.p2p.register(VoteMessage, not_yet_then_take)
        vote = VoteMessage(precommit(a.key, 1, 0, None))
        a.p2p.broadcast(vote)
        await net.wait_until(lambda: len(calls) == 1)
        a.p2p.broadcast(vote)  # the driver publishes what it signed again
        await net.wait_until(lambda: len(calls) == 2)


async def test_a_peer_shows_a_height_only_with_its_own_messages() -> None:
    async with Network() as net:
        a, b = [await net.add(NetNode(n, GENESIS)) for n in "ab"]
        await net.link(a, b)
        peer_b = a.p2p.peers[b.key.public.hex()]
        heights: list[int] = []

        async def note(message: Message, peer: object) -> None:
            assert isinstance(message, VoteMessage)
            heights.append(message.vote.height)
            net.notifier.notify()

        a.p2p.register(VoteMessage, note)
        b.p2p.broadcast(VoteMessage(precommit(ORIGIN, 9, 0, None)))  # someone else's vote
        b.p2p.broadcast(VoteMessage(precommit(b.key, 5, 0, None)))  # its own
        await net.wait_until(lambda: heights == [9, 5])
        assert peer_b.shown_height == 5  # the relayed vote of height 9 showed nothing of b
