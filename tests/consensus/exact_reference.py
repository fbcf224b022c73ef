"""A slow reference of evaluator v1 in pure Python integers, written from DESIGN §5 alone.

It shares nothing with the fast path but the compiled layer descriptions: quantisation with
Python's ``round`` (half to even), coalition weights, padding, windows, rounding, clipping and
scoring are all spelled out loop by loop on Python ints. Tests compare the fast evaluator's
``U`` with it on small models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import product
from typing import Any

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
    ReshapeLayer,
    WeightLayer,
)


def q(value: float, bits: int) -> int:
    return round(float(value) * 2**bits)  # Python's round: half to even


def flat(array: np.ndarray, bits: int) -> list[int]:
    return [q(v, bits) for v in np.asarray(array, dtype=np.float64).reshape(-1).tolist()]


def _index(shape: Sequence[int], idx: Sequence[int]) -> int:
    pos = 0
    for size, i in zip(shape, idx, strict=True):
        pos = pos * size + i
    return pos


def _weight_layer(
    h: list[int], layer: WeightLayer, kernel: list[int], bias: list[int] | None, f_in: int
) -> list[int]:
    s = f_in + F_W + K - F_A
    lo = 0 if layer.relu else -A_MAX
    out_shape = layer.out_shape
    units = out_shape[-1]
    out: list[int] = []
    if layer.kind == "Dense":
        fan_in = layer.in_shape[-1]
        rows = len(h) // fan_in
        for r in range(rows):
            for o in range(units):
                acc = sum(h[r * fan_in + k] * kernel[k * units + o] for k in range(fan_in))
                out.append(acc + ((bias[o] if bias else 0) << f_in))
    else:
        (hin, win, cin), (kh, kw), (sr, sc), (pt, pl) = (
            layer.in_shape, layer.window, layer.strides, layer.pads,
        )  # fmt: skip
        for i, j, o in product(range(out_shape[0]), range(out_shape[1]), range(units)):
            acc = (bias[o] if bias else 0) << f_in
            for di, dj, c in product(range(kh), range(kw), range(cin)):
                r, col = i * sr - pt + di, j * sc - pl + dj
                if 0 <= r < hin and 0 <= col < win:
                    acc += (
                        h[_index((hin, win, cin), (r, col, c))]
                        * kernel[_index((kh, kw, cin, units), (di, dj, c, o))]
                    )
            out.append(acc)
    return [min(max((a + (1 << (s - 1))) >> s, lo), A_MAX) for a in out]


def _pool(h: list[int], layer: PoolLayer) -> list[int]:
    (hin, win, cin), (kh, kw), (sr, sc), (pt, pl) = (
        layer.in_shape, layer.window, layer.strides, layer.pads,
    )  # fmt: skip
    out = []
    for i, j, c in product(range(layer.out_shape[0]), range(layer.out_shape[1]), range(cin)):
        cells = [
            h[_index((hin, win, cin), (i * sr - pt + di, j * sc - pl + dj, c))]
            for di, dj in product(range(kh), range(kw))
            if 0 <= i * sr - pt + di < hin and 0 <= j * sc - pl + dj < win
        ]
        if layer.kind == "MaxPooling2D":
            out.append(max(cells))
        else:
            out.append((2 * sum(cells) + len(cells)) // (2 * len(cells)))
    return out


def logits(program: Program, x: list[int], params: list[list[int]]) -> list[int]:
    h, first = x, True
    for layer in program.layers:
        if isinstance(layer, ReshapeLayer):
            continue  # C-order values are unchanged by a reshape
        if isinstance(layer, PoolLayer):
            h = _pool(h, layer)
            continue
        bias = params[layer.bias] if layer.bias is not None else None
        h = _weight_layer(h, layer, params[layer.kernel], bias, F_X if first else F_A)
        first = False
    return h


def correct(z: list[int], label: int) -> bool:
    if len(z) == 1:
        return z[0] > 0 if label == 1 else z[0] < 0
    return all(z[label] > v for j, v in enumerate(z) if j != label)


def margin(z: list[int], label: int) -> int:
    """The true class's lead over the best other class, clipped to [0, MARGIN_CAP]."""
    if len(z) == 1:
        lead = z[0] if label == 1 else -z[0]
    else:
        lead = z[label] - max(v for j, v in enumerate(z) if j != label)
    return min(max(lead, 0), MARGIN_CAP)


def utility(
    program: Program,
    x: np.ndarray,
    y: np.ndarray,
    players: Sequence[Sequence[np.ndarray]],
    coefficients: Sequence[int],
    score: str = "count",
) -> int:
    """U of the model ``Σ_j c_j·Q(w_j)`` (coefficients summing to 2^K) on (x, y): correct
    samples (``"count"``) or summed clipped margins (``"margin"``, the protocol's U)."""
    per_sample = margin if score == "margin" else correct
    quantised = [[flat(t, F_W) for t in p] for p in players]
    params = [
        [sum(c * p[t][i] for c, p in zip(coefficients, quantised, strict=True)) for i in range(n)]
        for t, n in enumerate(len(v) for v in quantised[0])
    ]
    total = 0
    for sample, label in zip(x, y.tolist(), strict=True):
        total += per_sample(logits(program, flat(sample, F_X), params), label)
    return total


# --- Keras 3 architecture JSON without Keras --------------------------------------------------
def layer(kind: str, **config: Any) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": kind, "config": config}


def sequential(input_shape: Sequence[int], *layers: dict[str, Any]) -> str:
    first = layer("InputLayer", batch_shape=[None, *input_shape], dtype="float32")
    return json.dumps(
        {"module": "keras", "class_name": "Sequential", "config": {"layers": [first, *layers]}}
    )


def dense(units: int, activation: str = "linear", use_bias: bool = True) -> dict[str, Any]:
    return layer("Dense", units=units, activation=activation, use_bias=use_bias)


def conv(
    filters: int, kernel: int, strides: int = 1, padding: str = "valid", activation: str = "relu"
) -> dict[str, Any]:
    return layer(
        "Conv2D", filters=filters, kernel_size=[kernel, kernel], strides=[strides, strides],
        padding=padding, data_format="channels_last", dilation_rate=[1, 1], groups=1,
        activation=activation, use_bias=True,
    )  # fmt: skip


def pooling(kind: str, size: int, strides: int | None = None, padding: str = "valid") -> dict:
    return layer(
        kind, pool_size=[size, size], strides=None if strides is None else [strides, strides],
        padding=padding, data_format="channels_last",
    )  # fmt: skip
