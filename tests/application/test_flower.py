"""The Flower strategy and client mod against full nodes in this process (real sockets, SQLite).

Flower's hooks run for real (configure_train → ClientApps with the mod → aggregate_train →
start), delivered by an in-process Grid; the deployment test covers SuperLink and SuperNodes.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedcoin.application.flower.client import (
    REPLY_RECORD,
    CallNext,
    Mod,
    sign_reply,
    signing_mod,
    task_and_round,
)
from fedcoin.application.flower.ledger import RoundRefused, SignedUpdate, TaskOffer
from fedcoin.application.flower.serde import record_of_weights, weights_blob, weights_of_record
from fedcoin.application.flower.strategy import FedCoinFedAvg
from fedcoin.data.keys import PrivateKey, format_address
from tests.application.cluster import CLIENT_KEYS, FAST_POSAP, SERVER_KEY, Cluster
from tests.application.flower_support import (
    LocalGrid,
    build_model,
    client_context,
    local_update,
    validation_set,
)
from tests.helpers import FC

PRICE = 10 * FC


def offer(rounds: int, clients: int) -> TaskOffer:
    model = build_model()
    return TaskOffer(
        architecture=model.to_json(), initial_weights=model.get_weights(),
        validation=validation_set(), rounds=rounds, price_per_round=PRICE,
        max_clients=clients, posap=FAST_POSAP,
    )  # fmt: skip


def client(mod: Mod, node_id: int, partition: int, partitions: int) -> tuple[ClientApp, Context]:
    app = ClientApp(mods=[mod])
    app.train()(local_update)
    return app, client_context(node_id, partition, partitions)


def honest_grid(clients: int) -> LocalGrid:
    return LocalGrid(
        {10 + i: client(signing_mod(CLIENT_KEYS[i]), 10 + i, i, clients) for i in range(clients)}
    )


def strategy(url: str, **kwargs: object) -> FedCoinFedAvg:
    args: dict[str, object] = {
        "node_url": url, "server_key": SERVER_KEY, "fraction_evaluate": 0.0,
        "min_train_nodes": 3, "min_available_nodes": 3, "settle_timeout": 120.0,
    }  # fmt: skip
    args.update(kwargs)
    return FedCoinFedAvg(**args)  # type: ignore[arg-type]


def expected_pay(sv: list[int]) -> list[int]:
    """DESIGN §6, written out: the clients' 70 % split by positive SV, floored."""
    pool = PRICE * 7000 // 10_000
    positive = [max(v, 0) for v in sv]
    return [pool * p // sum(positive) for p in positive] if sum(positive) else [0] * len(sv)


async def test_flower_rounds_settle_and_pay_each_clients_address(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 2 for n in cluster.nodes))
        node = cluster.nodes[0]
        task_file = tmp_path / "task.txt"
        s = strategy(node.url, offer=offer(3, 3), task_file=task_file)
        model = build_model()
        result = await asyncio.to_thread(
            s.start, grid=honest_grid(3), initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=3,
        )  # fmt: skip
        assert [r.round for r in s.settled] == [1, 2, 3]
        assert task_file.read_text().strip() == s.task_id.hex()
        # Flower's final model is the global model the chain holds
        state = node.chain.head_state()
        task = state.tasks[s.task_id]
        assert task.rounds_done == 3
        final = weights_of_record(result.arrays)
        assert weights_blob(final) == node.content.get(task.global_model.sha256)
        addresses = [format_address(k.address) for k in CLIENT_KEYS[:3]]
        total = dict.fromkeys(addresses, 0)
        for r in s.settled:
            assert not r.voided and sorted(r.clients) == sorted(addresses)
            assert [r.paid[a] for a in r.clients] == expected_pay(r.sv)
            for a in r.clients:
                total[a] += r.paid[a]
        assert sum(total.values()) > 0
        for k in CLIENT_KEYS[:3]:
            assert state.balance(k.address) == total[format_address(k.address)]
        assert len(s.timings) == 3 and all(t.training > 0 for t in s.timings)


# --- clients and servers that cheat -----------------------------------------------------------
def cheating_mod(cheat: str, own: PrivateKey, other: PrivateKey) -> Mod:
    """A client mod that signs wrongly in one way."""

    def mod(message: Message, context: Context, call_next: CallNext) -> Message:
        task_id, round_ = task_and_round(message)
        reply = call_next(message, context)
        if cheat == "wrong-key":  # claims its own key, signed with another
            sign_reply(reply, other, task_id, round_)
            record = reply.content.config_records[REPLY_RECORD]
            record["pubkey"] = own.public
        elif cheat == "other-round":
            sign_reply(reply, own, task_id, round_ + 1)
        elif cheat == "other-weights":  # signs, then sends weights it did not sign
            sign_reply(reply, own, task_id, round_)
            arrays = weights_of_record(reply.content["arrays"])
            arrays[0] = arrays[0] + np.float32(0.01)
            reply.content["arrays"] = record_of_weights(arrays)
        return reply

    return mod


class AlteringServer(FedCoinFedAvg):
    """An FL server that changes the first client's weights before submitting the round."""

    def _signed_update(self, reply: Message) -> SignedUpdate:
        update = super()._signed_update(reply)
        if update.pubkey != CLIENT_KEYS[0].public:
            return update
        weights = [w.copy() for w in update.weights]
        weights[-1] = weights[-1] * np.float32(0.5)
        return replace(update, weights=weights, blob=weights_blob(weights))


@pytest.mark.parametrize("drop_invalid", [False, True])
async def test_the_chain_rejects_forged_updates_with_the_rule_broken(tmp_path, drop_invalid):
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        s = strategy(node.url, offer=offer(2, 3), drop_invalid=drop_invalid)
        honest = {10 + i: client(signing_mod(CLIENT_KEYS[i]), 10 + i, i, 3) for i in range(2)}
        config_arrays = ArrayRecord(build_model().get_weights())

        async def round_with(grid: LocalGrid, strategy_: FedCoinFedAvg):
            def go():
                messages = strategy_.configure_train(1, config_arrays, ConfigRecord(), grid)
                return strategy_.aggregate_train(1, grid.send_and_receive(messages))

            return await asyncio.to_thread(go)

        for cheat in ("wrong-key", "other-round", "other-weights"):
            bad = client(cheating_mod(cheat, CLIENT_KEYS[2], CLIENT_KEYS[3]), 12, 2, 3)
            grid = LocalGrid({**honest, 12: bad})
            if not drop_invalid:
                with pytest.raises(RoundRefused) as refused:
                    await round_with(grid, s)
                assert refused.value.rule == "BadUpdateSignature", cheat
                assert node.chain.head_state().tasks[s.task_id].rounds_done == 0
        if drop_invalid:  # the strategy leaves the forged update out; the round goes through
            arrays, _ = await round_with(grid, s)
            assert arrays is not None and s.round == 1
            await asyncio.to_thread(s._join_pending)
            assert sorted(s.settled[0].clients) == sorted(
                format_address(k.address) for k in CLIENT_KEYS[:2]
            )
            return
        # a server that alters a client's weights is refused too, and so changes nothing
        altering = AlteringServer(**{**vars_of(s), "task_id": s.task_id, "offer": None})
        with pytest.raises(RoundRefused) as refused:
            await round_with(honest_grid(3), altering)
        assert refused.value.rule == "BadUpdateSignature"
        assert node.chain.head_state().tasks[s.task_id].rounds_done == 0


def vars_of(s: FedCoinFedAvg) -> dict[str, object]:
    return {
        "node_url": s.ledger.node_url, "server_key": s.ledger.key, "drop_invalid": False,
        "fraction_evaluate": 0.0, "min_train_nodes": 3, "min_available_nodes": 3,
        "settle_timeout": 120.0,
    }  # fmt: skip


async def test_a_restarted_job_resumes_its_task_from_the_task_file(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        task_file = tmp_path / "job" / "task.txt"
        arrays = ArrayRecord(build_model().get_weights())
        first = strategy(node.url, offer=offer(2, 3), task_file=task_file)
        await asyncio.to_thread(first.start, grid=honest_grid(3), initial_arrays=arrays,
                                num_rounds=1)  # fmt: skip
        # the job restarts: no offer, only the task file; Flower's own arrays are stale
        again = strategy(node.url, task_file=task_file)
        assert again.task_id == first.task_id
        await asyncio.to_thread(again.start, grid=honest_grid(3), initial_arrays=arrays,
                                num_rounds=1)  # fmt: skip
        assert [r.round for r in first.settled] == [1] and [r.round for r in again.settled] == [2]
        task = node.chain.head_state().tasks[first.task_id]
        assert task.rounds_done == 2 and len(node.chain.head_state().tasks) == 1
