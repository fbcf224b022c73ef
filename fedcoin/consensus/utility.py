"""Coalition utility of an FL round (DESIGN §5): the exact null-player game, memoised.

``U(S)`` is ``game.NullPlayerGame``'s integer: the summed clipped margin of the true class
(``evaluator.MARGIN_CAP``) of the null-player mixture
``model(S) = Σ_{i∈S} λ_i·w_i + (1 − Σ_{i∈S} λ_i)·g`` (fixed round weights from clipped
counts) on the validation set under evaluator v1. It is computed with integer
fixed-point arithmetic only, so every node gets the same value bit for bit, whatever the CPU,
BLAS kernel or batch a coalition falls in. There is no float path and no Keras fallback: an
architecture the evaluator cannot compile is refused with its named ``EvaluatorError``.

``CoalitionGame`` adds what a node needs on top of the game: it compiles the bundle and
quantises the validation set, evaluates each coalition at most once, and serialises
evaluations (a node verifies shares and makes its own in worker threads).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from fedcoin.consensus.evaluator import Score, compile_architecture
from fedcoin.consensus.game import NullPlayerGame, exact_fedavg
from fedcoin.consensus.quantize import quantize_validation

Weights = list[np.ndarray]

__all__ = ["CoalitionGame", "Weights", "fedavg", "same_shapes"]

fedavg = exact_fedavg
"""The global model a round must submit: ``game.exact_fedavg`` (counts clipped at the smallest)."""


def same_shapes(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b, strict=True))


class CoalitionGame:
    """The FL game of one round: players are the clients; ``utility(mask)`` is ``U(S)``.

    Every coalition is evaluated at most once (memoised); ``evaluations`` counts them. Raises
    the evaluator's named error (a ``ContractError``) if the architecture, a model or the
    validation set is outside what evaluator v1 takes.
    """

    def __init__(
        self,
        architecture_json: str,
        previous: Sequence[np.ndarray],
        clients: Sequence[Sequence[np.ndarray]],
        samples: Sequence[int],
        x_val: np.ndarray,
        y_val: np.ndarray,
        score: Score = "margin",
    ) -> None:
        program = compile_architecture(architecture_json)
        validation = quantize_validation(program, x_val, y_val)
        self.game = NullPlayerGame(program, validation, previous, clients, samples, score)
        self.n = self.game.n
        self.weights = self.game.weights
        self.null_players = self.game.null_players
        self.memo: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def evaluations(self) -> int:
        return len(self.memo)

    def utilities(self, masks: Sequence[int]) -> list[int]:
        """U of each coalition, evaluating the ones not seen yet in one batch."""
        with self._lock:
            todo = sorted({m for m in masks if m not in self.memo})
            if todo:
                self.memo.update(zip(todo, self.game.utilities(todo), strict=True))
            return [self.memo[m] for m in masks]

    def utility(self, mask: int) -> int:
        return self.utilities([mask])[0]
