"""Peer bookkeeping with a fake clock, and gossip over the loopback transport (no sockets)."""

from __future__ import annotations

import asyncio

from fedcoin.network.node import wait_event
from fedcoin.network.peers import BanList, TokenBucket
from fedcoin.network.transport import loopback_pair
from tests.network.harness import NetNode, Network, net_genesis


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_limits_bursts_and_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.3
    assert [bucket.take() for _ in range(4)] == [True] * 3 + [False]


def test_bans_expire_and_are_bounded() -> None:
    clock = FakeClock()
    bans = BanList(clock, capacity=2)
    bans.ban("a", 10)
    assert bans.banned("a")
    clock.now = 10.5
    assert not bans.banned("a")
    for key in ("x", "y", "z"):
        bans.ban(key, 100)
    assert not bans.banned("x") and bans.banned("y") and bans.banned("z")


async def test_gossip_over_loopback_without_sockets() -> None:
    genesis = net_genesis()
    async with Network() as net:
        a = await net.add(NetNode("a", genesis))
        b = await net.add(NetNode("b", genesis))
        c = await net.add(NetNode("c", genesis))
        for left, right in ((a, b), (b, c)):
            one, two = loopback_pair(left.name, right.name)
            assert all(await asyncio.gather(left.p2p.attach(one), right.p2p.attach(two)))
        block = await a.produce()
        await net.wait_until(lambda: c.head == block.hash)
        assert c.handled[block.hash] == 1


async def test_wait_event_never_swallows_a_cancellation() -> None:
    # A loop that ticks on wait_event must stop when cancelled, even if the event is set in
    # the same iteration (asyncio.wait_for on Python 3.11 loses that cancellation).
    async def ticking(event: asyncio.Event) -> None:
        while True:
            event.clear()
            await wait_event(event, 0.1)

    for _ in range(50):
        event = asyncio.Event()
        task = asyncio.create_task(ticking(event))
        await asyncio.sleep(0)
        event.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, "the loop swallowed its cancellation"
    fresh = asyncio.Event()
    assert await wait_event(fresh, 0.01) is False
    fresh.set()
    assert await wait_event(fresh, 0.01) is True
