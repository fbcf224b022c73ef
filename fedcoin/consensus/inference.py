# mypy: disable-error-code="no-any-return"
"""The exact integer forward pass of evaluator v1, fast: BLAS on integer-valued float64.

``ExactEvaluator`` scores batches of coalition models ``W_S = Σ_j c_j·Q(w_j)`` (integer
coefficients ``c_j ≥ 0`` with ``Σ c_j = 2^K``) on a quantised validation set: the sum over the
samples of the true class's logit margin clipped to [0, MARGIN_CAP] (the protocol's ``U``), or
how many samples each classifies correctly. The result is a function of the integers only: the same
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
  limbs so that ``2^K·|limb| < 2^53``; the bias and the rounding half are folded into ``P_j``
  (also linear in c). Otherwise the shared input meets every coalition's kernel in one wide
  GEMM, and the result stays in that (N, …, m·F) layout through any pooling that follows.
- A max-pool right after the first layer is applied to the accumulators before rounding:
  rounding and clipping are non-decreasing and the bias is constant per channel, so the values
  are the same; without padding it runs as one GEMM per pool offset and a running maximum.
- Activations are float64 arrays holding integers (|h| ≤ A_MAX). Rounding runs in float64 when
  every value stays below 2^53 (adding integers and scaling by 2^−s are then exact), else in
  int64; average pooling divides in int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcoin.consensus.evaluator import (
    A_MAX,
    F_A,
    F_W,
    F_X,
    MARGIN_CAP,
    K,
    PoolLayer,
    Program,
    QuantizedModel,
    ReshapeLayer,
    Score,
    Validation,
    WeightLayer,
)

EXACT = 2**53
"""Every partial sum of a float64 product must stay below this."""
LIMB_BITS = 40
"""Limb width for ``c @ P``: ``2^K·2^40 < 2^53``."""
BATCH_ELEMENTS = 2**22
"""Memory bound of a batch of coalitions: activation values per batch (32 MiB of float64)."""


def exact_matmul(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int) -> tuple[np.ndarray, int]:
    """``a @ b`` for integer-valued float64 ``a (…, M, k)``, ``b (…, k, o)`` with
    ``|a| ≤ a_max``, ``|b| ≤ b_max``, exactly: the product and a bound on its |values|.
    One BLAS call (float64 result) when ``k·a_max·b_max < 2^53``; otherwise chunks of the inner
    axis that each respect that bound, added in int64 (int64 result)."""
    k = a.shape[-1]
    per_term = max(a_max * b_max, 1)
    chunk = max((EXACT - 1) // per_term, 1)
    if chunk >= k:
        return np.matmul(a, b), k * per_term
    out: np.ndarray | None = None
    for start in range(0, k, chunk):
        part = np.matmul(a[..., start : start + chunk], b[..., start : start + chunk, :])
        out = part.astype(np.int64) if out is None else out + part.astype(np.int64)
    assert out is not None  # k ≥ 1, so the loop ran
    return out, k * per_term


def combine_players(coeffs: np.ndarray, stacked: np.ndarray) -> tuple[np.ndarray, int]:
    """``coeffs (m, P) @ stacked (P, M)`` exactly, for non-negative integer ``coeffs`` whose
    rows sum to at most ``2^K`` and int64 ``stacked``: one float64 GEMM when ``|stacked| <
    2^40``, else two 40-bit limbs added in int64. Returns the product and its bound."""
    c = coeffs.astype(np.float64)
    top = int(np.abs(stacked).max(initial=0))
    bound = (1 << K) * top
    if top < 2**LIMB_BITS:
        return np.matmul(c, stacked.astype(np.float64)), bound
    low = (stacked & (2**LIMB_BITS - 1)).astype(np.float64)
    high = (stacked >> LIMB_BITS).astype(np.float64)
    out = np.matmul(c, high).astype(np.int64) << LIMB_BITS
    out += np.matmul(c, low).astype(np.int64)
    return out, bound


def _pad(h: np.ndarray, layer: WeightLayer | PoolLayer, value: float) -> np.ndarray:
    """Pad axes −3, −2 of (…, H, W, C) as Keras 'same' does (before = pads, rest after)."""
    (top, left), (h_in, w_in) = layer.pads, layer.in_shape[:2]
    rows = (layer.out_shape[0] - 1) * layer.strides[0] + layer.window[0]
    cols = (layer.out_shape[1] - 1) * layer.strides[1] + layer.window[1]
    bottom, right = max(rows - h_in - top, 0), max(cols - w_in - left, 0)
    if not (top or left or bottom or right):
        return h
    width = [(0, 0)] * (h.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    return np.pad(h, width, constant_values=value)


def _taps(h: np.ndarray, layer: WeightLayer | PoolLayer) -> list[np.ndarray]:
    """The kh·kw strided views of padded ``(…, H, W, C)``, one per kernel offset (di, dj) in
    row-major order: tap (di, dj)[…, i, j, c] = input cell (i·sr + di, j·sc + dj, c)."""
    (rows, cols), (sr, sc) = layer.out_shape[:2], layer.strides
    return [
        h[..., di : di + (rows - 1) * sr + 1 : sr, dj : dj + (cols - 1) * sc + 1 : sc, :]
        for di in range(layer.window[0])
        for dj in range(layer.window[1])
    ]


def patches(h: np.ndarray, layer: WeightLayer, batch_axes: int) -> np.ndarray:
    """The float64 input ``h (*B, N, *in_shape)`` as rows of ``fan_in`` values:
    ``(*B, N·positions, fan_in)``; Conv2D rows are ordered (kh, kw, C) like its kernel."""
    lead = h.shape[:batch_axes]
    if layer.kind == "Dense":
        return h.reshape(*lead, -1, layer.fan_in)
    taps = _taps(_pad(h, layer, 0), layer)
    stacked = np.stack(taps, axis=-2)  # (…, H', W', kh·kw, C)
    return stacked.reshape(*lead, -1, layer.fan_in)


def requantize(
    acc: np.ndarray,
    bound: int,
    bias: np.ndarray | None,
    bias_max: int,
    f_in: int,
    relu: bool,
    half: bool = True,
) -> np.ndarray:
    """``clip(floor((acc + b·2^F_in + 2^(s−1)) / 2^s), lo, A_MAX)`` of ``acc (m, R, F)`` with
    ``|acc| ≤ bound`` and ``bias`` shaped to broadcast against it: a new float64 array of
    integers.
    In float64 when every value stays below 2^53 (adding integers and scaling by 2^−s are then
    exact), else in int64. ``half=False``: ``acc`` already holds the bias and ``2^(s−1)``."""
    s = f_in + F_W + K - F_A
    if not half:
        out = acc * 2.0**-s if acc.dtype == np.float64 else (acc >> s).astype(np.float64)
        np.floor(out, out=out)
        np.clip(out, 0 if relu else -A_MAX, A_MAX, out=out)
        return out
    lo = 0 if relu else -A_MAX
    out = np.empty(acc.shape, dtype=np.float64)
    if acc.dtype == np.float64 and bound + (bias_max << f_in) + (1 << (s - 1)) < EXACT:
        offset: np.ndarray | float = 2.0 ** (s - 1)
        if bias is not None:
            offset = offset + bias * 2.0**f_in
        np.add(acc, offset, out=out)
        out *= 2.0**-s
        np.floor(out, out=out)
    else:
        whole = np.empty(acc.shape, dtype=np.int64)
        np.copyto(whole, acc, casting="unsafe")  # integer-valued floats: exact
        if bias is not None:
            whole += bias.astype(np.int64) << f_in
        whole += 1 << (s - 1)
        whole >>= s
        np.copyto(out, whole, casting="unsafe")  # |values| < 2^53 after the shift
    np.clip(out, lo, A_MAX, out=out)
    return out


def pool(h: np.ndarray, layer: PoolLayer) -> np.ndarray:
    """Integer max, or ``floor((2·sum + cnt) / (2·cnt))`` over the real cells of each window."""
    if layer.kind == "MaxPooling2D":
        low = -np.inf if h.dtype == np.float64 else np.iinfo(np.int64).min
        taps = _taps(_pad(h, layer, low), layer)
        out = taps[0].copy()
        for tap in taps[1:]:
            np.maximum(out, tap, out=out)
        return out
    taps = _taps(_pad(h, layer, 0), layer)
    total = taps[0].astype(np.int64)
    for tap in taps[1:]:
        total += tap.astype(np.int64)
    ones = np.ones((*layer.in_shape[:2], 1), dtype=np.int64)
    count = sum(_taps(_pad(ones, layer, 0), layer))
    return ((2 * total + count) // (2 * count)).astype(np.float64)


def correct_counts(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(m, N, classes) integer logits → correct samples per row: ``z_y > z_j`` for every
    j ≠ y (ties are wrong); one output: ``z > 0`` for y = 1, ``z < 0`` for y = 0."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        right = np.where(y[None, :] == 1, z > 0, z < 0)
        return right.sum(axis=1).astype(np.int64)
    true = np.take_along_axis(logits, y[None, :, None], axis=-1)[..., 0]
    hot = np.arange(logits.shape[-1])[None, :] == y[:, None]  # (N, classes)
    others = np.where(hot, -np.inf, logits)
    best = others[..., 0].copy()
    for j in range(1, logits.shape[-1]):  # a running maximum beats a reduction over ~10 classes
        np.maximum(best, others[..., j], out=best)
    return (true > best).sum(axis=1).astype(np.int64)


def margin_scores(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(m, N, classes) integer logits → per row ``Σ clip(z_y − max_{j≠y} z_j, 0, MARGIN_CAP)``:
    the true class's margin over the best other class, in the logits' fixed point, clipped (a
    wrong sample or a tie adds 0, a sample right by one logit unit or more adds MARGIN_CAP); one
    output: the margin is ``z`` for y = 1 and ``−z`` for y = 0. Exact: every logit is an integer
    with |z| ≤ A_MAX, so differences and the sum (≤ N·MARGIN_CAP < 2^53) are exact in float64."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        margin = np.where(y[None, :] == 1, z, -z)
    else:
        true = np.take_along_axis(logits, y[None, :, None], axis=-1)[..., 0]
        hot = np.arange(logits.shape[-1])[None, :] == y[:, None]  # (N, classes)
        others = np.where(hot, -np.inf, logits)
        best = others[..., 0].copy()
        for j in range(1, logits.shape[-1]):
            np.maximum(best, others[..., j], out=best)
        margin = true - best
    np.clip(margin, 0, MARGIN_CAP, out=margin)
    return margin.sum(axis=1).astype(np.int64)


class ExactEvaluator:
    """Scores coalition models of a fixed set of players on one validation set, exactly.
    Activations are float64 arrays holding integers (|h| ≤ A_MAX), so BLAS takes them as is."""

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
        h = validation.x.astype(np.float64)
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
        after = program.layers[self.start + 1 : self.start + 2]
        self.pool_first = next(
            (p for p in after if isinstance(p, PoolLayer) and p.kind == "MaxPooling2D"), None
        )
        # A max-pool with no padding right after: one GEMM per pool offset on just the rows it
        # reads, kept as a running maximum (a quarter-size working set for a 2×2 pool).
        self.pool_rows: list[np.ndarray] | None = None
        if self.pool_first is not None and self.pool_first.pads == (0, 0):
            grid = self.first_in.reshape(h.shape[0], *self.first.out_shape[:2], -1)
            self.pool_rows = [
                np.ascontiguousarray(tap).reshape(-1, self.first.fan_in)
                for tap in _taps(grid, self.pool_first)
            ]
        widest = max(
            [self.first.fan_in, *(_width(layer) for layer in program.layers[self.start :])]
        )
        self.batch = max(1, BATCH_ELEMENTS // (len(validation.y) * widest))

    def correct(self, coeffs: np.ndarray) -> np.ndarray:
        """``coeffs`` (m, players) non-negative ints, rows summing to 2^K → correct counts."""
        return self.scores(coeffs, "count")

    def scores(self, coeffs: np.ndarray, score: Score = "margin") -> np.ndarray:
        """``U`` of each row of ``coeffs`` (m, players; non-negative ints, rows summing to
        2^K): summed clipped margins (``"margin"``, the protocol's) or correct counts."""
        coeffs = np.asarray(coeffs, dtype=np.int64)
        if coeffs.ndim != 2 or coeffs.shape[1] != self.players:
            raise ValueError("one coefficient per player in each row")
        if (coeffs < 0).any() or (coeffs.sum(axis=1) != 2**K).any():
            raise ValueError("coefficients must be non-negative and sum to 2^K")
        out = np.empty(coeffs.shape[0], dtype=np.int64)
        for start in range(0, coeffs.shape[0], self.batch):
            z = self.logits(coeffs[start : start + self.batch])
            y = self.validation.y
            scored = margin_scores(z, y) if score == "margin" else correct_counts(z, y)
            out[start : start + self.batch] = scored
        return out

    def _mixed(self, c: np.ndarray, tensor: int) -> np.ndarray:
        """``W_S`` of one tensor for each row: (m, size) integer-valued float64, exact because
        ``Σ_j c_j·|Q_j| ≤ 2^K·W_MAX < 2^53``."""
        return np.matmul(c, self.stacked[tensor])

    def _bias(self, c: np.ndarray, layer: WeightLayer) -> tuple[np.ndarray | None, int]:
        if layer.bias is None:
            return None, 0
        return self._mixed(c, layer.bias), self.w_max[layer.bias] << K

    def _first_layer(self, coeffs: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, bool]:
        """The first weight layer's activations and whether they are *wide*: laid out
        (N, *positions, m·F), every coalition's channels side by side, as one GEMM of the
        shared input against all the coalitions' kernels leaves them (else (m, N, …))."""
        layer, m = self.first, coeffs.shape[0]
        units, n = layer.out_shape[-1], len(self.validation.y)
        bias, bias_max = self._bias(c, layer)
        if self.use_players:
            if self.per_player is None:
                kernels = self.stacked[layer.kernel].reshape(self.players, layer.fan_in, -1)
                side = kernels.transpose(1, 0, 2).reshape(layer.fan_in, -1)
                wmax = self.w_max[layer.kernel]
                prods, _ = exact_matmul(self.first_in, side, self.validation.input_max, wmax)
                by_player = prods.reshape(-1, self.players, units).transpose(1, 0, 2)
                by_player = by_player.astype(np.int64)
                # The bias term and the rounding half are linear in c too (Σ c_j = 2^K): fold
                # Q(b_j)·2^F_x + 2^(s−1−K) into each player's product, so c @ P holds them.
                if layer.bias is not None:
                    biases = self.stacked[layer.bias].astype(np.int64)  # (P, F)
                    by_player += (biases << F_X)[:, None, :]
                by_player += 1 << (F_X + F_W - F_A - 1)  # 2^(s−1−K), s = F_x + F_w + K − F_a
                self.per_player = by_player.reshape(self.players, -1)
            acc, bound = combine_players(coeffs, self.per_player)
            acc = acc.reshape(m, -1, units)
            h = requantize(acc, bound, None, 0, F_X, layer.relu, half=False)
            return h.reshape(m, n, *layer.out_shape), False
        kernels = self._mixed(c, layer.kernel).reshape(m, layer.fan_in, units)
        side = kernels.transpose(1, 0, 2).reshape(layer.fan_in, m * units)
        wmax = self.w_max[layer.kernel] << K
        if self.pool_rows is not None and self.pool_first is not None:
            acc, bound = exact_matmul(self.pool_rows[0], side, self.validation.input_max, wmax)
            for rows in self.pool_rows[1:]:
                np.maximum(
                    acc, exact_matmul(rows, side, self.validation.input_max, wmax)[0], out=acc
                )
            acc = acc.reshape(n, *self.pool_first.out_shape[:-1], m * units)
            bias = None if bias is None else bias.reshape(-1)
            return requantize(acc, bound, bias, bias_max, F_X, layer.relu), True
        acc, bound = exact_matmul(self.first_in, side, self.validation.input_max, wmax)
        acc = acc.reshape(n, *layer.out_shape[:-1], m * units)
        if self.pool_first is not None:
            # Rounding and clipping are non-decreasing and the bias is constant per channel,
            # so max-pooling the accumulators first gives the same values on 1/pool the cells.
            acc = pool(acc, self.pool_first)
        bias = None if bias is None else bias.reshape(-1)
        return requantize(acc, bound, bias, bias_max, F_X, layer.relu), True

    def logits(self, coeffs: np.ndarray) -> np.ndarray:
        """Integer logits (m, N, outputs) of one batch of coalitions (checked by ``correct``)."""
        c = coeffs.astype(np.float64)
        m = coeffs.shape[0]
        h, wide = self._first_layer(coeffs, c)
        skip = self.start + 1 + (self.pool_first is not None and wide)
        for layer in self.program.layers[skip:]:
            if wide and isinstance(layer, PoolLayer):
                h = pool(h, layer)  # per channel: the coalitions' channels pool alike
                continue
            if wide:
                h, wide = _narrow(h, m), False
            if isinstance(layer, WeightLayer):
                kernel = self._mixed(c, layer.kernel).reshape(m, layer.fan_in, -1)
                rows = patches(h, layer, 1)  # (m, N·positions, fan_in)
                acc, bound = exact_matmul(rows, kernel, A_MAX, self.w_max[layer.kernel] << K)
                bias, bias_max = self._bias(c, layer)
                bias = None if bias is None else bias[:, None, :]
                h = requantize(acc, bound, bias, bias_max, F_A, layer.relu)
                h = h.reshape(m, len(self.validation.y), *layer.out_shape)
            else:
                h = _run_fixed(layer, h, 2)
        if wide:
            h = _narrow(h, m)
        return h.reshape(m, h.shape[1], -1)


def _narrow(h: np.ndarray, m: int) -> np.ndarray:
    """Wide (N, *positions, m·F) → (m, N, *positions, F), C-ordered."""
    split = h.reshape(*h.shape[:-1], m, h.shape[-1] // m)
    return np.ascontiguousarray(np.moveaxis(split, -2, 0))


def _run_fixed(
    layer: WeightLayer | PoolLayer | ReshapeLayer, h: np.ndarray, lead: int
) -> np.ndarray:
    """A layer without weights on activations ``(*lead axes, *shape)``."""
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
