"""The bundle command's checks: a Keras model and an .npz become task content, or a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcoin.application.bundle import (
    BundleError,
    dataset_blob,
    load_keras_model,
    load_npz,
    model_bundle,
)
from fedcoin.consensus.evaluator import compile_architecture
from fedcoin.data.tensors import decode_bundle, decode_dataset

keras = pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


def small_cnn(extra: list | None = None):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            *(extra or []),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def digits_images(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images[:n, :, :, None] / 16).astype(np.float32), data.target[:n]


def test_a_saved_conv2d_model_and_an_npz_become_a_bundle_and_a_dataset(tmp_path: Path) -> None:
    model = small_cnn()
    model.save(tmp_path / "m.keras")
    x, y = digits_images()
    np.savez(tmp_path / "val.npz", x=x, y=y)

    bundle, shape = model_bundle(load_keras_model(tmp_path / "m.keras"))
    blob = dataset_blob(*load_npz(tmp_path / "val.npz"), shape)

    arch, weights = decode_bundle(bundle)
    assert [w.shape for w in weights] == [w.shape for w in model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    vx, vy = decode_dataset(blob)
    assert vx.dtype == np.float32 and vx.shape == (60, 8, 8, 1) and list(vy) == list(y)
    # the validators' compiler takes it, layer for layer (rounds settling: test_light.py)
    kinds = [getattr(layer, "kind", "Reshape") for layer in compile_architecture(arch).layers]
    assert kinds[-4:] == ["Conv2D", "MaxPooling2D", "Reshape", "Dense"]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([keras.layers.LayerNormalization()], "LayerNormalization"),
        ([keras.layers.Conv2D(2, 3, dilation_rate=2, padding="same")], "dilation_rate"),
    ],
)
def test_unsupported_layers_are_refused_by_name(layers, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        model_bundle(small_cnn(layers))


def test_a_functional_model_is_refused() -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(BundleError, match="Sequential"):
        model_bundle(model)


def test_data_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    _, shape = model_bundle(small_cnn())
    x, y = digits_images(10)
    with pytest.raises(BundleError, match=r"inputs of shape \(8, 8, 1\), x has \(64,\)"):
        dataset_blob(x.reshape(10, 64), y, shape)
    with pytest.raises(BundleError, match="label 12 is not one of the model's 10 classes"):
        dataset_blob(x, np.where(y == 0, 12, y), shape)
    with pytest.raises(BundleError, match="one label per row"):
        dataset_blob(x, y[:5], shape)
    with pytest.raises(BundleError, match="NaN"):
        dataset_blob(np.full_like(x, np.nan), y, shape)
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(BundleError, match="'x' and 'y'"):
        load_npz(tmp_path / "bad.npz")
    (tmp_path / "m.h5").write_bytes(b"not keras")
    with pytest.raises(BundleError, match=r"\.keras"):
        load_keras_model(tmp_path / "m.h5")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="cannot load"):
        load_keras_model(tmp_path / "broken.keras")
