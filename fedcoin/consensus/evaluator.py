"""Evaluator v1 (DESIGN §5): a Keras Sequential model compiled into an integer program.

Every validator must score a coalition's model on the validation set with the same result,
bit for bit, on any CPU. So consensus never runs Keras or floats for a score: the task's model
bundle (Keras architecture JSON + initial weights) is compiled here, without TensorFlow, into a
list of integer layers, and weights and inputs are quantised to fixed point:

- inputs ``x_q = rint(x·2^F_x)``, weights ``Q(w) = rint(w·2^F_w)`` (half to even), activations
  at scale ``2^F_a``; ``|x_q| ≤ X_MAX``, ``|Q(w)| ≤ W_MAX``, ``|h| ≤ A_MAX``;
- a weight layer (Dense, Conv2D) with input scale ``F_in`` and coalition weights at scale
  ``2^(F_w+K)`` computes ``acc = h·W_S + b_S·2^F_in`` exactly and rounds it back with
  ``h' = clip(floor((acc + 2^(s−1)) / 2^s), lo, A_MAX)``, ``s = F_in + F_w + K − F_a``;
- the accumulator bound ``B = fan_in·I_max·W_MAX·2^K + W_MAX·2^K·2^F_in + 2^(s−1) < 2^62`` is
  checked per weight layer, so int64 never overflows.

Supported: InputLayer, Dense, Conv2D (channels_last, valid/same, any strides, dilation 1),
MaxPooling2D, AveragePooling2D, Flatten, Reshape, Dropout (identity); relu and linear
activations; softmax (ignored) or a single sigmoid output on the last layer only. Anything else
is rejected with a named error. Quantisation and bounds are in ``quantize.py``, the integer
forward pass in ``inference.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import prod
from typing import Any, Literal

import numpy as np

from fedcoin.errors import (
    BadLayerConfig,
    ModelTooLarge,
    UnsupportedActivation,
    UnsupportedArchitecture,
    UnsupportedLayer,
)

F_X = 8
"""Fraction bits of the quantised inputs."""
F_W = 16
"""Fraction bits of the quantised weights."""
K = 12
"""Fraction bits of the round weights λ_i = L_i / 2^K (coalition weights are integers c_j)."""
F_A = 8
"""Fraction bits of the activations between layers."""
X_MAX = 2**15 - 1
"""Largest |x_q|."""
A_MAX = 2**15 - 1
"""Activations are clipped to A_MAX (and to −A_MAX below for linear layers)."""
W_MAX = 2**19 - 1
"""Largest |Q(w)|."""
MARGIN_CAP = 2**F_A
"""Most one validation sample adds to ``U``: its true class's margin over the best other class,
``z_y − max_{j≠y} z_j`` in the logits' fixed point (scale 2^F_a), clipped to [0, MARGIN_CAP],
i.e. to one logit unit. ``U ≤ N·MARGIN_CAP`` (< 2^32 for N ≤ MAX_VALIDATION_SAMPLES)."""
Score = Literal["margin", "count"]
"""How ``U`` scores a model: ``"margin"`` (the protocol's score, summed clipped margins) or
``"count"`` (correctly classified samples: evaluator v1's first score, kept for comparison)."""
ACC_LIMIT = 2**62
"""Every weight layer's accumulator bound must stay below this."""
MAX_LAYERS = 64
"""At most this many layers in a model."""
MAX_WIDTH = 2**20
"""At most this many activation values per sample after any layer."""
MAX_PARAMS = 2**24
"""At most this many weights in a model."""
MAX_WINDOW = 256
"""At most this many cells (kh·kw) in a Conv2D or pooling window."""

HIDDEN_ACTIVATIONS = ("relu", "linear")
SHAPE_LAYERS = ("InputLayer", "Flatten", "Reshape", "Dropout")


@dataclass(frozen=True, slots=True)
class WeightLayer:
    """Dense or Conv2D: ``acc = h·W + b·2^F_in``, rounded back to activations."""

    kind: str
    """``"Dense"`` or ``"Conv2D"``."""
    kernel: int
    """Index of the kernel tensor among the model's weights."""
    bias: int | None
    """Index of the bias tensor, or None without a bias."""
    relu: bool
    """True: clip below at 0; False (linear, softmax, sigmoid): clip below at −A_MAX."""
    in_shape: tuple[int, ...]
    """Input shape of one sample."""
    out_shape: tuple[int, ...]
    """Output shape of one sample."""
    window: tuple[int, int] = (1, 1)
    """Conv2D kernel size."""
    strides: tuple[int, int] = (1, 1)
    """Conv2D strides."""
    pads: tuple[int, int] = (0, 0)
    """Conv2D zero padding before the first row and column ('same'); valid: (0, 0)."""

    @property
    def fan_in(self) -> int:
        """Products summed into one accumulator."""
        if self.kind == "Dense":
            return self.in_shape[-1]
        return self.window[0] * self.window[1] * self.in_shape[-1]


@dataclass(frozen=True, slots=True)
class PoolLayer:
    """MaxPooling2D (integer max) or AveragePooling2D (mean rounded half up) over real cells."""

    kind: str
    """``"MaxPooling2D"`` or ``"AveragePooling2D"``."""
    in_shape: tuple[int, ...]
    """Input shape (H, W, C)."""
    out_shape: tuple[int, ...]
    """Output shape (H', W', C)."""
    window: tuple[int, int]
    """Pool size."""
    strides: tuple[int, int]
    """Strides."""
    pads: tuple[int, int]
    """Cells of padding before the first row and column ('same'); padding is never counted."""


@dataclass(frozen=True, slots=True)
class ReshapeLayer:
    """Flatten or Reshape: the same values in C order, a new shape."""

    out_shape: tuple[int, ...]
    """Output shape of one sample."""


Layer = WeightLayer | PoolLayer | ReshapeLayer


@dataclass(frozen=True, slots=True)
class Program:
    """A compiled model: integer layers and the shapes of the weight tensors they use."""

    input_shape: tuple[int, ...]
    """Shape of one validation sample."""
    layers: tuple[Layer, ...]
    """The layers in order (InputLayer and Dropout compile to nothing)."""
    tensor_shapes: tuple[tuple[int, ...], ...]
    """Shape of each weight tensor, in Keras' ``get_weights`` order."""
    outputs: int
    """Number of logits; 1 means a single (sigmoid or linear) output scored by its sign."""

    @property
    def weight_layers(self) -> tuple[WeightLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, WeightLayer))

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample of one forward pass (the unit of work in §6)."""
        return sum(prod(w.out_shape) * w.fan_in for w in self.weight_layers)


@dataclass(frozen=True, slots=True)
class Validation:
    """A quantised validation set."""

    x: np.ndarray
    """``x_q``, int64, shape (N, *input_shape)."""
    y: np.ndarray
    """Labels, int64, shape (N,)."""
    input_max: int
    """``I_max`` of the first weight layer: max |x_q|."""


QuantizedModel = tuple[np.ndarray, ...]
"""``Q(w)`` of each weight tensor, int64."""


# --- compiling the architecture --------------------------------------------------------------
def _pair(cfg: dict[str, Any], key: str, default: Any, layer: str) -> tuple[int, int]:
    value = cfg.get(key, default)
    if _is_int(value):
        value = [value, value]
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(map(_is_int, value)):
        raise BadLayerConfig(layer=layer, field=key, value=value)
    if min(value) < 1:
        raise BadLayerConfig(layer=layer, field=key, value=value)
    return int(value[0]), int(value[1])


def _is_int(value: Any) -> bool:
    return type(value) is int


def _positive(cfg: dict[str, Any], key: str, layer: str) -> int:
    value = cfg.get(key)
    if type(value) is not int or value < 1:
        raise BadLayerConfig(layer=layer, field=key, value=value)
    return value


def _padding(cfg: dict[str, Any], layer: str) -> str:
    value = cfg.get("padding", "valid")
    if value not in ("valid", "same"):
        raise BadLayerConfig(layer=layer, field="padding", value=value)
    return str(value)


def _channels_last(cfg: dict[str, Any], layer: str) -> None:
    if cfg.get("data_format") not in (None, "channels_last"):
        raise BadLayerConfig(layer=layer, field="data_format", value=cfg.get("data_format"))


def _geometry(
    in_shape: tuple[int, ...], window: tuple[int, int], strides: tuple[int, int], padding: str,
    layer: str,
) -> tuple[tuple[int, int], tuple[int, int]]:  # fmt: skip
    """Output (H', W') and padding before (top, left), as Keras computes them."""
    if len(in_shape) != 3:
        raise BadLayerConfig(layer=layer, field="input rank", value=len(in_shape))
    if window[0] * window[1] > MAX_WINDOW:
        raise ModelTooLarge(layer=layer, window=window, limit=MAX_WINDOW)
    out, pads = [], []
    for size, k, s in zip(in_shape[:2], window, strides, strict=True):
        if k > size:  # also with 'same': a window wider than its input reads mostly padding
            raise BadLayerConfig(layer=layer, field="window larger than input", value=size)
        if padding == "same":
            n = -(-size // s)
            pads.append(max((n - 1) * s + k - size, 0) // 2)
        else:
            n = (size - k) // s + 1 if size >= k else 0
            pads.append(0)
        if n < 1:
            raise BadLayerConfig(layer=layer, field="window larger than input", value=size)
        out.append(n)
    return (out[0], out[1]), (pads[0], pads[1])


def _input_shape(spec_cfg: dict[str, Any], entries: list[Any]) -> tuple[int, ...]:
    candidates: list[Any] = []
    first = entries[0].get("config") if entries and isinstance(entries[0], dict) else None
    if isinstance(first, dict):
        candidates += [first.get("batch_shape"), first.get("batch_input_shape")]
    candidates.append(spec_cfg.get("build_input_shape"))
    for shape in candidates:
        if shape is None:
            continue
        if not isinstance(shape, list) or len(shape) < 2 or shape[0] is not None:
            raise UnsupportedArchitecture(field="input shape", value=shape)
        dims = shape[1:]
        if not all(_is_int(d) and d >= 1 for d in dims) or prod(dims) > MAX_WIDTH:
            raise UnsupportedArchitecture(field="input shape", value=shape)
        return tuple(dims)
    raise UnsupportedArchitecture(field="input shape", value=None)


def _activation(cfg: dict[str, Any], layer: str, last: bool, units: int) -> bool:
    """Is the activation relu (else linear-like)? Rejects what v1 does not support."""
    name = cfg.get("activation", "linear")
    if name is None or name in ("linear", "relu"):
        return bool(name == "relu")
    if last and (name == "softmax" or (name == "sigmoid" and units == 1)):
        return False
    raise UnsupportedActivation(layer=layer, activation=name, last=last)


def compile_architecture(architecture_json: str) -> Program:
    """Compile a Keras Sequential architecture JSON; a named ``EvaluatorError`` if v1 can't."""
    try:
        spec = json.loads(architecture_json)
    except (ValueError, RecursionError):
        raise UnsupportedArchitecture(field="json", value="not JSON") from None
    if not isinstance(spec, dict) or spec.get("class_name") != "Sequential":
        raise UnsupportedArchitecture(field="class_name", value="not Sequential")
    spec_cfg = spec.get("config")
    entries = spec_cfg.get("layers") if isinstance(spec_cfg, dict) else None
    if not isinstance(spec_cfg, dict) or not isinstance(entries, list) or not entries:
        raise UnsupportedArchitecture(field="layers", value=None)
    if len(entries) > MAX_LAYERS:
        raise ModelTooLarge(layers=len(entries), limit=MAX_LAYERS)
    shape = input_shape = _input_shape(spec_cfg, entries)
    layers: list[Layer] = []
    tensors: list[tuple[int, ...]] = []
    for position, entry in enumerate(entries):
        kind = entry.get("class_name") if isinstance(entry, dict) else None
        cfg = entry.get("config", {}) if isinstance(entry, dict) else None
        if not isinstance(kind, str) or not isinstance(cfg, dict):
            raise UnsupportedLayer(position=position, layer=kind)
        last = position == len(entries) - 1
        if kind == "InputLayer" and position != 0:
            raise UnsupportedLayer(position=position, layer=kind)
        if kind in ("InputLayer", "Dropout"):
            continue
        if kind == "Flatten":
            _channels_last(cfg, kind)
            shape = (prod(shape),)
            layers.append(ReshapeLayer(shape))
        elif kind == "Reshape":
            shape = _reshape(shape, cfg.get("target_shape"))
            layers.append(ReshapeLayer(shape))
        elif kind == "Dense":
            units = _positive(cfg, "units", kind)
            relu = _activation(cfg, kind, last, units)
            bias = cfg.get("use_bias", True)
            if type(bias) is not bool:
                raise BadLayerConfig(layer=kind, field="use_bias", value=bias)
            out = (*shape[:-1], units)
            tensors.append((shape[-1], units))
            b = None
            if bias:
                b = len(tensors)
                tensors.append((units,))
            layers.append(WeightLayer(kind, len(tensors) - 1 - int(bias), b, relu, shape, out))
            shape = out
        elif kind == "Conv2D":
            layers.append(_conv(cfg, shape, last, tensors))
            shape = layers[-1].out_shape
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            _channels_last(cfg, kind)
            window = _pair(cfg, "pool_size", 2, kind)
            strides = window if cfg.get("strides") is None else _pair(cfg, "strides", 1, kind)
            hw, pads = _geometry(shape, window, strides, _padding(cfg, kind), kind)
            out = (*hw, shape[2])
            layers.append(PoolLayer(kind, shape, out, window, strides, pads))
            shape = out
        else:
            raise UnsupportedLayer(position=position, layer=kind)
        if prod(shape) > MAX_WIDTH:
            raise ModelTooLarge(position=position, width=prod(shape), limit=MAX_WIDTH)
    if sum(prod(t) for t in tensors) > MAX_PARAMS:
        raise ModelTooLarge(params=sum(prod(t) for t in tensors), limit=MAX_PARAMS)
    if not tensors or len(shape) != 1:
        raise UnsupportedArchitecture(field="output", value=shape)
    return Program(input_shape, tuple(layers), tuple(tensors), shape[0])


def _conv(
    cfg: dict[str, Any], shape: tuple[int, ...], last: bool, tensors: list[tuple[int, ...]]
) -> WeightLayer:
    kind = "Conv2D"
    _channels_last(cfg, kind)
    if _pair(cfg, "dilation_rate", 1, kind) != (1, 1):
        raise BadLayerConfig(layer=kind, field="dilation_rate", value=cfg.get("dilation_rate"))
    if cfg.get("groups", 1) != 1:
        raise BadLayerConfig(layer=kind, field="groups", value=cfg.get("groups"))
    filters = _positive(cfg, "filters", kind)
    relu = _activation(cfg, kind, last, filters)
    window = _pair(cfg, "kernel_size", None, kind)
    strides = _pair(cfg, "strides", 1, kind)
    hw, pads = _geometry(shape, window, strides, _padding(cfg, kind), kind)
    bias = cfg.get("use_bias", True)
    if type(bias) is not bool:
        raise BadLayerConfig(layer=kind, field="use_bias", value=bias)
    tensors.append((*window, shape[2], filters))
    kernel = len(tensors) - 1
    if bias:
        tensors.append((filters,))
    out = (*hw, filters)
    return WeightLayer(
        kind, kernel, kernel + 1 if bias else None, relu, shape, out, window, strides, pads
    )


def _reshape(shape: tuple[int, ...], target: Any) -> tuple[int, ...]:
    if not isinstance(target, list | tuple) or not target or len(target) > 8:
        raise BadLayerConfig(layer="Reshape", field="target_shape", value=target)
    if not all(_is_int(d) and (d >= 1 or d == -1) for d in target) or list(target).count(-1) > 1:
        raise BadLayerConfig(layer="Reshape", field="target_shape", value=target)
    known = prod(d for d in target if d != -1)
    size = prod(shape)
    if size % known or (-1 not in target and known != size):
        raise BadLayerConfig(layer="Reshape", field="target_shape", value=target)
    return tuple(size // known if d == -1 else d for d in target)
