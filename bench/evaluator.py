"""Exact evaluator v1 (issue 11): coalition evaluations per second, as ratios in one process.

For each model (digits MLP 64-32-10, and a small CNN: Reshape, Conv2D 8×3×3 same + relu,
MaxPooling2D 2, Flatten, Dense 10), on an FL round of n = 10 clients trained from a shared
global model with the digits validation split (360 samples):

- ours: ``NullPlayerGame.utilities`` on all 1 024 coalitions (exact integers, batched);
- Keras: ``set_weights`` + ``model.evaluate`` per coalition (the original FedCoin loop);
- float: one float64 numpy forward pass + argmax of one model, the cheapest possible float
  evaluation with no aggregation at all.

Targets: ours ≥ 100× the Keras loop and ≥ 0.5× the float pass.

    python bench/evaluator.py [--repeat 3] [--keras-coalitions 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedcoin.application.datasets import (  # noqa: E402
    load_digits_dataset,
    make_clients,
    split_validation,
)
from fedcoin.application.training import Trainer, build_cnn, build_mlp  # noqa: E402
from fedcoin.consensus.game import (  # noqa: E402
    NullPlayerGame,
    coalition_coefficients,
    exact_fedavg,
)
from fedcoin.consensus.quantize import compile_bundle, quantize_validation  # noqa: E402

N_CLIENTS = 10


def fl_round(kind: str, seed: int = 0):
    """Round 3 of a digits task: clients trained for 2 epochs from the FedAvg of round 2."""
    train, val = split_validation(load_digits_dataset(), 0.2, seed)
    shards = make_clients(train, clients=N_CLIENTS, noisy=0, seed=seed)
    arch, weights = build_mlp(64, 10, seed=seed) if kind == "mlp" else build_cnn(8, 10, seed=seed)
    trainer = Trainer(arch)
    samples = [len(s.data) for s in shards]
    for r in range(3):
        updates = [trainer.client_update(s, weights, 2, 100 * r + i) for i, s in enumerate(shards)]
        if r < 2:
            weights = exact_fedavg(updates, samples)
    return arch, weights, updates, samples, val


def float_forward(kind: str, model: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> int:
    """One float64 forward pass + argmax, written as tightly as numpy allows."""
    if kind == "mlp":
        w1, b1, w2, b2 = model
        z = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    else:
        k, b, w2, b2 = model
        img = np.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
        cols = np.stack([img[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)], -1)
        h = np.maximum(cols.reshape(-1, 9) @ k.reshape(9, -1) + b, 0.0)  # (N·64, 8)
        q = h.reshape(len(x), 4, 2, 4, 2, -1)  # 2×2 max pool as three elementwise maxima
        h = np.maximum(np.maximum(q[:, :, 0, :, 0], q[:, :, 0, :, 1]),
                       np.maximum(q[:, :, 1, :, 0], q[:, :, 1, :, 1]))  # fmt: skip
        z = h.reshape(len(x), -1) @ w2 + b2
    return int((z.argmax(axis=1) == y).sum())


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench(kind: str, repeat: int, keras_coalitions: int) -> None:
    import keras

    arch, prev, clients, samples, val = fl_round(kind)
    program = compile_bundle(arch, prev)
    validation = quantize_validation(program, val.x, val.y)
    masks = list(range(1 << N_CLIENTS))

    def ours() -> None:
        NullPlayerGame(program, validation, prev, clients, samples).utilities(masks)

    x64 = val.x.astype(np.float64)
    model64 = [w.astype(np.float64) for w in clients[0]]
    reps = 200

    def floats() -> None:
        for _ in range(reps):
            float_forward(kind, model64, x64, val.y)

    model = keras.models.model_from_json(arch)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    weights = NullPlayerGame(program, validation, prev, clients, samples).weights
    chosen = np.random.default_rng(0).choice(masks, keras_coalitions, replace=False)
    coeffs = coalition_coefficients(chosen.tolist(), weights) / 4096.0
    players = [*clients, prev]

    def keras_loop() -> None:
        for row in coeffs:
            mixed = [
                sum(c * p[t].astype(np.float64) for c, p in zip(row, players, strict=True))
                for t in range(len(prev))
            ]
            model.set_weights([np.asarray(w, dtype=np.float32) for w in mixed])
            model.evaluate(val.x, val.y, verbose=0)

    keras_loop()  # warm-up: tracing
    # Interleaved, best of `repeat` each: load from other processes hits all three alike.
    ours_time = float_time = keras_time = float("inf")
    for _ in range(repeat):
        ours_time = min(ours_time, timed(ours))
        float_time = min(float_time, timed(floats))
        keras_time = min(keras_time, timed(keras_loop))
    ours_rate, float_rate = len(masks) / ours_time, reps / float_time
    keras_rate = keras_coalitions / keras_time
    table = NullPlayerGame(program, validation, prev, clients, samples).utilities(masks)

    name = "digits MLP 64-32-10" if kind == "mlp" else "small CNN conv8x3x3-pool2-dense10"
    print(f"\n{name}, {len(val)} validation samples, n = {N_CLIENTS}, MACs/sample "
          f"{program.macs:,}; U(∅) = {table[0]}, U(N) = {table[-1]}")  # fmt: skip
    print(f"   exact evaluator, 1 024 coalitions: {ours_rate:10,.0f} evaluations/s")
    print(f"   Keras evaluate loop ({keras_coalitions}):       {keras_rate:10,.1f} evaluations/s")
    print(f"   float64 numpy forward pass:        {float_rate:10,.0f} evaluations/s")
    print(f"   exact / Keras = {ours_rate / keras_rate:,.0f}x (target >= 100x); "
          f"exact / float = {ours_rate / float_rate:.2f}x (target >= 0.5x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keras-coalitions", type=int, default=20)
    parser.add_argument("--only", choices=["mlp", "cnn"])
    args = parser.parse_args()
    for kind in ("mlp", "cnn"):
        if args.only in (None, kind):
            bench(kind, args.repeat, args.keras_coalitions)


if __name__ == "__main__":
    main()
