"""The FedCoin side of a Flower job, as blocking calls (Flower's strategy hooks are synchronous).

Each call opens a short HTTP session to the full node with ``asyncio.run``: the strategy runs
in Flower's ServerApp thread, where no event loop runs. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from fedcoin.application.api import ref_from_json
from fedcoin.application.fl_server import NodeClient, NodeError
from fedcoin.application.task_file import load_task_id, save_task_id
from fedcoin.consensus.game import exact_fedavg as fedavg
from fedcoin.data.keys import PrivateKey
from fedcoin.data.tensors import Weights, encode_bundle, encode_dataset, encode_weights, weights_of
from fedcoin.data.tx import (
    DEFAULT_MAX_SAMPLES,
    DEFAULT_POSAP,
    ClientUpdate,
    ContentRef,
    PosapParams,
    PublishTask,
    SubmitRound,
    TaskSpec,
)
from fedcoin.errors import FedCoinError

T = TypeVar("T")


__all__ = ["Ledger", "RoundRefused", "SignedUpdate", "TaskOffer", "load_task_id", "save_task_id"]


class RoundRefused(FedCoinError):
    """The full node refused the round; ``rule`` names the protocol rule it broke."""

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(f"rejected, rule {rule}: {message}" if rule else message)
        self.rule = rule


@dataclass
class TaskOffer:
    """What to publish when the job has no FedCoin task yet."""

    architecture: str
    """Keras architecture JSON of the job's model (``model.to_json()``)."""
    initial_weights: Weights
    """Round 1's starting point (``model.get_weights()``)."""
    validation: tuple[np.ndarray, np.ndarray]
    """``(x, y)`` that defines the utility U(S) of the Shapley game."""
    rounds: int
    price_per_round: int
    """Base units (1 FC = 1 000 000) paid per settled round."""
    name: str = "flower-task"
    min_clients: int = 1
    max_clients: int = 60
    deadline_blocks: int = 2_000
    split_bps: tuple[int, int, int] = (7000, 1000, 2000)
    posap: PosapParams = field(default=DEFAULT_POSAP)
    allowed_clients: tuple[bytes, ...] = ()
    """Consortium task: the only client public keys the chain will pay; () = open."""
    max_samples: int = DEFAULT_MAX_SAMPLES
    """The largest sample count a client update may claim (the chain refuses a round above it)."""


@dataclass(frozen=True)
class SignedUpdate:
    """One client's reply: its weights and the signature its mod made."""

    pubkey: bytes
    signature: bytes
    samples: int
    weights: Weights
    blob: bytes


class Ledger:
    """A full node's API seen by one FL server key."""

    def __init__(self, node_url: str, key: PrivateKey, timeout: float = 30.0) -> None:
        self.node_url = node_url
        self.key = key
        self.timeout = timeout
        self._chain_id = ""

    def _call(self, work: Callable[[NodeClient], Awaitable[T]]) -> T:
        async def go() -> T:
            async with NodeClient(self.node_url, self.timeout) as node:
                return await work(node)

        return asyncio.run(go())

    def chain_id(self) -> str:
        if not self._chain_id:
            self._chain_id = str(self._call(lambda n: n.status())["chain_id"])
        return self._chain_id

    def publish(self, offer: TaskOffer) -> bytes:
        chain_id = self.chain_id()
        bundle = encode_bundle(offer.architecture, offer.initial_weights)
        validation = encode_dataset(*offer.validation)

        async def go(node: NodeClient) -> bytes:
            model = await node.put_content(bundle)
            val = await node.put_content(validation)
            height = (await node.status())["height"]
            spec = TaskSpec(
                name=offer.name, model=model, validation=val, server=self.key.address,
                rounds=offer.rounds, price_per_round=offer.price_per_round,
                split_bps=offer.split_bps, min_clients=offer.min_clients,
                max_clients=offer.max_clients, deadline_height=height + offer.deadline_blocks,
                posap=offer.posap, allowed_clients=offer.allowed_clients,
                max_samples=offer.max_samples,
            )  # fmt: skip
            return (await node.send(self.key, chain_id, PublishTask(spec))).id

        return self._refusing(go)

    def task(self, task_id: bytes) -> dict[str, Any]:
        return self._call(lambda n: n.task(task_id))

    def wait_task(
        self, task_id: bytes, done: Callable[[dict[str, Any]], bool], what: str, timeout: float
    ) -> dict[str, Any]:
        """Poll the task until ``done(task)``; ``FedCoinError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                task = self.task(task_id)
                if done(task):
                    return task
            except NodeError as exc:
                if "no task" not in str(exc):
                    raise
            if time.monotonic() > deadline:
                raise FedCoinError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(delay)  # polling a remote HTTP API: there is no event to wait on
            delay = min(delay * 1.5, 1.0)

    def global_weights(self, task: dict[str, Any]) -> Weights:
        ref = ref_from_json(task["global_model"])
        return weights_of(self._call(lambda n: n.get_content(ref)))

    def submit_round(
        self, task_id: bytes, round_: int, updates: Sequence[SignedUpdate]
    ) -> tuple[Weights, float, float]:
        """Upload every client's weights and the FedAvg global model, then submit the round.

        Returns the global model and the seconds spent uploading and submitting. The global
        model is ``consensus.game.exact_fedavg`` of the updates: what the chain checks.
        """
        chain_id = self.chain_id()
        global_weights = fedavg([u.weights for u in updates], [u.samples for u in updates])
        global_blob = encode_weights(global_weights)
        times: list[float] = []

        async def go(node: NodeClient) -> None:
            start = time.perf_counter()
            refs: list[ContentRef] = [await node.put_content(u.blob) for u in updates]
            global_ref = await node.put_content(global_blob)
            times.append(time.perf_counter() - start)
            client_updates = tuple(
                ClientUpdate(u.pubkey, ref, u.samples, u.signature)
                for u, ref in zip(updates, refs, strict=True)
            )
            body = SubmitRound(task_id, round_, client_updates, global_ref)
            await node.send(self.key, chain_id, body)
            times.append(time.perf_counter() - start - times[0])

        self._refusing(go)
        return global_weights, times[0], times[1]

    def _refusing(self, work: Callable[[NodeClient], Awaitable[T]]) -> T:
        try:
            return self._call(work)
        except NodeError as exc:
            if exc.rule:
                raise RoundRefused(str(exc), exc.rule) from None
            raise
