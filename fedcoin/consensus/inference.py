# mypy: disable-error-code="no-any-return"
"""The exact integer forward pass of evaluator v1, fast: BLAS on integer-valued float64.

``ExactEvaluator`` scores batches of coalition models ``W_S = Σ_j c_j·Q(w_j)`` (integer
coefficients ``c_j ≥ 0`` with ``Σ c_j = 2^K``) on a quantised validation set and returns how
many samples each classifies correctly. The result is a function of the integers only: the same
on every CPU, BLAS kernel, thread count and batch composition.

How it stays exact and fast (DESIGN §5): numpy's int64 matmul has no BLAS, so products run as
float64 matrices holding integers. A float64 sum of integer products is exact, whatever the
kernel's order of summation and FMA use, while every partial sum stays below 2^53 — guaranteed
when ``Σ_k |a_k|·|b_k| < 2^53``. The inner dimension is cut into chunks that respect this bound
(from the largest |value| of each side) and the chunk results are added in int64.

- Coalition weights: ``c @ stack`` with ``Σ_j c_j·|Q_j| ≤ 2^K·W_MAX < 2^53``: one exact product.
- The first weight layer sees the same input for every coalition, and ``x·W_S = Σ_j c_j·(x·Q_j)``
  is linear in the weights: when the players are fewer than its fan-in, each player's product
  ``P_j = x·Q_j`` is made once and a coalition's accumulator is ``c @ P``, split into 40-bit
  limbs so that ``2^K·|limb| < 2^53``. Otherwise the shared input meets every ``W_S`` directly.
- Integer rounding, clipping, pooling and scoring run on int64 arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcoin.consensus.evaluator import (
    A_MAX,
    F_A,
    F_W,
    F_X,
    K,
    PoolLayer,
    Program,
    QuantizedModel,
    ReshapeLayer,
    Validation,
    WeightLayer,
)

EXACT = 2**53
"""Every partial sum of a float64 product must stay below this."""
LIMB_BITS = 40
"""Limb width for ``c @ P``: ``2^K·2^40 < 2^53``."""
BATCH_ELEMENTS = 2**20
"""Memory bound of a batch of coalitions: int64 activation values per batch (8 MiB)."""


def exact_matmul(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int) -> np.ndarray:
    """``a @ b`` for integer-valued float64 ``a (…, M, k)``, ``b (…, k, o)`` with
    ``|a| ≤ a_max``, ``|b| ≤ b_max``: exact, as int64, via BLAS on chunks of the inner axis."""
    k = a.shape[-1]
    per_term = max(a_max * b_max, 1)
    chunk = max((EXACT - 1) // per_term, 1)
    if chunk >= k:
        return np.matmul(a, b).astype(np.int64)
    out: np.ndarray | None = None
    for start in range(0, k, chunk):
        part = np.matmul(a[..., start : start + chunk], b[..., start : start + chunk, :])
        out = part.astype(np.int64) if out is None else out + part.astype(np.int64)
    assert out is not None  # k ≥ 1, so the loop ran
    return out


def combine_players(coeffs: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    """``coeffs (m, P) @ stacked (P, M)`` exactly as int64, for non-negative integer ``coeffs``
    whose rows sum to at most ``2^K`` and int64 ``stacked``: 40-bit limbs through BLAS."""
    c = coeffs.astype(np.float64)
    top = int(np.abs(stacked).max(initial=0))
    if top < 2**LIMB_BITS:
        return np.matmul(c, stacked.astype(np.float64)).astype(np.int64)
    low = (stacked & (2**LIMB_BITS - 1)).astype(np.float64)
    high = (stacked >> LIMB_BITS).astype(np.float64)
    out = np.matmul(c, high).astype(np.int64) << LIMB_BITS
    out += np.matmul(c, low).astype(np.int64)
    return out


def _pad(h: np.ndarray, layer: WeightLayer | PoolLayer, value: int) -> np.ndarray:
    """Pad axes −3, −2 of (…, H, W, C) as Keras 'same' does (before = pads, rest after)."""
    (top, left), (h_in, w_in) = layer.pads, layer.in_shape[:2]
    rows = (layer.out_shape[0] - 1) * layer.strides[0] + layer.window[0]
    cols = (layer.out_shape[1] - 1) * layer.strides[1] + layer.window[1]
    bottom, right = max(rows - h_in - top, 0), max(cols - w_in - left, 0)
    if not (top or left or bottom or right):
        return h
    width = [(0, 0)] * (h.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    return np.pad(h, width, constant_values=value)


def _windows(h: np.ndarray, layer: WeightLayer | PoolLayer) -> np.ndarray:
    """(…, H, W, C) → (…, H', W', C, kh, kw): every window the layer reads."""
    win = np.lib.stride_tricks.sliding_window_view(h, layer.window, axis=(-3, -2))
    (rows, cols), (sr, sc) = layer.out_shape[:2], layer.strides
    return win[..., : rows * sr : sr, : cols * sc : sc, :, :, :]


def patches(h: np.ndarray, layer: WeightLayer, batch_axes: int) -> np.ndarray:
    """The input ``h (*B, N, *in_shape)`` as rows of ``fan_in`` values, float64:
    ``(*B, N·positions, fan_in)``. Conv2D patches are ordered (C, kh, kw) like ``kernel_matrix``."""
    lead = h.shape[:batch_axes]
    if layer.kind == "Dense":
        return h.reshape(*lead, -1, layer.fan_in).astype(np.float64)
    win = _windows(_pad(h.astype(np.float64), layer, 0), layer)
    return win.reshape(*lead, -1, layer.fan_in)


def kernel_matrix(kernel: np.ndarray, layer: WeightLayer) -> np.ndarray:
    """A kernel (…, kh, kw, C, F) or (…, fan_in, F) as (…, fan_in, F) in patch order."""
    if layer.kind == "Dense":
        return kernel
    moved = np.moveaxis(kernel, -2, -4)  # (…, C, kh, kw, F)
    return moved.reshape(*kernel.shape[:-4], layer.fan_in, kernel.shape[-1])


def requantize(acc: np.ndarray, bias: np.ndarray | None, layer: WeightLayer, f_in: int) -> None:
    """In place: ``clip(floor((acc + b·2^F_in + 2^(s−1)) / 2^s), lo, A_MAX)``."""
    s = f_in + F_W + K - F_A
    if bias is not None:
        acc += (bias << f_in)[..., None, :]  # bias (m, F) over positions
    acc += 1 << (s - 1)
    acc >>= s
    np.clip(acc, 0 if layer.relu else -A_MAX, A_MAX, out=acc)


def pool(h: np.ndarray, layer: PoolLayer) -> np.ndarray:
    """Integer max, or ``floor((2·sum + cnt) / (2·cnt))`` over the real cells of each window."""
    if layer.kind == "MaxPooling2D":
        low = np.iinfo(np.int64).min
        return _windows(_pad(h, layer, low), layer).max(axis=(-2, -1))
    total = _windows(_pad(h, layer, 0), layer).sum(axis=(-2, -1))
    ones = np.ones((*layer.in_shape[:2], 1), dtype=np.int64)
    count = _windows(_pad(ones, layer, 0), layer).sum(axis=(-2, -1))
    return (2 * total + count) // (2 * count)


def correct_counts(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(m, N, classes) int logits → correct samples per row: ``z_y > z_j`` for all j ≠ y (ties
    are wrong); one output: ``z > 0`` for y = 1, ``z < 0`` for y = 0."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        right = np.where(y[None, :] == 1, z > 0, z < 0)
        return right.sum(axis=1).astype(np.int64)
    hot = np.arange(logits.shape[-1])[None, :] == y[:, None]  # (N, classes)
    true = np.where(hot, logits, 0).sum(axis=-1)
    others = np.where(hot, np.iinfo(np.int64).min, logits).max(axis=-1)
    return (true > others).sum(axis=1).astype(np.int64)


class ExactEvaluator:
    """Scores coalition models of a fixed set of players on one validation set, exactly."""

    def __init__(
        self, program: Program, validation: Validation, players: Sequence[QuantizedModel]
    ) -> None:
        if not players:
            raise ValueError("at least one player")
        self.program = program
        self.validation = validation
        self.players = len(players)
        # stacked[t] = (players, size of tensor t), integer-valued float64
        self.stacked = [
            np.stack([p[t].reshape(-1) for p in players]).astype(np.float64)
            for t in range(len(program.tensor_shapes))
        ]
        self.w_max = [int(np.abs(s).max(initial=0)) for s in self.stacked]
        # Layers before the first weight layer see only x_q: run them once.
        h = validation.x
        self.start = 0
        for layer in program.layers:
            if isinstance(layer, WeightLayer):
                break
            h = _run_fixed(layer, h, 1)
            self.start += 1
        first = program.layers[self.start]
        if not isinstance(first, WeightLayer):  # compile_architecture ensures one
            raise ValueError("a program needs a weight layer")
        self.first: WeightLayer = first
        self.first_in = patches(h, self.first, 0)  # (N·positions, fan_in)
        self.per_player: np.ndarray | None = None
        self.use_players = 2 * self.players < self.first.fan_in
        widest = max(
            [self.first.fan_in, *(_width(layer) for layer in program.layers[self.start :])]
        )
        self.batch = max(1, BATCH_ELEMENTS // (len(validation.y) * widest))

    def correct(self, coeffs: np.ndarray) -> np.ndarray:
        """``coeffs`` (m, players) non-negative ints, rows summing to 2^K → correct counts."""
        coeffs = np.asarray(coeffs, dtype=np.int64)
        if coeffs.ndim != 2 or coeffs.shape[1] != self.players:
            raise ValueError("one coefficient per player in each row")
        if (coeffs < 0).any() or (coeffs.sum(axis=1) != 2**K).any():
            raise ValueError("coefficients must be non-negative and sum to 2^K")
        out = np.empty(coeffs.shape[0], dtype=np.int64)
        for start in range(0, coeffs.shape[0], self.batch):
            z = self.logits(coeffs[start : start + self.batch])
            out[start : start + self.batch] = correct_counts(z, self.validation.y)
        return out

    def _mixed(self, c: np.ndarray, tensor: int) -> np.ndarray:
        """``W_S`` of one tensor for each row: (m, size) integer-valued float64, exact."""
        return np.matmul(c, self.stacked[tensor])

    def _first_layer(self, coeffs: np.ndarray, c: np.ndarray) -> np.ndarray:
        layer, m = self.first, coeffs.shape[0]
        rows = self.first_in[None]  # (1, N·positions, fan_in), shared by every coalition
        if self.use_players:
            if self.per_player is None:
                shape = (self.players, *self._shape(layer.kernel))
                kernels = kernel_matrix(self.stacked[layer.kernel].reshape(shape), layer)
                prods = exact_matmul(
                    rows, kernels, self.validation.input_max, self.w_max[layer.kernel]
                )
                self.per_player = prods.reshape(self.players, -1)
            acc = combine_players(coeffs, self.per_player)
            acc = acc.reshape(m, rows.shape[1], layer.out_shape[-1])
        else:
            kernel = self._mixed(c, layer.kernel).reshape(m, *self._shape(layer.kernel))
            wmax = self.w_max[layer.kernel] * 2**K
            acc = exact_matmul(rows, kernel_matrix(kernel, layer), self.validation.input_max, wmax)
        bias = None if layer.bias is None else self._mixed(c, layer.bias).astype(np.int64)
        requantize(acc, bias, layer, F_X)
        return acc.reshape(m, len(self.validation.y), *layer.out_shape)

    def _shape(self, tensor: int) -> tuple[int, ...]:
        return self.program.tensor_shapes[tensor]

    def logits(self, coeffs: np.ndarray) -> np.ndarray:
        """Integer logits (m, N, outputs) of one batch of coalitions (checked by ``correct``)."""
        c = coeffs.astype(np.float64)
        m = coeffs.shape[0]
        h = self._first_layer(coeffs, c)
        for layer in self.program.layers[self.start + 1 :]:
            if isinstance(layer, WeightLayer):
                kernel = self._mixed(c, layer.kernel).reshape(m, *self._shape(layer.kernel))
                rows = patches(h, layer, 1)  # (m, N·positions, fan_in)
                wmax = self.w_max[layer.kernel] * 2**K
                acc = exact_matmul(rows, kernel_matrix(kernel, layer), A_MAX, wmax)
                bias = None if layer.bias is None else self._mixed(c, layer.bias).astype(np.int64)
                requantize(acc, bias, layer, F_A)
                h = acc.reshape(m, h.shape[1], *layer.out_shape)
            else:
                h = _run_fixed(layer, h, 2)
        return h.reshape(m, h.shape[1], -1)


def _run_fixed(
    layer: WeightLayer | PoolLayer | ReshapeLayer, h: np.ndarray, lead: int
) -> np.ndarray:
    """A layer without weights on int64 activations ``(*lead axes, *shape)``."""
    if isinstance(layer, ReshapeLayer):
        return h.reshape(*h.shape[:lead], *layer.out_shape)
    assert isinstance(layer, PoolLayer)
    return pool(h, layer)


def _width(layer: WeightLayer | PoolLayer | ReshapeLayer) -> int:
    """Values per sample a layer holds at once (its im2col rows for Conv2D)."""
    if isinstance(layer, WeightLayer):
        return int(np.prod(layer.out_shape[:-1])) * max(layer.fan_in, layer.out_shape[-1])
    if isinstance(layer, PoolLayer):
        return int(np.prod(layer.in_shape))
    return int(np.prod(layer.out_shape))
