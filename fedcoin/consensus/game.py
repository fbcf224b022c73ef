# mypy: disable-error-code="no-any-return"
"""The FL round as a cooperative game in null-player form (DESIGN §5 "The game").

Players are the round's clients ``1..n``; ``g`` is the previous global model. Each client's
weight in every coalition is fixed for the round:

- sample counts are clipped at the round's smallest count, ``s'_i = min(s_i, s_min)``, so every
  client weighs the same: reported counts cannot be verified, and any weight that grows with
  them pays a client that inflates its count (clipping at the median still paid a client below
  the median up to 2.98× under Dirichlet(0.5) with the margin score, docs/BENCHMARKS.md);
- ``L_i`` is the largest-remainder apportionment of ``2^K·s'_i / Σ s'`` (remainder ties to the
  lower client index), so ``Σ L_i = 2^K``;
- coalition S mixes ``model(S) = Σ_j c_j·Q(w_j) / 2^K`` with integer coefficients
  ``c_i = L_i`` for i ∈ S and ``c_g = 2^K − Σ_{i∈S} L_i`` for the previous global model.

Nothing is renormalised inside S and nothing is rounded, so a client whose quantised update
equals ``Q(g)`` leaves every coalition's weights unchanged: its Shapley value is exactly 0.
``U(S)`` sums, over the validation samples, ``model(S)``'s margin of the true class over the best
other class under evaluator v1, clipped to [0, MARGIN_CAP] (a smoother score than the count of
correct samples: equal clients are paid more alike, docs/BENCHMARKS.md), so
``0 ≤ U(S) ≤ max_utility(N)``.

Also here: the bit-exact FedAvg the submitted global model must equal (DESIGN §4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcoin.consensus.evaluator import MARGIN_CAP, K, Program, Score, Validation
from fedcoin.consensus.inference import ExactEvaluator
from fedcoin.consensus.quantize import quantize_weights

Weights = list[np.ndarray]


def max_utility(validation_samples: int) -> int:
    """The largest ``U`` a coalition can score on a validation set of this many samples (every
    table entry lies in [0, this])."""
    return validation_samples * MARGIN_CAP


def clip_samples(samples: Sequence[int]) -> tuple[int, ...]:
    """``s'_i = min(s_i, s_min)``: every count clipped at the round's smallest one (no claim
    can raise a client's weight above another's)."""
    if not samples or any(type(s) is not int or s < 1 for s in samples):
        raise ValueError("sample counts must be positive integers, at least one")
    smallest = min(samples)
    return tuple(min(s, smallest) for s in samples)


def apportion(counts: Sequence[int], bits: int = K) -> tuple[int, ...]:
    """Largest-remainder apportionment of ``2^bits`` seats by ``counts``: floor quotas, then one
    more seat each to the largest remainders, ties to the lower index. Sums to ``2^bits``."""
    if not counts or any(type(c) is not int or c < 0 for c in counts) or sum(counts) == 0:
        raise ValueError("counts must be non-negative integers with a positive sum")
    seats, total = 1 << bits, sum(counts)
    quotas = [seats * c // total for c in counts]
    remainders = [seats * c % total for c in counts]
    left = seats - sum(quotas)
    order = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        quotas[i] += 1
    return tuple(quotas)


def round_weights(samples: Sequence[int]) -> tuple[int, ...]:
    """``L_i``: the fixed integer round weights of the clients (``λ_i = L_i / 2^K``)."""
    return apportion(clip_samples(samples))


def coalition_coefficients(masks: Sequence[int], weights: Sequence[int]) -> np.ndarray:
    """(m, n + 1) int64: row = ``c_1..c_n, c_g`` of each coalition mask (bit i ↔ client i)."""
    n = len(weights)
    masks_arr = np.asarray(masks, dtype=np.int64).reshape(-1)
    if masks_arr.size and (masks_arr.min() < 0 or masks_arr.max() >= 1 << n):
        raise ValueError(f"coalition masks must lie in [0, 2^{n})")
    bits = (masks_arr[:, None] >> np.arange(n, dtype=np.int64)) & 1
    members = bits * np.asarray(weights, dtype=np.int64)[None, :]
    rest = (1 << K) - members.sum(axis=1, keepdims=True)
    return np.concatenate([members, rest], axis=1)


class NullPlayerGame:
    """``U(mask)`` of one round, exact: the same integers on every node and every batch."""

    def __init__(
        self,
        program: Program,
        validation: Validation,
        previous: Sequence[np.ndarray],
        clients: Sequence[Sequence[np.ndarray]],
        samples: Sequence[int],
        score: Score = "margin",
    ) -> None:
        """Quantises every model (a named ``EvaluatorError`` if one is out of range). ``score``
        is the protocol's ``"margin"``; ``"count"`` serves comparisons and tests."""
        if not clients or len(clients) != len(samples):
            raise ValueError("one sample count per client, at least one client")
        self.n = len(clients)
        self.weights = round_weights(samples)
        players = [quantize_weights(program, c) for c in clients]
        players.append(quantize_weights(program, previous))
        self.evaluator = ExactEvaluator(program, validation, players)
        self.score: Score = score
        g = players[-1]
        self.null_players = sum(
            1 << i
            for i, q in enumerate(players[:-1])
            if all(np.array_equal(a, b) for a, b in zip(q, g, strict=True))
        )
        """Bit i set when client i's quantised update equals ``Q(g)``: a null player in every
        coalition, whose Shapley value is exactly 0 (also where the table is only sampled)."""

    def utilities(self, masks: Sequence[int]) -> list[int]:
        """``U`` of each coalition mask, in order."""
        if len(masks) == 0:
            return []
        coeffs = coalition_coefficients(masks, self.weights)
        return [int(c) for c in self.evaluator.scores(coeffs, self.score)]

    def utility(self, mask: int) -> int:
        return self.utilities([mask])[0]


def exact_fedavg(updates: Sequence[Sequence[np.ndarray]], samples: Sequence[int]) -> Weights:
    """The global model a round must submit (DESIGN §4): ``Σ s'_i·w_i / Σ s'`` accumulated
    elementwise in float64 in client order, then cast to float32. Elementwise IEEE operations
    in a fixed order give the same bits on every machine (no BLAS involved)."""
    clipped = clip_samples(samples)
    if len(updates) != len(clipped):
        raise ValueError("one sample count per update")
    total = float(sum(clipped))
    out = []
    for tensors in zip(*updates, strict=True):
        acc = np.zeros(tensors[0].shape, dtype=np.float64)
        for tensor, count in zip(tensors, clipped, strict=True):
            acc += tensor.astype(np.float64) * float(count)
        out.append((acc / total).astype(np.float32))
    return out


def is_exact_fedavg(
    global_model: Sequence[np.ndarray],
    updates: Sequence[Sequence[np.ndarray]],
    samples: Sequence[int],
) -> bool:
    """Is ``global_model`` bit for bit the ``exact_fedavg`` of the updates?"""
    if not updates or any(len(u) != len(global_model) for u in updates):
        return False
    shapes = [np.shape(t) for t in global_model]
    if any([np.shape(t) for t in u] != shapes for u in updates):
        return False
    expected = exact_fedavg(updates, samples)
    return all(
        g.dtype == e.dtype and g.shape == e.shape and g.tobytes() == e.tobytes()
        for g, e in zip(global_model, expected, strict=True)
    )
