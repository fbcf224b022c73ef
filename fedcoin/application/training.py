"""Client training with Keras (tensorflow-cpu), imported lazily: a process that never trains
never pays for TensorFlow.

A model bundle is a Keras architecture JSON plus initial weights. ``Trainer`` builds the model
once per process and trains it for a client by setting the global weights, fitting for ``E``
local epochs on the client's shard (shuffled by a seeded generator of its own) and returning
the new weights. A free rider returns the global model unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcoin.application.datasets import ClientKind, ClientShard, Dataset
from fedcoin.consensus.utility import Weights
from fedcoin.errors import ConfigError


def keras_module() -> Any:
    """Keras, imported on first use (TensorFlow costs seconds and ~0.5 GB per process)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def build_mlp(input_dim: int, classes: int, hidden: int = 32, seed: int = 0) -> tuple[str, Weights]:
    """A tiny MLP bundle: (architecture JSON, initial weights)."""
    keras = keras_module()
    init = keras.initializers.GlorotUniform(seed=seed)
    model = keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="relu", kernel_initializer=init),
            keras.layers.Dense(
                classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)
            ),
        ]
    )
    return model.to_json(), [w.astype(np.float32) for w in model.get_weights()]


def build_cnn(side: int, classes: int, filters: int = 8, seed: int = 0) -> tuple[str, Weights]:
    """A tiny CNN bundle for ``side × side`` grey images given as flat vectors."""
    keras = keras_module()
    first = keras.initializers.GlorotUniform(seed=seed)
    second = keras.initializers.GlorotUniform(seed=seed + 1)
    model = keras.Sequential(
        [
            keras.Input((side * side,)),
            keras.layers.Reshape((side, side, 1)),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                kernel_initializer=first),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(classes, kernel_initializer=second),
        ]
    )  # fmt: skip
    return model.to_json(), [w.astype(np.float32) for w in model.get_weights()]


class Trainer:
    """Trains one architecture for many clients; one Keras model per process, reused."""

    def __init__(self, architecture_json: str, learning_rate: float = 0.2, batch_size: int = 32):
        keras = keras_module()
        self.model = keras.models.model_from_json(architecture_json)
        self.model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        self.batch_size = batch_size

    def train(self, global_weights: Weights, data: Dataset, epochs: int, seed: int) -> Weights:
        self.model.set_weights(global_weights)
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(data))
            self.model.fit(
                data.x[order], data.y[order], batch_size=self.batch_size, epochs=1,
                shuffle=False, verbose=0,
            )  # fmt: skip
        return [w.astype(np.float32) for w in self.model.get_weights()]

    def client_update(
        self, shard: ClientShard, global_weights: Weights, epochs: int, seed: int
    ) -> Weights:
        """What a client of this kind sends back for a round."""
        if shard.kind == ClientKind.FREE_RIDER:
            return [w.copy() for w in global_weights]
        return self.train(global_weights, shard.data, epochs, seed)

    def check_inputs(self, datasets: list[Dataset]) -> None:
        """Every data set fits the model's input, or a clear error before any training."""
        expected = tuple(int(d) for d in self.model.input_shape[1:])
        for data in datasets:
            got = tuple(data.x.shape[1:])
            if got != expected:
                raise ConfigError(
                    f"the task's model takes inputs of shape {expected}, the clients' data has "
                    f"{got} (give --data an .npz that matches the task's model)"
                )

    def accuracy(self, weights: Weights, data: Dataset) -> float:
        self.model.set_weights(weights)
        logits = self.model(data.x, training=False)
        return float(np.mean(np.asarray(logits).argmax(axis=-1) == data.y))
