"""Proof of Shapley shares (DESIGN §5): make one, verify one, aggregate many.

A share is a miner's table of evaluated coalitions ``(mask, U)`` and the fixed-point Shapley
estimate recomputed from it. Which coalitions a share holds is fixed by
``seed = sha256("fedcoin/posap/seed" || sv_task_id || miner_pubkey)`` and the task's budget, so
a miner cannot choose them; up to ``n_exact_max`` clients the table is all ``2**n`` coalitions.
``U`` is the exact null-player game (``utility.CoalitionGame``): every node computes the same
integers, so a table entry is right or wrong — there is no tolerance.

Verifying a share, cheapest check first (a bogus share costs little):
1. its estimator and coalitions are exactly what the seed and budget prescribe;
2. the border entries (∅, N, singletons, (n−1)-coalitions) and ``spot_checks`` more entries,
   chosen by ``sha256(share || parent_hash)``, are re-evaluated and must be EQUAL to the
   re-evaluation (``PosapParams.tolerance`` is ignored: any difference is a mismatch).
   Re-evaluations go through the game's memo, so checking many shares of one SV task costs
   little more than checking one;
3. its estimate equals the recomputation from its table (exact rational arithmetic).

``PosapVerifier`` is the node's ``WorkVerifier``: it reads the round's weights from a content
source, checks the round (shapes, evaluator bounds, bit-exact FedAvg), builds the game and caches
it by the hash of the whole SV task and the task's model and validation set (not by the SV task
id alone: an equivocating FL server could otherwise poison the cache with another round).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fedcoin.consensus.admission import TaskAdmission
from fedcoin.consensus.aggregate import aggregate_estimates
from fedcoin.consensus.evaluator import compile_architecture
from fedcoin.consensus.game import is_exact_fedavg
from fedcoin.consensus.quantize import quantize_weights
from fedcoin.consensus.shapley import (
    ESTIMATOR_EXACT,
    ESTIMATOR_STRATIFIED,
    SeededRng,
    border,
    fixed_point_estimate,
    stratified_schedule,
)
from fedcoin.consensus.utility import CoalitionGame
from fedcoin.data.block import Share
from fedcoin.data.content import ContentSource, resolve
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import SvTask, TaskState
from fedcoin.data.tensors import decode_bundle, decode_dataset, weights_of
from fedcoin.data.tx import ContentRef, PosapParams, SubmitRound, TaskSpec
from fedcoin.errors import (
    DecodeError,
    EstimateMismatch,
    EstimatorMismatch,
    EvaluatorError,
    NotFedAvg,
    RoundContentUnavailable,
    RuleViolation,
    ScheduleMismatch,
    ShareContentUnavailable,
    TableEntryMismatch,
    WrongTensorShapes,
)

SEED_TAG = b"fedcoin/posap/seed"
SPOT_TAG = b"fedcoin/posap/spot"
ROUNDS_REMEMBERED = 64


class Game(Protocol):
    """What PoSap needs of a game: its size and memoised integer utilities."""

    n: int
    null_players: int
    """Mask of the clients whose quantised update equals the previous global's."""

    def utilities(self, masks: Sequence[int]) -> list[int]: ...


def share_seed(sv_task_id: bytes, miner_pubkey: bytes) -> bytes:
    return hashlib.sha256(SEED_TAG + sv_task_id + miner_pubkey).digest()


def plan(n: int, params: PosapParams, seed: bytes) -> tuple[int, list[int]]:
    """(estimator, coalitions in order) for a game of ``n`` clients."""
    if n <= params.n_exact_max or params.budget >= 1 << n:
        return ESTIMATOR_EXACT, list(range(1 << n))
    return ESTIMATOR_STRATIFIED, stratified_schedule(n, params.budget, seed)


def make_share(sv_task: SvTask, params: PosapParams, game: Game, key: PrivateKey) -> Share:
    """Evaluate the prescribed coalitions and sign the resulting share."""
    estimator, masks = plan(game.n, params, share_seed(sv_task.sv_task_id, key.public))
    values = game.utilities(masks)
    table = tuple(zip(masks, values, strict=True))
    estimate = posap_estimate(game, table)
    unsigned = Share(sv_task.sv_task_id, key.public, estimator, table, estimate, bytes(64))
    return unsigned.signed(key)


def checked_positions(share: Share, n: int, parent_hash: bytes, spot_checks: int) -> list[int]:
    """Table positions a verifier re-evaluates: the border, then seeded spot checks."""
    position = {mask: i for i, (mask, _) in enumerate(share.table)}
    chosen = [position[m] for m in border(n) if m in position]
    fixed = set(chosen)
    rest = [i for i in range(len(share.table)) if i not in fixed]
    rng = SeededRng(hashlib.sha256(SPOT_TAG + share.encode() + parent_hash).digest())
    for j in range(min(spot_checks, len(rest))):
        pick = j + rng.below(len(rest) - j)
        rest[j], rest[pick] = rest[pick], rest[j]
        chosen.append(rest[j])
    return chosen


def verify_share(
    share: Share, sv_task: SvTask, params: PosapParams, game: Game, parent_hash: bytes
) -> None:
    """Raise the ``ShareError`` a share breaks; return when its work checks out."""
    n = sv_task.n
    estimator, masks = plan(n, params, share_seed(sv_task.sv_task_id, share.miner_pubkey))
    # The estimator is the one the parameters prescribe
    if share.estimator != estimator:
        raise EstimatorMismatch(expected=estimator, got=share.estimator)
    # The table holds exactly the prescribed coalitions, in order
    if len(share.table) != len(masks) or any(
        m != expected for (m, _), expected in zip(share.table, masks, strict=False)
    ):
        raise ScheduleMismatch(expected=len(masks), got=len(share.table))
    # Border and spot-checked entries equal an exact re-evaluation (no tolerance: U is exact)
    positions = checked_positions(share, n, parent_hash, params.spot_checks)
    claimed = [share.table[i] for i in positions]
    actual = game.utilities([m for m, _ in claimed])
    for (mask, value), real in zip(claimed, actual, strict=True):
        if value != real:
            raise TableEntryMismatch(mask=mask, claimed=value, evaluated=real)
    # The estimate is the recomputation from the table (the costliest check, so the last)
    if tuple(share.estimate) != posap_estimate(game, share.table):
        raise EstimateMismatch(miner=share.miner_pubkey)


def posap_estimate(game: Game, table: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The share's estimate: ``fixed_point_estimate`` of its table, 0 for the null players."""
    return fixed_point_estimate(game.n, table, game.null_players)


def layout(weights: Sequence[np.ndarray]) -> list[tuple[tuple[int, ...], str]]:
    """Each tensor's shape and dtype, in order: what two models must share to be averaged."""
    return [(tuple(a.shape), a.dtype.str) for a in weights]


def aggregate_shares(shares: Sequence[Share]) -> tuple[int, ...]:
    """The round's consensus SV: coordinate-wise median of the shares' estimates."""
    return aggregate_estimates([s.estimate for s in shares])


# --- the node's verifier -------------------------------------------------------------------
def game_key(sv_task: SvTask, spec: TaskSpec) -> bytes:
    """What a cached game is valid for: the whole SV task and the task's bundle and data."""
    return hashlib.sha256(sv_task.encode() + spec.model.sha256 + spec.validation.sha256).digest()


class PosapVerifier:
    """The real ``WorkVerifier``: content from a source, FedAvg check, cached games."""

    def __init__(self, content: ContentSource, cache_games: int = 8) -> None:
        self.content = content
        self.games: OrderedDict[bytes, CoalitionGame] = OrderedDict()
        self.cache_games = cache_games
        self.rounds_ok: OrderedDict[bytes, None] = OrderedDict()
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

    def verify_share(
        self, sv_task: SvTask, task: TaskState, share: Share, parent_hash: bytes
    ) -> None:
        verify_share(share, sv_task, task.spec.posap, self.game(sv_task, task), parent_hash)
