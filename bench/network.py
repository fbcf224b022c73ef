"""Gossip benchmark: 16 nodes in one process, random connected topology, real websockets.

- Block propagation: time from a block's broadcast until every node has imported it (p50 and
  p95 over the blocks), divided by the one-hop latency measured in the same run (from the
  broadcast until the producer's first direct neighbour has imported it). Target p50 ≤ 4×.
- Transactions gossiped per second network-wide: N transactions broadcast from one node, until
  every node has all of them.

All nodes share one event loop and two cores, so per-node work is serialised; the ratio is
what carries over to a real network.

    python bench/network.py [--nodes 16] [--degree 4] [--blocks 30] [--txs 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedcoin.data.tx import Transfer, make_tx  # noqa: E402
from fedcoin.network.messages import TxMessage  # noqa: E402
from fedcoin.network.peers import PeerLimits  # noqa: E402
from tests.helpers import CHAIN_ID, key  # noqa: E402
from tests.network.harness import NetNode, Network, net_genesis  # noqa: E402


def random_connected_edges(n: int, degree: int, rng: random.Random) -> set[tuple[int, int]]:
    """A random spanning tree plus random extra edges up to about ``degree`` per node."""
    order = list(range(n))
    rng.shuffle(order)
    edges = {tuple(sorted((order[i], order[rng.randrange(i)]))) for i in range(1, n)}
    while len(edges) < n * degree // 2:
        a, b = rng.sample(range(n), 2)
        edges.add(tuple(sorted((a, b))))
    return edges  # type: ignore[return-value]


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    genesis = net_genesis()
    async with Network() as net:
        # Lift the per-peer rate limit: this measures throughput, not flood protection.
        limits = PeerLimits(rate_per_second=1e6, burst=1e6)
        nodes = [await net.add(NetNode(str(i), genesis, limits=limits)) for i in range(args.nodes)]
        edges = random_connected_edges(args.nodes, args.degree, rng)
        for a, b in sorted(edges):
            await net.link(nodes[a], nodes[b])
        neighbours = {
            i: [b if a == i else a for a, b in edges if i in (a, b)] for i in range(args.nodes)
        }

        def eccentricity(start: int) -> int:
            dist, frontier = {start: 0}, [start]
            while frontier:
                nxt = []
                for u in frontier:
                    for v in neighbours[u]:
                        if v not in dist:
                            dist[v] = dist[u] + 1
                            nxt.append(v)
                frontier = nxt
            return max(dist.values())

        hops = statistics.mean(eccentricity(i % args.nodes) for i in range(args.blocks))
        all_times, hop_times = [], []
        for i in range(args.blocks):
            producer = i % args.nodes
            start = time.perf_counter()
            block = await nodes[producer].produce()
            first = nodes[neighbours[producer][0]]
            await net.wait_until(lambda first=first, block=block: first.head == block.hash)
            hop_times.append(time.perf_counter() - start)
            await net.wait_until(lambda block=block: all(n.head == block.hash for n in nodes))
            all_times.append(time.perf_counter() - start)
        hop = statistics.median(hop_times)
        p50 = statistics.median(all_times)
        p95 = sorted(all_times)[max(0, int(0.95 * len(all_times)) - 1)]
        print(f"nodes: {args.nodes}, edges: {len(edges)} (random connected, seed {args.seed}); "
              f"mean hops from producer to farthest node: {hops:.1f}")  # fmt: skip
        print(f"one-hop latency (median of {args.blocks}): {hop * 1000:.2f} ms")
        print(f"block reaches all nodes: p50 {p50 * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms")
        print(
            f"ratio p50 / one hop: {p50 / hop:.2f}  (target <= 4)   p95 / one hop: {p95 / hop:.2f}"
        )

        sender = key("node-z")
        txs = [
            make_tx(sender, CHAIN_ID, j, Transfer(key("node-y").address, 1))
            for j in range(args.txs)
        ]
        origin = nodes[0]
        start = time.perf_counter()
        for tx in txs:
            # The sender paces itself on its send queues (a full queue drops a peer).
            while any(p.queue.qsize() > 256 for p in origin.p2p.peers.values()):
                await asyncio.sleep(0)
            origin.txs[tx.id] += 1
            origin.p2p.broadcast(TxMessage(tx))
        await net.wait_until(lambda: all(len(n.txs) >= args.txs for n in nodes), timeout=300)
        tx_rate = args.txs / (time.perf_counter() - start)

    print(f"transactions gossiped to all {args.nodes} nodes: {tx_rate:,.0f} tx/s "
          f"({tx_rate * args.nodes:,.0f} deliveries/s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--degree", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--txs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
