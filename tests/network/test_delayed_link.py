"""The benchmark's emulated link latency: frames keep their order, each is handed over no
sooner than the delay after it arrived, and frames in flight overlap (a delay, not a rate)."""

from __future__ import annotations

import asyncio

from fedcoin.network.transport import DelayedLink, loopback_pair

DELAY = 0.2


async def test_frames_arrive_in_order_after_the_delay_and_overlap_in_flight() -> None:
    sender, receiver = loopback_pair("a", "b")
    link = DelayedLink(receiver, DELAY)
    loop = asyncio.get_running_loop()
    got: list[tuple[bytes, float]] = []

    async def read(count: int) -> None:
        for _ in range(count):
            frame = await link.recv()
            assert frame is not None
            got.append((frame, loop.time()))

    reader = asyncio.create_task(read(10))
    start = loop.time()
    for n in range(10):
        await sender.send(b"frame %d" % n)
    async with asyncio.timeout(30):
        await reader
    assert [frame for frame, _ in got] == [b"frame %d" % n for n in range(10)]
    assert all(at - start >= DELAY for _, at in got)
    # Ten frames sent at once take one delay, not ten
    assert got[-1][1] - start < 5 * DELAY
    # Closing ends the reader task and the connection underneath
    await link.close()
    assert link.closed and receiver.closed


async def test_the_end_of_the_connection_comes_through_after_its_frames() -> None:
    sender, receiver = loopback_pair("a", "b")
    link = DelayedLink(receiver, 0.01)
    await sender.send(b"last words")
    receiver.inbox.put_nowait(None)  # the other side hung up (what a socket's end reads as)
    async with asyncio.timeout(30):
        assert await link.recv() == b"last words"
        assert await link.recv() is None
    await link.close()
