"""The server side: a FedAvg strategy that makes a Flower job a FedCoin task.

``FedCoinFedAvg`` behaves like Flower's ``FedAvg`` and adds, per round:

1. ``configure_train`` names the FedCoin task and round in the training config (the client mod
   signs for them). The first round starts from the task's global model on the chain: a job
   that restarts resumes the task where it stands, and a fresh one publishes it first.
2. ``aggregate_train`` takes every reply's arrays, sample count and the client's signature
   (replies whose signature does not verify are dropped and logged, unless
   ``drop_invalid=False``), waits for the previous round to settle (the chain takes one round
   of a task at a time; clients trained meanwhile), uploads each client's weights blob and the
   FedAvg global model to the full node and submits ``SubmitRound``. It returns that global
   model to Flower, so the next round starts from what the chain holds. A refused round raises
   ``RoundRefused`` naming the rule.
3. Settlement is awaited in a background thread, so it overlaps the next round's training; its
   Shapley values and pay are logged and kept in ``settled``. ``start`` returns after the last
   round settled.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedcoin.application.fl_server import fc_text
from fedcoin.application.flower.client import REPLY_RECORD, ROUND_CONFIG, TASK_CONFIG
from fedcoin.application.flower.ledger import (
    Ledger,
    SignedUpdate,
    TaskOffer,
    load_task_id,
    save_task_id,
)
from fedcoin.application.flower.serde import (
    BadArrays,
    record_of_weights,
    weights_blob,
    weights_of_record,
)
from fedcoin.consensus.shapley import SV_SCALE
from fedcoin.consensus.utility import same_shapes
from fedcoin.data.keys import PrivateKey, address_of, format_address
from fedcoin.data.tensors import Weights
from fedcoin.data.tx import DEFAULT_MAX_SAMPLES, ClientUpdate, ContentRef
from fedcoin.errors import ConfigError, FedCoinError

log = logging.getLogger("fedcoin.flower")


@dataclass
class SettledRound:
    """A settled FedCoin round: who was valued, and what each client address was paid."""

    round: int
    clients: list[str]
    """Client addresses, in the order of the round's updates."""
    sv: list[int]
    paid: dict[str, int]
    """Base units per client address."""
    server: int
    voided: bool
    height: int


@dataclass
class RoundTiming:
    """Seconds spent per round: Flower's training (send → replies) and FedCoin's overhead."""

    round: int
    training: float
    upload: float = 0.0
    submit: float = 0.0
    settle_wait: float = 0.0
    """Time ``aggregate_train`` or ``start`` blocked on the previous round's settlement."""

    @property
    def overhead(self) -> float:
        return self.upload + self.submit + self.settle_wait


@dataclass
class _Pending:
    round: int
    thread: threading.Thread
    error: list[BaseException] = field(default_factory=list)


class FedCoinFedAvg(FedAvg):
    """FedAvg whose rounds are FedCoin rounds: clients are paid by their Shapley value."""

    def __init__(
        self,
        *,
        node_url: str,
        server_key: PrivateKey,
        offer: TaskOffer | None = None,
        task_id: bytes | None = None,
        task_file: Path | None = None,
        drop_invalid: bool = True,
        settle_timeout: float = 600.0,
        on_settled: Callable[[SettledRound], None] | None = None,
        **fedavg_args: Any,
    ) -> None:
        super().__init__(**fedavg_args)
        self.ledger = Ledger(node_url, server_key)
        self.offer = offer
        self.allowed = frozenset(offer.allowed_clients) if offer is not None else frozenset()
        """A consortium task's client keys (set with ``TaskOffer.allowed_clients``)."""
        self.max_samples = offer.max_samples if offer is not None else DEFAULT_MAX_SAMPLES
        """The largest sample count an update may claim (``TaskOffer.max_samples``)."""
        self.task_file = task_file
        self.task_id = task_id or load_task_id(task_file)
        if self.task_id is None and offer is None:
            raise ConfigError("give a task id (or a task file of an earlier run) or a TaskOffer")
        self.drop_invalid = drop_invalid
        self.settle_timeout = settle_timeout
        self.on_settled = on_settled
        self.round = 0
        """The last FedCoin round submitted (0 before the first)."""
        self.rounds = 0
        """Rounds the task pays for (from the chain)."""
        self.min_clients, self.max_clients = 1, 1
        """How many updates a round of the task must carry (from the chain)."""
        self.global_weights: Weights | None = None
        self.settled: list[SettledRound] = []
        self.timings: list[RoundTiming] = []
        self._pending: _Pending | None = None
        self._sent_at = 0.0

    # --- the FedCoin task ------------------------------------------------------------------
    def _open_task(self) -> None:
        """Publish or join the task; take its round and global model from the chain."""
        if self.task_id is None:
            assert self.offer is not None
            self.task_id = self.ledger.publish(self.offer)
            save_task_id(self.task_file, self.task_id)
            log.info("published FedCoin task %s", self.task_id.hex())
        task = self.ledger.wait_task(
            self.task_id, lambda t: True, "the task to be included", self.settle_timeout
        )
        if task["spec"]["server"] != format_address(self.ledger.key.address):
            raise ConfigError(
                f"task {self.task_id.hex()} belongs to FL server {task['spec']['server']}, "
                f"not to this key ({format_address(self.ledger.key.address)})"
            )
        save_task_id(self.task_file, self.task_id)
        self.round = task["rounds_done"]
        self.global_weights = self.ledger.global_weights(task)
        self.min_clients = int(task["spec"]["min_clients"])
        self.max_clients = int(task["spec"]["max_clients"])
        self.rounds = int(task["spec"]["rounds"])
        log.info(
            "FedCoin task %s: %d of %d rounds done", self.task_id.hex(), self.round, self.rounds
        )

    # --- Flower hooks ------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.global_weights is None:
            self._open_task()
        assert self.task_id is not None and self.global_weights is not None
        if self.round >= self.rounds:
            log.warning("FedCoin task %s has no round left to pay: no training", self.task_id.hex())
            return []
        config[TASK_CONFIG] = self.task_id.hex()
        config[ROUND_CONFIG] = self.round + 1
        messages = super().configure_train(
            server_round, record_of_weights(self.global_weights), config, grid
        )
        self._sent_at = time.perf_counter()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        timing = RoundTiming(self.round + 1, time.perf_counter() - self._sent_at)
        _, metrics = super().aggregate_train(server_round, replies)
        updates = self._updates(replies)
        if self.task_id is None or self.global_weights is None or not updates:
            return None, metrics
        if len(updates) < self.min_clients:  # the chain would refuse it: Flower keeps the model
            log.warning(
                "FedCoin round %d not submitted: %d signed updates, the task needs %d",
                self.round + 1, len(updates), self.min_clients,
            )  # fmt: skip
            return None, metrics
        start = time.perf_counter()
        self._join_pending()
        timing.settle_wait = time.perf_counter() - start
        r = self.round + 1
        new_global, timing.upload, timing.submit = self.ledger.submit_round(
            self.task_id, r, updates
        )
        self.timings.append(timing)
        log.info(
            "FedCoin round %d submitted: %d clients (training %.2f s, upload %.2f s, "
            "submit %.2f s, settlement wait %.2f s)",
            r, len(updates), timing.training, timing.upload, timing.submit, timing.settle_wait,
        )  # fmt: skip
        self.round, self.global_weights = r, new_global
        self._watch(r)
        return record_of_weights(new_global), metrics

    def start(self, *args: Any, **kwargs: Any) -> Result:
        result = super().start(*args, **kwargs)
        start = time.perf_counter()
        self._join_pending()
        if self.timings:
            self.timings[-1].settle_wait += time.perf_counter() - start
        return result

    # --- replies → signed updates -----------------------------------------------------------
    def _updates(self, replies: list[Message]) -> list[SignedUpdate]:
        assert self.task_id is not None and self.global_weights is not None
        out: list[SignedUpdate] = []
        seen_keys: set[bytes] = set()
        seen_weights: set[bytes] = set()
        for reply in replies:
            if reply.has_error():
                continue
            node = reply.metadata.src_node_id
            try:
                update = self._signed_update(reply)
            except (FedCoinError, BadArrays, KeyError, TypeError, ValueError) as exc:
                log.warning("dropping the reply of node %d: %s", node, exc)
                continue
            problem = self._problem(update, seen_keys, seen_weights)
            if problem and self.drop_invalid:
                log.warning("dropping the reply of node %d: %s", node, problem)
                continue
            if len(out) == self.max_clients:
                log.warning("the task pays at most %d clients a round: rest left out", len(out))
                break
            seen_keys.add(update.pubkey)
            seen_weights.add(_sha(update.blob))
            out.append(update)
        return out

    def _signed_update(self, reply: Message) -> SignedUpdate:
        record = reply.content.config_records.get(REPLY_RECORD)
        if record is None:
            raise FedCoinError("not signed (is the FedCoin mod registered on the client?)")
        pubkey, signature = record["pubkey"], record["signature"]
        if not isinstance(pubkey, bytes) or not isinstance(signature, bytes):
            raise FedCoinError("malformed FedCoin signature record")
        arrays = list(reply.content.array_records.values())
        metrics = [m for m in reply.content.metric_records.values() if self.weighted_by_key in m]
        if len(arrays) != 1 or len(metrics) != 1:
            raise FedCoinError("a reply needs one ArrayRecord and one MetricRecord")
        samples = metrics[0][self.weighted_by_key]
        if isinstance(samples, float) and samples.is_integer():
            samples = int(samples)
        if type(samples) is not int or samples < 1:
            raise FedCoinError(f"bad sample count {samples!r}")
        weights = weights_of_record(arrays[0])
        return SignedUpdate(pubkey, signature, samples, weights, weights_blob(weights))

    def _problem(
        self, update: SignedUpdate, seen_keys: set[bytes], seen_weights: set[bytes]
    ) -> str | None:
        """Why the chain would refuse the round with this update in it, if it would."""
        assert self.task_id is not None and self.global_weights is not None
        ref = ContentRef(_sha(update.blob), len(update.blob), "")
        check = ClientUpdate(update.pubkey, ref, update.samples, update.signature)
        try:
            signed = check.signature_ok(self.task_id, self.round + 1)
        except (ValueError, FedCoinError):
            signed = False
        if not signed:
            return "its signature does not verify for this task, round, weights and samples"
        if update.pubkey in seen_keys:
            return f"client {format_address(address_of(update.pubkey))} replied twice"
        if self.allowed and update.pubkey not in self.allowed:
            return "the client is not in the task's allowed_clients"
        if not 1 <= update.samples <= self.max_samples:
            return f"its sample count {update.samples} is not between 1 and {self.max_samples}"
        if _sha(update.blob) in seen_weights:
            return "same weights as another client's"
        if not same_shapes(update.weights, self.global_weights) or any(
            w.dtype != g.dtype for w, g in zip(update.weights, self.global_weights, strict=True)
        ):
            return "weights do not have the model's shapes and dtypes"
        return None

    # --- settlement ----------------------------------------------------------------------------
    def _watch(self, r: int) -> None:
        pending = _Pending(r, threading.Thread(target=lambda: None))

        def wait() -> None:
            try:
                self._settle(r)
            except BaseException as exc:  # reported by _join_pending in Flower's thread
                pending.error.append(exc)

        pending.thread = threading.Thread(target=wait, name=f"fedcoin-settle-{r}", daemon=True)
        self._pending = pending
        pending.thread.start()

    def _join_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        pending.thread.join()
        if pending.error:
            raise pending.error[0]

    def _settle(self, r: int) -> None:
        assert self.task_id is not None
        task = self.ledger.wait_task(
            self.task_id,
            lambda t: len(t["rounds"]) >= r and bool(t["rounds"][r - 1]["settled"]),
            f"FedCoin round {r} to settle",
            self.settle_timeout,
        )
        entry = task["rounds"][r - 1]
        payout = entry["payout"] or {}
        clients = [u["client"] for u in entry["updates"]]
        paid = {c["address"]: int(c["paid"]) for c in payout.get("clients", [])}
        settled = SettledRound(
            round=r, clients=clients, sv=list(payout.get("sv", [])), paid=paid,
            server=int(payout.get("server", 0)), voided=bool(payout.get("voided", False)),
            height=int(entry["settled_height"]),
        )  # fmt: skip
        self.settled.append(settled)
        log.info(
            "FedCoin round %d settled at height %d%s: %s",
            r, settled.height, " (voided)" if settled.voided else "",
            ", ".join(f"{a} SV {sv / SV_SCALE:.2f} paid {fc_text(paid.get(a, 0))} FC"
                      for a, sv in zip(clients, settled.sv, strict=False)),
        )  # fmt: skip
        if self.on_settled is not None:
            self.on_settled(settled)


def _sha(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()
