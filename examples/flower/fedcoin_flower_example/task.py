"""The job's model and data: replace these two functions with your own.

The model must be a Keras ``Sequential`` of layers FedCoin's validators can evaluate (Dense,
Conv2D, pooling, Flatten, Reshape, Dropout; relu/linear activations; see ``fedcoin bundle``).
A client's data is an ``.npz`` with ``x`` and ``y`` named by its SuperNode's
``--node-config 'data-path="…"'``; without one (the simulation engine) a client takes its
partition of scikit-learn's bundled digits set, which needs no download.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_model(hidden: int = 16, seed: int = 0) -> Any:
    import keras

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                hidden, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


def validation_set() -> tuple[np.ndarray, np.ndarray]:
    """The last 360 digits: the validation set the task publishes (clients never train on it)."""
    x, y = digits()
    return x[-360:], y[-360:]


def load_client_data(node_config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    path = node_config.get("data-path")
    if isinstance(path, str) and path:
        with np.load(path) as data:
            return data["x"].astype(np.float32), data["y"].astype(np.int64)
    x, y = digits()
    x, y = x[:-360], y[:-360]
    part, parts = int(node_config["partition-id"]), int(node_config["num-partitions"])
    return x[part::parts], y[part::parts]


def train(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> float:
    """Local epochs of SGD; returns the last epoch's loss."""
    rng = np.random.default_rng(seed)
    loss = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        history = model.fit(x[order], y[order], batch_size=32, epochs=1, shuffle=False, verbose=0)
        loss = float(history.history["loss"][-1])
    return loss
