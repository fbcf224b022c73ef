"""The same job in Flower's simulation engine, with clients that deserve less: what FedCoin
pays a free rider (returns the global model unchanged: exactly 0) and a client with noisy labels.

Each simulated client derives its own key from its partition (the engine has no per-node
config); ``client_key(i)`` gives it to whoever checks the payouts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedcoin.application.flower.client import signing_mod
from fedcoin.application.flower.ledger import TaskOffer
from fedcoin.application.flower.strategy import FedCoinFedAvg
from fedcoin.data.keys import PrivateKey
from fedcoin_flower_example.client_app import fit_reply, local_update
from fedcoin_flower_example.task import build_model, load_client_data, validation_set

FREE_RIDER, NOISY = 0, 1
"""Partitions that behave badly; every other client trains honestly."""


def client_key(partition: int) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"flower-sim-client/%d" % partition).digest())


def _partition_key(context: Context) -> PrivateKey:
    return client_key(int(context.node_config["partition-id"]))


def simulated_update(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    if partition == FREE_RIDER:  # sends the global model back, claims its data
        _, y = load_client_data(dict(context.node_config))
        content = RecordDict(
            {
                "arrays": msg.content["arrays"],
                "metrics": MetricRecord({"train_loss": 0.0, "num-examples": len(y)}),
            }
        )
        return Message(content=content, reply_to=msg)
    if partition == NOISY:  # trains on labels shuffled among its samples
        x, y = load_client_data(dict(context.node_config))
        y = np.random.default_rng(partition).permutation(y)
        return fit_reply(msg, x, y, int(context.run_config.get("local-epochs", 1)))
    return local_update(msg, context)


client_app = ClientApp(mods=[signing_mod(_partition_key)])
client_app.train()(simulated_update)


def server_app(
    node_url: str, server_key: PrivateKey, rounds: int, clients: int, price: int,
    done: Callable[[FedCoinFedAvg], None], posap: Any = None,
) -> ServerApp:  # fmt: skip
    """A ServerApp running FedCoinFedAvg for ``rounds`` rounds; ``done(strategy)`` after."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        model = build_model()
        offer = TaskOffer(
            architecture=model.to_json(), initial_weights=model.get_weights(),
            validation=validation_set(), rounds=rounds, price_per_round=price,
            max_clients=clients,
        )  # fmt: skip
        if posap is not None:
            offer.posap = posap
        strategy = FedCoinFedAvg(
            node_url=node_url, server_key=server_key, offer=offer, fraction_evaluate=0.0,
            min_train_nodes=clients, min_available_nodes=clients,
        )  # fmt: skip
        arrays = ArrayRecord(model.get_weights())
        strategy.start(grid=grid, initial_arrays=arrays, num_rounds=rounds)
        done(strategy)

    return app
