"""Issue 12 end to end through real nodes: a free rider is paid 0, a 10× sample claim earns
what the honest count earns, and a client outside ``allowed_clients`` is refused by rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.application.datasets import (
    ClientKind,
    load_digits_dataset,
    make_clients,
    split_validation,
)
from fedcoin.application.fl_server import FLServer, FLServerConfig, NodeError
from fedcoin.application.training import build_mlp
from fedcoin.consensus.shapley import fixed_point_estimate
from fedcoin.consensus.utility import CoalitionGame
from fedcoin.data.tensors import decode_bundle, decode_dataset, weights_of
from fedcoin.data.tx import SubmitRound
from tests.application.cluster import (
    CLIENT_KEYS,
    FAST_POSAP,
    SERVER_KEY,
    Cluster,
    settled_rounds,
)
from tests.helpers import FC

pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


def config(node_url: str, clients: int = 4, **overrides: object) -> FLServerConfig:
    train, val = split_validation(load_digits_dataset(), 0.2, seed=0)
    shards = make_clients(train.subset(range(0, 600)), clients=clients, free_riders=1, seed=0)
    arch, initial = build_mlp(64, 10, hidden=16, seed=0)
    base = FLServerConfig(
        key=SERVER_KEY, node_url=node_url, architecture=arch, initial_weights=initial,
        validation=val, shards=shards, client_keys=CLIENT_KEYS[:clients], rounds=2,
        price_per_round=10 * FC, epochs=1, posap=FAST_POSAP, settle_timeout=180,
    )  # fmt: skip
    return replace(base, **overrides)


async def test_free_rider_gets_zero_and_inflating_samples_gains_nothing(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        for i in range(2):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 1 for n in cluster.nodes))
        cfg = config(cluster.nodes[0].url)
        honest_counts = [len(s.data) for s in cfg.shards]
        claims = [honest_counts[0] * 10, *honest_counts[1:]]  # client 0 claims 10× its samples
        server = FLServer(replace(cfg, sample_claims=claims))
        reports = await server.run()
        assert [r.voided for r in reports] == [False, False]
        assert [s.kind for s in cfg.shards][-1] == ClientKind.FREE_RIDER
        node = cluster.nodes[0]
        bundle = node.resolver.get(node.chain.head_state().tasks[server.task_id].spec.model.sha256)
        arch, _ = decode_bundle(bundle)
        settled = 0
        rounds = {}
        for height in range(1, node.chain.head.height + 1):
            for tx in node.store.block_at(height).txs:
                if isinstance(tx.body, SubmitRound):
                    rounds[tx.body.round] = tx.body
        for _, payout in settled_rounds(node):
            # the free rider (last client) is valued and paid exactly 0, every round
            assert payout.sv[-1] == 0 and payout.clients[-1][1] == 0
            assert payout.sv[0] > 0
            # the inflated claim is clipped at the smallest count: its value is the one the honest
            # count gives, recomputed here from the round's own weights with the honest counts
            body = rounds[payout.round]
            assert [u.samples for u in body.updates] == claims
            spec = node.chain.head_state().tasks[server.task_id].spec
            x, y = decode_dataset(node.resolver.get(spec.validation.sha256))
            previous = prev_global(node, rounds, body)
            clients = [weights_of(node.resolver.get(u.weights.sha256)) for u in body.updates]
            game = CoalitionGame(arch, previous, clients, honest_counts, x, y)
            n = len(clients)
            table = list(zip(range(1 << n), game.utilities(list(range(1 << n))), strict=True))
            assert list(payout.sv) == list(fixed_point_estimate(n, table))
            settled += 1
        assert settled == 2


def prev_global(node, rounds: dict, body: SubmitRound):
    if body.round == 1:
        spec = node.chain.head_state().tasks[body.task_id].spec
        return weights_of(node.resolver.get(spec.model.sha256))
    before = rounds[body.round - 1]
    return weights_of(node.resolver.get(before.global_model.sha256))


async def test_a_client_outside_allowed_clients_is_refused_by_rule(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        await cluster.start(0)
        cfg = config(cluster.nodes[0].url, clients=3, rounds=1)
        listed = tuple(k.public for k in CLIENT_KEYS[:2])  # client 2 is not listed
        server = FLServer(replace(cfg, allowed_clients=listed))
        with pytest.raises(NodeError) as refused:
            await server.run()
        assert "allowed_clients" in str(refused.value)
        task = cluster.nodes[0].chain.head_state().tasks[server.task_id]
        assert task.spec.allowed_clients == listed and task.rounds_done == 0
