"""Coalition utility of an FL round (DESIGN §5), fast.

``U(S)`` = the number of validation samples that ``model(S)`` classifies correctly, where
``model(S)`` is the FedAvg of the members' weights (sample-count weights renormalised inside
``S``) and ``model(∅)`` is the previous global model.

Speed comes from three things, none of which changes the numbers:

1. **No Keras in the loop.** A Sequential Keras architecture (Dense, Conv2D, Max/Average
   pooling, Flatten, Reshape, Dropout as identity, BatchNormalization, the usual activations) is
   compiled into a numpy forward pass straight from its JSON — TensorFlow is not even imported.
   Other architectures fall back to Keras (safe-mode deserialisation) and a compiled
   ``tf.function``.
2. **Aggregation as one matrix product.** Every coalition is a row of coefficients over the
   players (and the previous global model, for ∅); the averaged parameters of a whole batch of
   coalitions are ``coefficients @ stacked parameters``.
3. **The first layer is linear in its weights.** ``x @ W_S = Σ a_i (x @ W_i)``: each player's
   first-layer output on the validation set is computed once, and a coalition's is a weighted
   sum of those — the widest matrix product happens ``n`` times per game, not once per coalition.

All arithmetic is float64. ``CoalitionGame`` memoises every coalition it has evaluated, so the
verifier checking many shares of one SV task evaluates each coalition once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Weights = list[np.ndarray]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "softmax": _softmax,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "softplus": lambda z: np.logaddexp(0.0, z),
    "swish": lambda z: z / (1.0 + np.exp(-z)),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
}
#: Memory bound of one batch of coalitions (float64 activations), bytes.
BATCH_BYTES = 48 * 1024 * 1024


class UnsupportedModel(Exception):
    """The architecture has a layer the numpy compiler does not know (use the Keras fallback)."""


def fedavg(weights: Sequence[Weights], samples: Sequence[int]) -> Weights:
    """FedAvg: ``Σ s_i w_i / Σ s_i``, accumulated in float64, cast to float32 (DESIGN §4)."""
    if not weights or len(weights) != len(samples):
        raise ValueError("fedavg needs one sample count per client")
    total = float(sum(samples))
    out = []
    for tensors in zip(*weights, strict=True):
        acc = np.zeros(tensors[0].shape, dtype=np.float64)
        for t, s in zip(tensors, samples, strict=True):
            acc += t.astype(np.float64) * s
        out.append((acc / total).astype(np.float32))
    return out


def same_shapes(a: Weights, b: Weights) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b, strict=True))


def is_fedavg(global_model: Weights, weights: Sequence[Weights], samples: Sequence[int]) -> bool:
    """Is ``global_model`` the FedAvg of the updates, within float32 rounding tolerance?"""
    if not all(same_shapes(global_model, w) for w in weights):
        return False
    expected = fedavg(weights, samples)
    return all(
        np.allclose(g.astype(np.float64), e, rtol=1e-5, atol=1e-6)
        for g, e in zip(global_model, expected, strict=True)
    )


# --- the numpy compiler ---------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One compiled layer: what it does, and which of the model's weight tensors it owns."""

    kind: str
    params: tuple[int, ...]
    config: dict[str, Any] = field(default_factory=dict)


SHAPE_ONLY = {"InputLayer", "Flatten", "Reshape", "Dropout"}


def compile_sequential(architecture_json: str) -> list[Layer]:
    """Compile a Keras Sequential JSON into layers; ``UnsupportedModel`` if it cannot."""
    try:
        spec = json.loads(architecture_json)
    except json.JSONDecodeError as exc:
        raise UnsupportedModel(f"architecture is not JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("class_name") != "Sequential":
        raise UnsupportedModel("only Sequential architectures compile to numpy")
    layers_cfg = spec.get("config", {}).get("layers", [])
    out: list[Layer] = []
    index = 0
    for entry in layers_cfg:
        kind, cfg = entry.get("class_name"), entry.get("config", {})

        def take(count: int) -> tuple[int, ...]:
            nonlocal index
            got = tuple(range(index, index + count))
            index += count
            return got

        if kind in ("InputLayer", "Flatten", "Dropout"):
            out.append(Layer(kind, ()))
        elif kind == "Reshape":
            out.append(Layer(kind, (), {"shape": tuple(cfg["target_shape"])}))
        elif kind == "Activation":
            out.append(Layer(kind, (), {"activation": _activation(cfg.get("activation"))}))
        elif kind == "Dense":
            bias = bool(cfg.get("use_bias", True))
            act = _activation(cfg.get("activation"))
            out.append(Layer(kind, take(2 if bias else 1), {"activation": act, "bias": bias}))
        elif kind == "Conv2D":
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise UnsupportedModel("Conv2D must be channels_last")
            if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("groups", 1) != 1:
                raise UnsupportedModel("dilated or grouped Conv2D")
            bias = bool(cfg.get("use_bias", True))
            out.append(
                Layer(
                    kind,
                    take(2 if bias else 1),
                    {
                        "activation": _activation(cfg.get("activation")),
                        "bias": bias,
                        "kernel": tuple(cfg["kernel_size"]),
                        "strides": tuple(cfg.get("strides", (1, 1))),
                        "padding": cfg.get("padding", "valid"),
                    },
                )
            )
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
                raise UnsupportedModel("pooling must be channels_last")
            pool = tuple(cfg.get("pool_size", (2, 2)))
            strides = tuple(cfg.get("strides") or pool)
            out.append(
                Layer(
                    kind,
                    (),
                    {"pool": pool, "strides": strides, "padding": cfg.get("padding", "valid")},
                )
            )
        elif kind == "BatchNormalization":
            if cfg.get("axis", -1) not in (-1, [-1]):
                raise UnsupportedModel("BatchNormalization on a non-last axis")
            scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
            out.append(
                Layer(
                    kind,
                    take(int(scale) + int(center) + 2),
                    {"scale": scale, "center": center, "epsilon": float(cfg.get("epsilon", 1e-3))},
                )
            )
        else:
            raise UnsupportedModel(f"layer {kind!r} has no numpy implementation")
    return out


def _activation(name: Any) -> str:
    if name is None:
        return "linear"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise UnsupportedModel(f"activation {name!r} has no numpy implementation")
    return name


def _pad_same(h: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """Keras 'same' padding on axes -3, -2 (height, width) of a (..., H, W, C) array."""
    pads = []
    for size, k, s in zip(h.shape[-3:-1], kernel, strides, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    width = [(0, 0)] * (h.ndim - 3) + pads + [(0, 0)]
    return np.pad(h, width)


def _windows(h: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """(..., H, W, C) → (..., H', W', C, kh, kw) sliding windows with strides."""
    win = np.lib.stride_tricks.sliding_window_view(h, kernel, axis=(-3, -2))
    return win[..., :: strides[0], :: strides[1], :, :, :]


def _conv_patches(h: np.ndarray, layer: Layer) -> np.ndarray:
    cfg = layer.config
    if cfg["padding"] == "same":
        h = _pad_same(h, cfg["kernel"], cfg["strides"])
    return _windows(h, cfg["kernel"], cfg["strides"])


def _linear(layer: Layer, h: np.ndarray, kernel: np.ndarray, shared_input: bool) -> np.ndarray:
    """The weight-linear part of Dense/Conv2D: ``h`` shared (N, …) or per coalition (m, N, …);
    ``kernel`` per coalition (m, …)."""
    if layer.kind == "Dense":
        if shared_input:
            return np.einsum("ni,mio->mno", h, kernel, optimize=True)
        return np.matmul(h, kernel)
    patches = _conv_patches(h, layer)  # (…, H', W', C, kh, kw)
    if shared_input:
        return np.einsum("nhwcij,mijcf->mnhwf", patches, kernel, optimize=True)
    return np.einsum("mnhwcij,mijcf->mnhwf", patches, kernel, optimize=True)


def _apply(layer: Layer, h: np.ndarray, p: list[np.ndarray]) -> np.ndarray:
    """One layer on a batch of coalitions: ``h`` is (m, N, …), params are (m, …)."""
    kind, cfg = layer.kind, layer.config
    if kind in ("InputLayer", "Dropout"):
        return h
    if kind == "Flatten":
        return h.reshape(h.shape[0], h.shape[1], -1)
    if kind == "Reshape":
        return h.reshape(h.shape[0], h.shape[1], *cfg["shape"])
    if kind == "Activation":
        return ACTIVATIONS[cfg["activation"]](h)
    if kind in ("Dense", "Conv2D"):
        z = _linear(layer, h, p[0], shared_input=False)
        if cfg["bias"]:
            z = z + p[1].reshape(p[1].shape[0], *([1] * (z.ndim - 2)), p[1].shape[-1])
        return ACTIVATIONS[cfg["activation"]](z)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        pool, strides = cfg["pool"], cfg["strides"]
        is_max = kind == "MaxPooling2D"
        if cfg["padding"] != "same":
            win = _windows(h, pool, strides)
            return win.max(axis=(-2, -1)) if is_max else win.mean(axis=(-2, -1))
        # 'same': windows cover only real cells (max ignores padding, mean divides by real cells)
        valid = _windows(_pad_same(np.ones((1, 1, *h.shape[2:])), pool, strides), pool, strides)
        win = _windows(_pad_same(h, pool, strides), pool, strides)
        if is_max:
            return np.where(valid > 0, win, -np.inf).max(axis=(-2, -1))
        return win.sum(axis=(-2, -1)) / valid.sum(axis=(-2, -1))
    if kind == "BatchNormalization":
        it = iter(p)
        gamma = next(it) if cfg["scale"] else None
        beta = next(it) if cfg["center"] else None
        mean, var = next(it), next(it)

        def bc(v: np.ndarray) -> np.ndarray:
            return v.reshape(v.shape[0], *([1] * (h.ndim - 2)), v.shape[-1])

        out = (h - bc(mean)) / np.sqrt(bc(var) + cfg["epsilon"])
        if gamma is not None:
            out = out * bc(gamma)
        if beta is not None:
            out = out + bc(beta)
        return out
    raise UnsupportedModel(kind)


class NumpyEvaluator:
    """Counts correct predictions of FedAvg mixtures of a fixed set of models, in batches."""

    def __init__(
        self, layers: list[Layer], models: Sequence[Weights], x: np.ndarray, y: np.ndarray
    ):
        self.layers = layers
        self.x = x.astype(np.float64)
        self.y = y.astype(np.int64)
        # stacked[j] has shape (players, *shape of weight tensor j)
        self.stacked = [
            np.stack([m[j] for m in models]).astype(np.float64) for j in range(len(models[0]))
        ]
        # Precompute the first weight-linear layer's output per model, when its input is x itself.
        self.first = None
        for pos, layer in enumerate(layers):
            if layer.kind in ("Dense", "Conv2D"):
                h = self.x
                for prior in layers[:pos]:
                    h = _apply(prior, h[None], [])[0] if prior.kind != "InputLayer" else h
                self.first = pos
                self.first_out = _linear(layer, h, self.stacked[layer.params[0]], shared_input=True)
                break
            if layer.kind not in SHAPE_ONLY:
                break
        self.width = max(
            (self.first_out[0].size if self.first is not None else self.x.size),
            self.x.size,
        )

    def batch_size(self) -> int:
        per = max(self.width, 1) * 8 * 4
        return max(1, min(1024, BATCH_BYTES // per))

    def correct(self, coeffs: np.ndarray) -> np.ndarray:
        """``coeffs`` (m, players) rows summing to 1 → correct-prediction counts (m,)."""
        out = np.empty(coeffs.shape[0], dtype=np.int64)
        step = self.batch_size()
        for start in range(0, coeffs.shape[0], step):
            a = coeffs[start : start + step]
            out[start : start + step] = self._correct_batch(a)
        return out

    def _correct_batch(self, a: np.ndarray) -> np.ndarray:
        params = [np.tensordot(a, s, axes=(1, 0)) for s in self.stacked]
        m = a.shape[0]
        h = np.broadcast_to(self.x, (m, *self.x.shape))
        start = 0
        if self.first is not None:
            layer = self.layers[self.first]
            z = np.tensordot(a, self.first_out, axes=(1, 0))
            if layer.config["bias"]:
                b = params[layer.params[1]]
                z = z + b.reshape(m, *([1] * (z.ndim - 2)), b.shape[-1])
            h = ACTIVATIONS[layer.config["activation"]](z)
            start = self.first + 1
        for layer in self.layers[start:]:
            h = _apply(layer, h, [params[i] for i in layer.params])
        predictions = h.reshape(m, h.shape[1], -1).argmax(axis=-1)
        return (predictions == self.y[None, :]).sum(axis=1)


class KerasEvaluator:
    """Fallback for architectures the numpy compiler does not know: Keras in safe mode and a
    compiled ``tf.function``, one coalition at a time. Slow, but any built-in layer works."""

    def __init__(
        self, architecture_json: str, models: Sequence[Weights], x: np.ndarray, y: np.ndarray
    ):
        import keras
        import tensorflow as tf

        self.model = keras.models.model_from_json(architecture_json)
        self.models = [[w.astype(np.float64) for w in m] for m in models]
        self.x = tf.constant(x.astype(np.float32))
        self.y = y.astype(np.int64)
        self.call = tf.function(lambda inputs: self.model(inputs, training=False))

    def correct(self, coeffs: np.ndarray) -> np.ndarray:
        out = np.empty(coeffs.shape[0], dtype=np.int64)
        for row, a in enumerate(coeffs):
            mixed = [
                sum(c * m[j] for c, m in zip(a, self.models, strict=True) if c)
                for j in range(len(self.models[0]))
            ]
            self.model.set_weights([np.asarray(w, dtype=np.float32) for w in mixed])
            pred = np.asarray(self.call(self.x)).reshape(len(self.y), -1).argmax(axis=-1)
            out[row] = int((pred == self.y).sum())
        return out


def make_evaluator(
    architecture_json: str, models: Sequence[Weights], x: np.ndarray, y: np.ndarray
) -> NumpyEvaluator | KerasEvaluator:
    try:
        return NumpyEvaluator(compile_sequential(architecture_json), models, x, y)
    except UnsupportedModel:
        return KerasEvaluator(architecture_json, models, x, y)


class CoalitionGame:
    """The FL game of one round: players are the clients; ``utility(mask)`` is ``U(S)``.

    Every coalition is evaluated at most once (memoised); ``evaluations`` counts them.
    """

    def __init__(
        self,
        architecture_json: str,
        previous: Weights,
        clients: Sequence[Weights],
        samples: Sequence[int],
        x_val: np.ndarray,
        y_val: np.ndarray,
    ) -> None:
        if len(clients) != len(samples) or not clients:
            raise ValueError("one sample count per client, at least one client")
        self.n = len(clients)
        self.samples = np.asarray(samples, dtype=np.float64)
        # Player index n is the previous global model, model(∅).
        self.evaluator = make_evaluator(architecture_json, [*clients, previous], x_val, y_val)
        self.memo: dict[int, int] = {}
        # A node verifies shares and makes its own in worker threads: one evaluation at a time.
        self._lock = threading.Lock()

    @property
    def evaluations(self) -> int:
        return len(self.memo)

    def coefficients(self, masks: Sequence[int]) -> np.ndarray:
        bits = (
            np.asarray(masks, dtype=np.uint64)[:, None] >> np.arange(self.n, dtype=np.uint64)
        ) & 1
        weights = bits.astype(np.float64) * self.samples[None, :]
        totals = weights.sum(axis=1, keepdims=True)
        empty = totals[:, 0] == 0
        coeffs = np.zeros((len(masks), self.n + 1))
        coeffs[~empty, : self.n] = weights[~empty] / totals[~empty]
        coeffs[empty, self.n] = 1.0
        return coeffs

    def utilities(self, masks: Sequence[int]) -> list[int]:
        """U of each coalition, evaluating the ones not seen yet in batches."""
        with self._lock:
            todo = sorted({m for m in masks if m not in self.memo})
            if todo:
                counts = self.evaluator.correct(self.coefficients(todo))
                self.memo.update(zip(todo, (int(c) for c in counts), strict=True))
            return [self.memo[m] for m in masks]

    def utility(self, mask: int) -> int:
        return self.utilities([mask])[0]
