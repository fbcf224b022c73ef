"""End to end: 3 full nodes (real SQLite, real sockets), 1 FL server, 4 clients, 3 rounds, each
valued by the committee's one table (commit, reveal, end-of-block settlement)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from dataclasses import replace

import pytest

from fedcoin.application.datasets import (
    ClientKind,
    load_digits_dataset,
    make_clients,
    split_validation,
)
from fedcoin.application.fl_server import FLServer, FLServerConfig
from fedcoin.application.full_node import FullNode
from fedcoin.application.training import build_mlp
from fedcoin.data.keys import address_of, format_address
from fedcoin.data.state import SettledSv
from tests.application.cluster import (
    CLIENT_KEYS,
    FAST_POSAP,
    SERVER_KEY,
    Cluster,
    settled_rounds,
)
from tests.helpers import FC

pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


def fl_config(node_url: str, rounds: int = 3, clients: int = 4, noisy: int = 1) -> FLServerConfig:
    train, val = split_validation(load_digits_dataset(), 0.2, seed=0)
    shards = make_clients(train.subset(range(0, 800)), clients=clients, noisy=noisy, seed=0)
    arch, initial = build_mlp(64, 10, hidden=16, seed=0)
    return FLServerConfig(
        key=SERVER_KEY, node_url=node_url, architecture=arch, initial_weights=initial,
        validation=val, shards=shards, client_keys=CLIENT_KEYS[:clients], rounds=rounds,
        price_per_round=10 * FC, epochs=2, posap=FAST_POSAP, settle_timeout=120,
    )  # fmt: skip


def expected_client_pay(price: int, split: tuple[int, int, int], sv: list[int]):
    """DESIGN §6 on the round's SV, written out independently of fedcoin.incentive."""
    clients = price * split[0] // 10_000
    server = price * split[1] // 10_000
    miners = price - clients - server
    positive = [max(v, 0) for v in sv]
    pays = [clients * p // sum(positive) for p in positive] if sum(positive) else [0] * len(sv)
    return pays, server, miners


def winning_table(node: FullNode, block, payout) -> SettledSv:
    """The settled table of a round, as the state after its settling block records it."""
    state = node.store.get_state(block.hash)
    (won,) = [
        s for s in state.settled if s.sv.task_id == payout.task_id and s.sv.round == payout.round
    ]
    return won


async def test_three_rounds_settle_on_one_table_and_pay_its_revealers(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 2 for n in cluster.nodes))
        config = fl_config(cluster.nodes[0].url)
        config.progress = True  # the bars the CLI shows on a terminal
        server = FLServer(config)
        reports = await server.run()
        assert [r.round for r in reports] == [1, 2, 3]
        assert not any(r.voided for r in reports)
        await cluster.wait_until(cluster.same_head)

        node = cluster.nodes[0]
        task = node.chain.head_state().tasks[server.task_id]
        assert task.rounds_done == 3 and task.escrow == 0
        total = {format_address(k.address): 0 for k in CLIENT_KEYS[:4]}
        settled = settled_rounds(node)
        assert [p.round for _, p in settled] == [1, 2, 3]
        for block, payout in settled:
            pays, server_pay, pool = expected_client_pay(10 * FC, config.split_bps, list(payout.sv))
            assert [p for _, p in payout.clients] == pays
            assert payout.server == server_pay
            # every running validator revealed the one table; the pool is paid by power
            won = winning_table(node, block, payout)
            assert set(won.revealers) == {n.key.public for n in cluster.nodes}
            power = dict(won.sv.committee)
            weight = sum(power[v] for v in won.revealers)
            expected = {address_of(v): pool * power[v] // weight for v in won.revealers}
            assert dict(payout.miners) == expected
            assert payout.proposer == pool - sum(expected.values())
            for address, paid in payout.clients:
                total[format_address(address)] += paid
        # coins are conserved on every node, and every node agrees
        supply = sum(a for _, a in cluster.genesis.allocations)
        supply += sum(v.bond for v in cluster.genesis.validators)  # bonds are coins too
        for n in cluster.nodes:
            state = n.chain.head_state()
            assert state.supply == supply == state.total_held()
            assert state == node.chain.head_state()
        # the noisy client (last) earns less than every honest client of about the same size
        kinds = [s.kind for s in config.shards]
        assert kinds[-1] == ClientKind.NOISY
        paid = list(total.values())
        assert paid[-1] < min(paid[:-1])
        assert statistics.mean(r.accuracy for r in reports[1:]) > 0.5


async def test_restarted_node_continues_from_its_head(tmp_path) -> None:
    cluster = Cluster(tmp_path)
    config = cluster.config(0)
    async with FullNode(config) as node:
        server = FLServer(fl_config(node.url, rounds=2))
        server.config.rounds = 2
        task_runner = asyncio.create_task(server.run())
        await cluster.wait_until(
            lambda: (
                server.task_id is not None
                and server.task_id in node.chain.head_state().tasks
                and node.chain.head_state().tasks[server.task_id].rounds_done >= 1
                and not node.chain.head_state().queue
            ),
            timeout=120,
        )
        task_runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_runner
        head_before = node.chain.head
    async with FullNode(cluster.config(0)) as again:
        assert again.chain.head == head_before
        assert again.chain.head_state().tasks[server.task_id].rounds_done == 1
        # and it goes on: the FL server joins its task and finishes round 2 on the restarted node
        joined = FLServer(replace(fl_config(again.url, rounds=2), task_id=server.task_id))
        reports = await joined.run()
        assert [r.round for r in reports] == [2]
        assert again.chain.head.height > head_before.height


async def test_miner_joining_mid_task_catches_up_and_contributes(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        for i in range(2):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 1 for n in cluster.nodes))
        server = FLServer(fl_config(cluster.nodes[0].url, rounds=3))
        runner = asyncio.create_task(server.run())
        first = cluster.nodes[0]
        await cluster.wait_until(
            lambda: (
                server.task_id in first.chain.head_state().tasks
                and first.chain.head_state().tasks[server.task_id].rounds_done >= 1
                and not first.chain.head_state().queue
            ),
            timeout=120,
        )
        joined_at = first.chain.head.height
        late = await cluster.start(2)
        await asyncio.wait_for(runner, 180)
        await cluster.wait_until(cluster.same_head)
        assert late.chain.head_state() == first.chain.head_state()
        contributed = [
            block.height
            for block, payout in settled_rounds(late)
            if block.height > joined_at
            and late.key.public in winning_table(late, block, payout).revealers
        ]
        assert contributed, "the late validator never revealed a settled table"
