"""Evaluator v1 quantisation and bounds (DESIGN §5): what turns a bundle's float32 weights
and a validation set into the integers the exact forward pass runs on, and the checks a bundle,
an update or a validation set must pass at ``PublishTask`` and ``SubmitRound``.

``Q(w) = rint(w·2^F_w)`` and ``x_q = rint(x·2^F_x)``, half to even, computed in float64 (exact
for float32 inputs); the per-layer accumulator bound ``B < 2^62`` keeps int64 from overflowing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcoin.consensus.evaluator import (
    A_MAX,
    ACC_LIMIT,
    F_A,
    F_W,
    F_X,
    W_MAX,
    X_MAX,
    K,
    Program,
    QuantizedModel,
    Validation,
    WeightLayer,
    compile_architecture,
)
from fedcoin.errors import (
    AccumulatorBoundExceeded,
    BadValidationSet,
    InputOutOfRange,
    WeightOutOfRange,
    WeightShapeMismatch,
)


def quantize_weights(program: Program, weights: Sequence[np.ndarray]) -> QuantizedModel:
    """``Q(w) = rint(w·2^F_w)`` of every tensor, checking shapes, dtype and range."""
    if len(weights) != len(program.tensor_shapes):
        raise WeightShapeMismatch(tensors=len(weights), expected=len(program.tensor_shapes))
    out = []
    for index, (w, shape) in enumerate(zip(weights, program.tensor_shapes, strict=True)):
        if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.shape != shape:
            got = (getattr(w, "dtype", None), getattr(w, "shape", None))
            raise WeightShapeMismatch(tensor=index, got=got, expected=("float32", shape))
        if not np.isfinite(w).all():
            raise WeightOutOfRange(tensor=index, value="NaN or Inf")
        q = np.rint(w.astype(np.float64) * 2.0**F_W)
        if q.size and np.abs(q).max() > W_MAX:
            raise WeightOutOfRange(tensor=index, max_abs=int(np.abs(q).max()), limit=W_MAX)
        out.append(q.astype(np.int64))
    return tuple(out)


def accumulator_bound(layer: WeightLayer, input_max: int, f_in: int) -> int:
    """``B`` of a weight layer: no partial sum of its accumulator can reach it."""
    s: int = f_in + F_W + K - F_A
    return (layer.fan_in * input_max * W_MAX << K) + (W_MAX << (K + f_in)) + (1 << (s - 1))


def check_bounds(program: Program, input_max: int) -> None:
    """``B < 2^62`` for every weight layer (``I_max`` = input_max for the first, A_MAX after)."""
    for index, layer in enumerate(program.weight_layers):
        first = index == 0
        bound = accumulator_bound(layer, input_max if first else A_MAX, F_X if first else F_A)
        if bound >= ACC_LIMIT:
            raise AccumulatorBoundExceeded(layer=index, kind=layer.kind, fan_in=layer.fan_in)


def compile_bundle(architecture_json: str, weights: Sequence[np.ndarray]) -> Program:
    """Compile a model bundle: the architecture, its initial weights, the layer bounds after
    the first (the first layer's bound depends on the validation set: ``quantize_validation``)."""
    program = compile_architecture(architecture_json)
    quantize_weights(program, weights)
    check_bounds(program, 0)
    return program


def quantize_validation(program: Program, x: np.ndarray, y: np.ndarray) -> Validation:
    """``x_q = rint(x·2^F_x)`` with its checks, the labels, and the first layer's bound."""
    n = x.shape[0] if isinstance(x, np.ndarray) and x.ndim >= 1 else 0
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or n < 1:
        raise BadValidationSet(field="x", expected=("float32", program.input_shape))
    if x.shape[1:] != program.input_shape:
        raise BadValidationSet(field="x shape", got=x.shape, expected=program.input_shape)
    if not isinstance(y, np.ndarray) or y.shape != (n,) or y.dtype.kind not in "iu":
        raise BadValidationSet(field="y", expected=("integer labels", n))
    classes = 2 if program.outputs == 1 else program.outputs
    if y.min() < 0 or y.max() >= classes:
        raise BadValidationSet(field="labels", min=int(y.min()), max=int(y.max()), classes=classes)
    if not np.isfinite(x).all():
        raise InputOutOfRange(value="NaN or Inf")
    xq = np.rint(x.astype(np.float64) * 2.0**F_X)
    input_max = int(np.abs(xq).max())
    if input_max > X_MAX:
        raise InputOutOfRange(max_abs=input_max, limit=X_MAX)
    check_bounds(program, input_max)
    return Validation(xq.astype(np.int64), y.astype(np.int64), input_max)
