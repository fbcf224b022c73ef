"""The lightweight FL-server node: trains with its clients, stores weights, submits rounds.

It holds no chain: everything goes through one full node's HTTP API. Its key is the task's FL
server. Per round: fetch the settled global model, train every client on its shard (honest,
noisy-label or free-riding), have each client sign its update for this task and round, upload
the weights (and add them to IPFS when configured, putting the CID in the reference), upload
the FedAvg global model, submit ``SubmitRound``, wait for the round to settle, and log the
accuracy, the Shapley values and the payouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcoin.application.api import ref_from_json
from fedcoin.application.content import IpfsClient
from fedcoin.application.datasets import ClientShard, Dataset, from_arrays
from fedcoin.application.node_client import NodeClient, NodeError
from fedcoin.application.task_file import load_task_id, save_task_id
from fedcoin.consensus.game import exact_fedavg as fedavg
from fedcoin.data.genesis import UNIT
from fedcoin.data.keys import PrivateKey, format_address
from fedcoin.data.tensors import (
    decode_bundle,
    decode_dataset,
    encode_bundle,
    encode_dataset,
    encode_weights,
    weights_of,
)
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
from fedcoin.errors import ConfigError

__all__ = ["FLServer", "FLServerConfig", "NodeClient", "NodeError", "RoundReport"]

log = logging.getLogger("fedcoin.fl")
RESUME_TIMEOUT = 30.0
"""Seconds to wait for a joined or saved task to show up on the node's chain."""


@dataclass
class RoundReport:
    round: int
    accuracy: float
    sv: list[int]
    paid: list[int]
    server: int
    miners: dict[str, int]
    refund: int
    voided: bool
    block_height: int


Behaviour = Callable[[int, list[np.ndarray], list[np.ndarray] | None, list[list[np.ndarray]]],
                     list[np.ndarray] | None]  # fmt: skip
"""(client index, global g, previous global or None, this round's updates so far) → the
weights that client sends, or None to train honestly."""


@dataclass
class FLServerConfig:
    key: PrivateKey
    """The FL server's key (it also publishes the task when no task id is given)."""
    node_url: str
    """The full node's HTTP API."""
    architecture: str | None
    """Keras architecture JSON of the model to publish (a joined task brings its own)."""
    initial_weights: list[np.ndarray] | None
    """Round 1's starting point of a task to publish."""
    validation: Dataset | None
    """Published with the task; defines U(S) (a joined task brings its own)."""
    shards: Sequence[ClientShard]
    """The in-process clients' data and kinds."""
    client_keys: Sequence[PrivateKey]
    """One key per client; its address is paid."""
    rounds: int = 3
    price_per_round: int = 10_000_000
    epochs: int = 2
    split_bps: tuple[int, int, int] = (7000, 1000, 2000)
    posap: PosapParams = DEFAULT_POSAP
    allowed_clients: tuple[bytes, ...] = ()
    """Public keys of a consortium task's clients (the only ones the chain pays); () = open."""
    max_samples: int = DEFAULT_MAX_SAMPLES
    """The task's ``max_samples``: the largest sample count one update may claim."""
    sample_claims: Sequence[int] | None = None
    """Sample count each client reports; default its shard's size (``simulate
    --inflate-samples`` makes one client over-report)."""
    behave: Behaviour | None = None
    """What a client sends instead of training (the simulator's manipulating clients)."""
    """Public keys of a consortium task's clients (the only ones the chain pays); () = open."""
    deadline_blocks: int | None = None
    """Blocks from publication to the deadline; default ``default_deadline_blocks(rounds)``."""
    task_id: bytes | None = None
    """Join this task instead of publishing one."""
    task_file: Path | None = None
    """Where the task id is kept: a restarted server resumes that task instead of publishing."""
    ipfs_api: str | None = None
    settle_timeout: float = 300.0
    """Seconds any one wait (inclusion, settlement) may take before it fails."""
    seed: int = 0
    on_round: Callable[[RoundReport], None] | None = None
    chain_id: str = field(default="")
    progress: bool = False
    """Show progress bars for training and for waiting on settlement (the CLI turns it on)."""


def default_deadline_blocks(rounds: int) -> int:
    """100 blocks per round and 100 spare: a round takes a few blocks (its submission, the
    committee's commits and reveals, the settling block) when the validators are up, so this
    leaves room for a busy chain without locking the escrow for long when the FL server goes
    away (``close-task`` refunds after the deadline)."""
    return 100 * rounds + 100


class FLServer:
    def __init__(self, config: FLServerConfig) -> None:
        if len(config.shards) != len(config.client_keys):
            raise ConfigError("one key per client")
        self.config = config
        self.reports: list[RoundReport] = []
        self.previous_global: list[np.ndarray] | None = None
        """The global model before the current one (what a delta free rider extrapolates)."""
        self.task_id: bytes | None = config.task_id or load_task_id(config.task_file)
        self.resumed = self.task_id is not None
        """The task was given or saved, not published by this run."""
        self.architecture = config.architecture
        self.validation = config.validation
        self.ipfs = IpfsClient(config.ipfs_api) if config.ipfs_api else None
        self.bar: Any = None

    async def _store(self, node: NodeClient, data: bytes) -> ContentRef:
        cid = await asyncio.to_thread(self.ipfs.add, data) if self.ipfs else ""
        return await node.put_content(data, cid)

    async def run(self) -> list[RoundReport]:
        if not self.config.progress:
            return await self._run()
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=False) as self.bar:
            return await self._run()

    def _step(self, description: str, total: int | None) -> Any:
        return self.bar.add_task(description, total=total) if self.bar is not None else None

    def _advance(self, task: Any, **kwargs: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, **kwargs)

    async def _run(self) -> list[RoundReport]:
        from fedcoin.application.training import Trainer

        cfg = self.config
        async with NodeClient(cfg.node_url) as node:
            status = await node.status()
            chain_id = cfg.chain_id or status["chain_id"]
            if self.task_id is None:
                if self.architecture is None or cfg.initial_weights is None:
                    raise ConfigError("no task to join and no model to publish")
                self.task_id = await self._publish(node, chain_id, status["height"])
                save_task_id(cfg.task_file, self.task_id)
            task = await self._wait(
                node, lambda t: True, f"task {self.task_id.hex()} to be on the chain", resumed=True
            )
            await self._adopt(node, task)
            save_task_id(cfg.task_file, self.task_id)
            assert self.architecture is not None
            trainer = await asyncio.to_thread(Trainer, self.architecture)
            trainer.check_inputs([shard.data for shard in cfg.shards])
            await self._finish_pending(node, trainer, task)
            for r in range(task["rounds_done"] + 1, task["spec"]["rounds"] + 1):
                current = await node.get_content(ref_from_json(task["global_model"]))
                global_weights = weights_of(current)
                report = await self._round(node, chain_id, trainer, r, global_weights)
                self.reports.append(report)
                if cfg.on_round is not None:
                    cfg.on_round(report)
                task = await node.task(self.task_id)
        return self.reports

    async def _finish_pending(self, node: NodeClient, trainer: Any, task: dict[str, Any]) -> None:
        """A resumed task's last round may be submitted but not settled: report it first."""
        rounds = task.get("rounds") or []
        if not rounds or rounds[-1]["settled"]:
            return
        entry = rounds[-1]
        weights = weights_of(await node.get_content(ref_from_json(entry["global_model"])))
        accuracy = await asyncio.to_thread(trainer.accuracy, weights, self.validation)
        report = await self._settled(node, int(entry["round"]), accuracy)
        self.reports.append(report)
        if self.config.on_round is not None:
            self.config.on_round(report)

    async def _adopt(self, node: NodeClient, task: dict[str, Any]) -> None:
        """Train the task's own model on its own validation set (a joined task brings both)."""
        assert self.task_id is not None
        server = format_address(self.config.key.address)
        if task["spec"]["server"] != server:
            raise ConfigError(
                f"task {self.task_id.hex()} names FL server {task['spec']['server']}, "
                f"but this key is {server}"
            )
        if task["status"] != "open":
            log.info("task %s is %s: no round left to train", self.task_id.hex(), task["status"])
        bundle = await node.get_content(ref_from_json(task["spec"]["model"]))
        self.architecture = decode_bundle(bundle)[0]
        x, y = decode_dataset(await node.get_content(ref_from_json(task["spec"]["validation"])))
        self.validation = from_arrays(x, y)

    async def _publish(self, node: NodeClient, chain_id: str, height: int) -> bytes:
        cfg = self.config
        assert self.architecture is not None and cfg.initial_weights is not None
        if self.validation is None:
            raise ConfigError("a task to publish needs a validation set")
        model = await self._store(node, encode_bundle(self.architecture, cfg.initial_weights))
        validation = await self._store(node, encode_dataset(self.validation.x, self.validation.y))
        deadline = cfg.deadline_blocks or default_deadline_blocks(cfg.rounds)
        n = len(cfg.shards)
        spec = TaskSpec(
            name="fedcoin-task", model=model, validation=validation, server=cfg.key.address,
            rounds=cfg.rounds, price_per_round=cfg.price_per_round, split_bps=cfg.split_bps,
            min_clients=1, max_clients=max(n, 1), deadline_height=height + deadline,
            posap=cfg.posap, allowed_clients=tuple(cfg.allowed_clients),
            max_samples=cfg.max_samples,
        )  # fmt: skip
        tx = await node.send(cfg.key, chain_id, PublishTask(spec))
        log.info(
            "published task %s: %d rounds at %s FC, deadline at height %d",
            tx.id.hex(),
            cfg.rounds,
            fc_text(cfg.price_per_round),
            height + deadline,
        )
        return tx.id

    async def _round(
        self,
        node: NodeClient,
        chain_id: str,
        trainer: Any,
        r: int,
        global_weights: list[np.ndarray],
    ) -> RoundReport:
        cfg = self.config
        assert self.task_id is not None
        updates: list[ClientUpdate] = []
        client_weights: list[list[np.ndarray]] = []
        training = self._step(f"round {r}: training {len(cfg.shards)} clients", len(cfg.shards))
        for i, (shard, key) in enumerate(zip(cfg.shards, cfg.client_keys, strict=True)):
            sent = None
            if cfg.behave is not None:
                sent = cfg.behave(i, global_weights, self.previous_global, client_weights)
            weights: list[np.ndarray] = (
                sent
                if sent is not None
                else await asyncio.to_thread(
                    trainer.client_update,
                    shard,
                    global_weights,
                    cfg.epochs,
                    cfg.seed * 1000 + r * 100 + i,
                )
            )
            ref = await self._store(node, encode_weights(weights))
            claim = cfg.sample_claims[i] if cfg.sample_claims else len(shard.data)
            updates.append(ClientUpdate.create(key, self.task_id, r, ref, claim))
            client_weights.append(weights)
            self._advance(training, advance=1)
        new_global = fedavg(client_weights, [u.samples for u in updates])
        self.previous_global = global_weights
        global_ref = await self._store(node, encode_weights(new_global))
        await node.send(cfg.key, chain_id, SubmitRound(self.task_id, r, tuple(updates), global_ref))
        assert self.validation is not None
        accuracy = await asyncio.to_thread(trainer.accuracy, new_global, self.validation)
        log.info("round %d submitted: %d clients, global accuracy %.3f", r, len(updates), accuracy)
        return await self._settled(node, r, accuracy)

    async def _settled(self, node: NodeClient, r: int, accuracy: float) -> RoundReport:
        """Wait for round ``r`` to settle and report its Shapley values and payouts."""
        waiting = self._step(f"round {r}: waiting for miners to value and settle it", None)
        task = await self._wait(
            node,
            lambda t: len(t["rounds"]) >= r and t["rounds"][r - 1]["settled"],
            f"round {r} to settle",
        )
        self._advance(waiting, total=1, completed=1)
        entry = task["rounds"][r - 1]
        payout = entry["payout"]
        report = RoundReport(
            round=r, accuracy=accuracy, sv=payout["sv"],
            paid=[c["paid"] for c in payout["clients"]], server=payout["server"],
            miners={m["address"]: m["paid"] for m in payout["miners"]},
            refund=payout["refund"], voided=payout["voided"], block_height=entry["settled_height"],
        )  # fmt: skip
        log.info(
            "round %d settled at height %d: SV %s, paid %s FC",
            r,
            report.block_height,
            report.sv,
            ", ".join(fc_text(p) for p in report.paid),
        )
        return report

    async def _wait(
        self,
        node: NodeClient,
        done: Callable[[dict[str, Any]], bool],
        what: str,
        resumed: bool = False,
    ) -> dict[str, Any]:
        assert self.task_id is not None
        timeout = self.config.settle_timeout
        if resumed and self.resumed:  # a saved task the node does not know: say so quickly
            timeout = min(timeout, RESUME_TIMEOUT)
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.05
        while True:
            try:
                task = await node.task(self.task_id)
                if done(task):
                    return task
            except NodeError as exc:
                if "no task" not in str(exc):
                    raise
            if asyncio.get_running_loop().time() > deadline:
                hint = " (another network? --new-task publishes anew)" if resumed else ""
                raise NodeError(f"timed out after {timeout:.0f} s waiting for {what}{hint}")
            await asyncio.sleep(delay)  # polling a remote HTTP API: there is no event to wait on
            delay = min(delay * 1.5, 1.0)


def fc_text(units: int) -> str:
    """Base units as FC with all six decimals, exactly."""
    return f"{units // UNIT}.{units % UNIT:06d}"
