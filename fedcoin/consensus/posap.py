"""The node's Proof-of-Shapley oracle (DESIGN §4–§5): checks of a round's content, and exact
answers about an SV task's game for the valuation rules (``valuation.TableOracle``).

``PosapVerifier`` is the node's ``WorkVerifier``: it reads the round's weights from a content
source, checks the round (shapes, evaluator bounds, bit-exact FedAvg), builds the game and caches
it by the hash of the whole SV task and the task's model and validation set (not by the SV task
id alone: an equivocating FL server could otherwise poison the cache with another round). The
game memoises ``U`` per mask, so a node evaluates each (SV task, position) at most once however
many reveals, settlements and fraud proofs name it. The estimate of a settled table is cached by
its root: exact rational arithmetic, computed once per table.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np

from fedcoin.consensus.admission import TaskAdmission
from fedcoin.consensus.evaluator import compile_architecture
from fedcoin.consensus.game import is_exact_fedavg, max_utility
from fedcoin.consensus.quantize import quantize_weights
from fedcoin.consensus.table import table_estimate, table_root
from fedcoin.consensus.utility import CoalitionGame
from fedcoin.data.content import ContentSource, resolve
from fedcoin.data.encoding import encode
from fedcoin.data.state import SvTask, TaskState
from fedcoin.data.tensors import decode_bundle, decode_dataset, weights_of
from fedcoin.data.tx import ContentRef, SubmitRound, TaskSpec
from fedcoin.errors import (
    DecodeError,
    EvaluatorError,
    NotFedAvg,
    RoundContentUnavailable,
    RuleViolation,
    ShareContentUnavailable,
    WrongTensorShapes,
)

T = TypeVar("T")
ROUNDS_REMEMBERED = 64
ESTIMATES_REMEMBERED = 64


def estimate_worker() -> Executor:
    """One worker process for estimates (spawned: the node's threads make fork unsafe)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class LazyWorker(Executor):
    """``estimate_worker`` started at the first estimate that needs it (most nodes of a test
    or a simulation never settle a sampled table, and a spawned process costs a second)."""

    def __init__(self) -> None:
        self._pool: Executor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._pool is None:
                self._pool = estimate_worker()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
                self._pool = None


def layout(weights: Sequence[np.ndarray]) -> list[tuple[tuple[int, ...], str]]:
    """Each tensor's shape and dtype, in order: what two models must share to be averaged."""
    return [(tuple(a.shape), a.dtype.str) for a in weights]


def game_key(sv_task: SvTask, spec: TaskSpec) -> bytes:
    """What a cached game is valid for: the whole round the SV task values (its id, task,
    number, updates and both global models) and the task's bundle and data — not the progress
    of its valuation (commits, reveals), which changes block by block."""
    round_ = [
        sv_task.sv_task_id,
        sv_task.task_id,
        sv_task.round,
        [u.to_wire() for u in sv_task.updates],
        sv_task.prev_global.to_wire(),
        sv_task.global_model.to_wire(),
    ]
    return hashlib.sha256(encode(round_) + spec.model.sha256 + spec.validation.sha256).digest()


class PosapVerifier:
    """The real ``WorkVerifier``: content from a source, FedAvg check, cached games."""

    def __init__(
        self, content: ContentSource, cache_games: int = 8, estimator: Executor | None = None
    ) -> None:
        self.content = content
        self.estimator = estimator
        """Where sampled tables' estimates run: a process pool keeps their exact rational
        arithmetic (about 1 s at 60 clients) from holding this process's GIL; None: inline."""
        self.games: OrderedDict[bytes, CoalitionGame] = OrderedDict()
        self.cache_games = cache_games
        self.rounds_ok: OrderedDict[bytes, None] = OrderedDict()
        self.estimates: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()
        self.samples: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()  # games are built and looked up from worker threads
        self.check_task = TaskAdmission(content).check_task  # PublishTask's content checks

    def _blob(self, ref: ContentRef, missing: type[RuleViolation]) -> bytes:
        data = resolve(self.content, ref)  # sha256 and size
        if data is None:
            raise missing(sha256=ref.sha256)
        return data

    def check_round(self, task: TaskState, round_: SubmitRound) -> None:
        """Shapes, dtypes and FedAvg of a round; a round that passed is remembered, so the
        node can check it off the event loop first and the mempool's re-checks cost nothing."""
        key = hashlib.sha256(task.spec.model.sha256 + round_.encode()).digest()
        with self._lock:
            if key in self.rounds_ok:
                self.rounds_ok.move_to_end(key)
                return
        self._check_round(task, round_)
        with self._lock:
            self.rounds_ok[key] = None
            while len(self.rounds_ok) > ROUNDS_REMEMBERED:
                self.rounds_ok.popitem(last=False)

    def _check_round(self, task: TaskState, round_: SubmitRound) -> None:
        miss = RoundContentUnavailable
        try:
            clients = [weights_of(self._blob(u.weights, miss)) for u in round_.updates]
            global_model = weights_of(self._blob(round_.global_model, miss))
            architecture, reference = decode_bundle(self._blob(task.spec.model, miss))
        except DecodeError as exc:
            raise NotFedAvg(reason=f"undecodable weights: {exc}") from None
        # Every client update and the global model fit the task's model: same tensors, same
        # shapes, same dtypes (else no coalition of them can be evaluated)
        expected = layout(reference)
        for index, weights in enumerate([*clients, global_model]):
            if layout(weights) != expected:
                which = f"client {index}" if index < len(clients) else "global model"
                raise WrongTensorShapes(which=which, expected=expected, got=layout(weights))
        # Every model quantises within evaluator v1's bounds (else no validator could score
        # it later: refused here with the evaluator's named error, before it is queued)
        program = compile_architecture(architecture)
        for weights in clients:
            quantize_weights(program, weights)
        # The global model is, bit for bit, the FedAvg with counts clipped at the smallest
        if not is_exact_fedavg(global_model, clients, [u.samples for u in round_.updates]):
            raise NotFedAvg(round=round_.round)

    def game(self, sv_task: SvTask, task: TaskState) -> CoalitionGame:
        """The coalition game of an SV task, built once and cached."""
        with self._lock:
            return self._game(sv_task, task)

    def _game(self, sv_task: SvTask, task: TaskState) -> CoalitionGame:
        key = game_key(sv_task, task.spec)
        cached = self.games.get(key)
        if cached is not None:
            self.games.move_to_end(key)
            return cached
        miss = ShareContentUnavailable
        try:
            architecture, _ = decode_bundle(self._blob(task.spec.model, miss))
            x, y = decode_dataset(self._blob(task.spec.validation, miss))
            previous = weights_of(self._blob(sv_task.prev_global, miss))
            clients = [weights_of(self._blob(u.weights, miss)) for u in sv_task.updates]
        except DecodeError as exc:
            raise ShareContentUnavailable(reason=f"undecodable content: {exc}") from None
        try:
            game = CoalitionGame(
                architecture, previous, clients, [u.samples for u in sv_task.updates], x, y
            )
        except (EvaluatorError, ValueError, TypeError, KeyError, IndexError) as exc:
            # content that passed the round's checks but still cannot form a game (e.g. a
            # validation set that does not fit the model): no share can be made, so the
            # round is voided after the PoSap timeout instead of stopping the miners
            raise ShareContentUnavailable(reason=f"cannot build the game: {exc}") from None
        self.games[key] = game
        while len(self.games) > self.cache_games:
            self.games.popitem(last=False)
        return game

    # --- valuation.TableOracle ---------------------------------------------------------------
    def utilities(self, sv: SvTask, task: TaskState, masks: Sequence[int]) -> list[int]:
        return self.game(sv, task).utilities(masks)

    def max_utility(self, task: TaskState) -> int:
        key = task.spec.validation.sha256
        with self._lock:
            found = self.samples.get(key)
        if found is None:
            data = self._blob(task.spec.validation, ShareContentUnavailable)
            try:
                x, _ = decode_dataset(data)
            except DecodeError as exc:
                raise ShareContentUnavailable(reason=f"undecodable validation set: {exc}") from None
            found = len(x)
            with self._lock:
                self.samples[key] = found
                while len(self.samples) > ROUNDS_REMEMBERED:
                    self.samples.popitem(last=False)
        return max_utility(found)

    def estimate(
        self, sv: SvTask, task: TaskState, schedule: Sequence[int], table: Sequence[int]
    ) -> tuple[int, ...]:
        key = table_root(sv.sv_task_id, table) + game_key(sv, task.spec)
        with self._lock:
            found = self.estimates.get(key)
        if found is None:
            game = self.game(sv, task)
            args = (game.n, tuple(schedule), tuple(table), game.null_players)
            if self.estimator is not None and len(table) < 1 << game.n:
                found = self.estimator.submit(table_estimate, *args).result()
            else:  # an exact table's estimate takes about a millisecond
                found = table_estimate(*args)
            with self._lock:
                self.estimates[key] = found
                while len(self.estimates) > ESTIMATES_REMEMBERED:
                    self.estimates.popitem(last=False)
        return found
