"""Shared pieces of the Flower tests: the example app on the path, an in-process Grid."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr", reason="the optional extra fedcoin[flower] is installed by make test")

from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

# The example app the tests run, as a user copies it
from fedcoin_flower_example.client_app import local_update  # noqa: E402
from fedcoin_flower_example.simulation import FREE_RIDER, NOISY, client_key  # noqa: E402
from fedcoin_flower_example.task import build_model, validation_set  # noqa: E402

__all__ = [
    "EXAMPLE",
    "FREE_RIDER",
    "NOISY",
    "client_key",
    "LocalGrid",
    "build_model",
    "client_context",
    "local_update",
    "validation_set",
]


def client_context(node_id: int, partition: int, partitions: int, epochs: int = 1) -> Context:
    return Context(
        run_id=1,
        node_id=node_id,
        node_config={"partition-id": partition, "num-partitions": partitions},
        state=RecordDict(),
        run_config={"local-epochs": epochs},
    )


class LocalGrid:
    """Flower's ``Grid`` as the strategy uses it, delivering to ClientApps in this process.

    It exercises the strategy's real hooks (configure, aggregate, start) without a SuperLink;
    the deployment test covers the real transport.
    """

    def __init__(self, apps: dict[int, tuple[ClientApp, Context]]) -> None:
        self.apps = apps
        # What a ServerApp process has set when it builds messages
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0

    def get_node_ids(self) -> list[int]:
        return list(self.apps)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for message in messages:
            app, context = self.apps[message.metadata.dst_node_id]
            replies.append(app(message, context))
        return replies


async def run_flower_simulation(node_url: str, clients: int, rounds: int, price: int) -> Any:
    """Flower's simulation engine (Ray) with ``clients`` clients for ``rounds`` rounds, paying
    through the full node at ``node_url``; returns the finished ``FedCoinFedAvg``."""
    from fedcoin_flower_example.simulation import client_app, server_app
    from flwr.simulation import run_simulation

    from tests.application.cluster import FAST_POSAP, SERVER_KEY

    # Ray's workers import the ClientApp's modules: they inherit this environment
    paths = [str(EXAMPLE.parents[1]), str(EXAMPLE), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    for name, value in SIMULATION_ENV.items():
        os.environ.setdefault(name, value)
    done: list[Any] = []
    app = server_app(node_url, SERVER_KEY, rounds, clients, price, done.append, FAST_POSAP)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "include_dashboard": False},
    }
    await asyncio.to_thread(
        run_simulation, server_app=app, client_app=client_app, num_supernodes=clients,
        backend_config=backend,
    )  # fmt: skip
    assert done, "the ServerApp did not finish"
    return done[0]


SIMULATION_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
