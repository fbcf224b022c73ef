"""Coalition utility: numpy forward pass agrees with Keras; FedAvg; the memoised game."""

from __future__ import annotations

import numpy as np
import pytest

from fedcoin.consensus.utility import (
    CoalitionGame,
    KerasEvaluator,
    NumpyEvaluator,
    UnsupportedModel,
    compile_sequential,
    fedavg,
    is_fedavg,
    make_evaluator,
)

keras = pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


def random_models(arch: str, count: int, seed: int) -> list[list[np.ndarray]]:
    model = keras.models.model_from_json(arch)
    rng = np.random.default_rng(seed)
    variance = ["variance" in v.path for v in model.weights]  # BatchNorm variance must be > 0
    return [
        [
            (np.abs(w) + 0.1 if var else w).astype(np.float32)
            for w, var in zip(
                (rng.normal(0, 0.5, v.shape) for v in model.weights), variance, strict=False
            )
        ]
        for _ in range(count)
    ]


def data(shape: tuple[int, ...], classes: int = 10, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


ARCHITECTURES = {
    "mlp": lambda: keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.3), keras.layers.Dense(10),
    ]),
    "mlp-tanh-softmax": lambda: keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(12, activation="tanh", use_bias=False),
        keras.layers.Dense(10, activation="softmax"),
    ]),
    "cnn-same-max": lambda: keras.Sequential([
        keras.Input((64,)), keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10),
    ]),
    "cnn-valid-avg-bn": lambda: keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, strides=1, activation="sigmoid"),
        keras.layers.BatchNormalization(), keras.layers.AveragePooling2D(2, padding="same"),
        keras.layers.Conv2D(5, 2, strides=2, padding="same"), keras.layers.Activation("relu"),
        keras.layers.MaxPooling2D(2, padding="same"), keras.layers.Flatten(),
        keras.layers.Dense(10),
    ]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_numpy_forward_agrees_with_keras(name: str) -> None:
    model = ARCHITECTURES[name]()
    arch = model.to_json()
    shape = tuple(model.input_shape[1:])
    x, y = data(shape)
    models = random_models(arch, 4, seed=1)
    fast = NumpyEvaluator(compile_sequential(arch), models, x, y)
    slow = KerasEvaluator(arch, models, x, y)
    rng = np.random.default_rng(2)
    coeffs = np.vstack([np.eye(4), rng.dirichlet(np.ones(4), size=6)])
    assert fast.correct(coeffs).tolist() == slow.correct(coeffs).tolist()
    # and the single-model predictions agree with Keras' own predict
    model.set_weights(models[0])
    expected = int((np.asarray(model(x)).argmax(-1) == y).sum())
    assert fast.correct(np.eye(4)[:1]).tolist() == [expected]


def test_unsupported_layer_falls_back_to_keras() -> None:
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.LayerNormalization(), keras.layers.Dense(3),
    ])  # fmt: skip
    arch = model.to_json()
    with pytest.raises(UnsupportedModel, match="LayerNormalization"):
        compile_sequential(arch)
    x, y = data((6,), classes=3)
    evaluator = make_evaluator(arch, random_models(arch, 2, 0), x, y)
    assert isinstance(evaluator, KerasEvaluator)
    assert 0 <= evaluator.correct(np.array([[0.5, 0.5]]))[0] <= len(y)


def test_fedavg_weights_by_samples_and_detects_tampering() -> None:
    a = [np.ones((2, 2), np.float32), np.zeros(3, np.float32)]
    b = [np.full((2, 2), 4, np.float32), np.full(3, 2, np.float32)]
    avg = fedavg([a, b], [1, 2])
    assert np.allclose(avg[0], 3.0) and np.allclose(avg[1], 4 / 3)
    assert avg[0].dtype == np.float32
    assert is_fedavg(avg, [a, b], [1, 2])
    assert not is_fedavg(avg, [a, b], [2, 1])
    tampered = [avg[0] + 1e-3, avg[1]]
    assert not is_fedavg(tampered, [a, b], [1, 2])
    assert not is_fedavg([avg[0]], [a, b], [1, 2])


def test_game_utilities_and_memo() -> None:
    model = ARCHITECTURES["mlp"]()
    arch = model.to_json()
    x, y = data((64,))
    prev, *clients = random_models(arch, 4, seed=3)
    samples = [10, 20, 30]
    game = CoalitionGame(arch, prev, clients, samples, x, y)
    model.set_weights(prev)
    assert game.utility(0) == int((np.asarray(model(x)).argmax(-1) == y).sum())
    model.set_weights(clients[1])
    assert game.utility(0b010) == int((np.asarray(model(x)).argmax(-1) == y).sum())
    model.set_weights(fedavg([clients[0], clients[2]], [10, 30]))
    assert game.utility(0b101) == int((np.asarray(model(x)).argmax(-1) == y).sum())
    before = game.evaluations
    game.utilities([0, 0b010, 0b101, 0b111])
    assert game.evaluations == before + 1
