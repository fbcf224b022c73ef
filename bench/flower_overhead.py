"""What FedCoin adds to a Flower round: the 20-client simulation, timed per round.

Flower's simulation engine (Ray, 20 clients, one free rider, one noisy) trains the example's
Keras model; ``FedCoinFedAvg`` pays the clients through 3 validators in this process (real
sockets, SQLite). Per round the strategy measures:

- training: from sending the round's instructions to having every reply (Flower's own time),
- upload: every client's weights blob and the global model PUT to the full node,
- submission: signing and posting the ``SubmitRound``,
- settlement wait: how long Flower was held back waiting for the previous round to settle
  (settlement runs in a background thread and overlaps the next round's training; the last
  round's wait counts in full).

It prints the overhead (upload + submission + settlement wait) as a ratio to the training
time, per round and overall. Target ≤ 0.5× on 2 cores.

    python bench/flower_overhead.py [--clients 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.application.cluster import Cluster  # noqa: E402
from tests.application.flower_support import run_flower_simulation  # noqa: E402
from tests.helpers import FC  # noqa: E402


async def measure(clients: int, rounds: int, miners: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        async with Cluster(Path(root)) as cluster:
            for i in range(miners):
                await cluster.start(i)
            await cluster.wait_until(
                lambda: all(len(n.p2p.peers) >= miners - 1 for n in cluster.nodes)
            )
            strategy = await run_flower_simulation(cluster.nodes[0].url, clients, rounds, 10 * FC)
    print(f"\n{clients} clients, {rounds} rounds, {miners} validators")
    print("round  training  upload  submit  settle-wait  overhead/training")
    for t in strategy.timings:
        print(
            f"{t.round:5d}  {t.training:7.2f}s  {t.upload:5.2f}s  {t.submit:5.2f}s  "
            f"{t.settle_wait:10.2f}s  {t.overhead / t.training:8.2f}x"
        )
    training = sum(t.training for t in strategy.timings)
    overhead = sum(t.overhead for t in strategy.timings)
    print(f"total  {training:7.2f}s  overhead {overhead:.2f}s  ratio {overhead / training:.2f}x")
    warm = strategy.timings[1:]  # round 1's training includes starting Ray and TensorFlow
    if warm:
        training = sum(t.training for t in warm)
        overhead = sum(t.overhead for t in warm)
        print(f"rounds 2+ (warm): training {training:.2f}s, overhead {overhead:.2f}s, "
              f"ratio {overhead / training:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--miners", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(measure(args.clients, args.rounds, args.miners))


if __name__ == "__main__":
    main()
