"""Flower's simulation engine: 20 clients (a free rider, a noisy-label client) for 3 rounds,
paid through an in-process FedCoin network of 3 validators (real sockets, SQLite)."""

from __future__ import annotations

import statistics

import pytest

from fedcoin.data.keys import format_address
from tests.application.cluster import Cluster
from tests.application.flower_support import (
    FREE_RIDER,
    NOISY,
    client_key,
    run_flower_simulation,
)
from tests.helpers import FC

CLIENTS, ROUNDS = 20, 3


@pytest.mark.slow
async def test_simulation_pays_twenty_clients_and_not_the_free_rider(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 2 for n in cluster.nodes))
        strategy = await run_flower_simulation(cluster.nodes[0].url, CLIENTS, ROUNDS, 10 * FC)

        assert [r.round for r in strategy.settled] == [1, 2, 3]
        addresses = [format_address(client_key(i).address) for i in range(CLIENTS)]
        total = dict.fromkeys(addresses, 0)
        for r in strategy.settled:
            assert not r.voided and sorted(r.clients) == sorted(addresses)
            for a in r.clients:
                total[a] += r.paid[a]
        state = cluster.nodes[0].chain.head_state()
        for a, key in zip(addresses, (client_key(i) for i in range(CLIENTS)), strict=True):
            assert state.balance(key.address) == total[a]
        honest = [total[a] for i, a in enumerate(addresses) if i not in (FREE_RIDER, NOISY)]
        assert statistics.median(honest) > 0  # an honest client may be valued ≤ 0 in a round
        assert total[addresses[FREE_RIDER]] < statistics.median(honest)
        assert total[addresses[NOISY]] < statistics.median(honest)
        overhead = sum(t.overhead for t in strategy.timings)
        training = sum(t.training for t in strategy.timings)
        print(f"FedCoin overhead / Flower training time: {overhead / training:.2f}")
