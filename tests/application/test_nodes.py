"""End to end: 3 full nodes (real SQLite, real sockets), 1 FL server, 4 clients, 3 rounds."""

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
from fedcoin.data.keys import format_address
from tests.application.cluster import CLIENT_KEYS, FAST_POSAP, SERVER_KEY, Cluster
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


def expected_payout(price: int, split: tuple[int, int, int], estimates: list[list[int]]):
    """DESIGN §6 on the median SV, written out independently of fedcoin.incentive."""
    sv = []
    for i in range(len(estimates[0])):
        column = sorted(e[i] for e in estimates)
        mid = len(column) // 2
        sv.append(column[mid] if len(column) % 2 else (column[mid - 1] + column[mid]) // 2)
    clients = price * split[0] // 10_000
    server = price * split[1] // 10_000
    miners = price - clients - server
    positive = [max(v, 0) for v in sv]
    pays = [clients * p // sum(positive) for p in positive] if sum(positive) else [0] * len(sv)
    return sv, pays, server, miners // len(estimates)


async def test_three_rounds_settle_and_pay_by_median_sv(tmp_path) -> None:
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
        for height in range(1, node.chain.head.height + 1):
            block = node.store.block_at(height)
            if block.posap is None or not block.posap.shares:
                continue
            payout = node.chain.payout_of(block.hash)
            sv, pays, server_pay, each_miner = expected_payout(
                10 * FC, config.split_bps, [list(s.estimate) for s in block.posap.shares]
            )
            assert list(payout.sv) == sv
            assert [p for _, p in payout.clients] == pays
            assert payout.server == server_pay
            assert all(p == each_miner for _, p in payout.miners)
            assert len(block.posap.shares) >= 1
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
            for block in (
                late.store.block_at(h) for h in range(joined_at + 1, late.chain.head.height + 1)
            )
            if block.posap is not None
            and any(s.miner_pubkey == late.key.public for s in block.posap.shares)
        ]
        assert contributed, "the late miner's shares never made it into a block"
