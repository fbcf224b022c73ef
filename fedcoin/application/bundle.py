"""Bring your own model and data: the ``bundle`` command.

- A saved Keras model (``.keras``) becomes a model bundle (``fcm1``: architecture JSON and
  weights) — if FedCoin's validators can evaluate it: a ``Sequential`` model whose every layer
  and activation the consensus compiler (``consensus.utility.compile_sequential``) supports.
- An ``.npz`` with arrays ``x`` and ``y`` becomes a dataset blob (``fcd1``): ``x`` float32 and
  finite, ``y`` integer class labels, one per row. Given the model too, ``x`` must match the
  model's input shape and every label must be one of its outputs.

Every problem is a ``BundleError`` that says what to change; nothing is written then.
"""

from __future__ import annotations

import argparse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcoin.errors import FedCoinError

if TYPE_CHECKING:  # numpy and the compiler load when the command runs, not with the CLI
    import numpy as np


class BundleError(FedCoinError):
    """A model or data set that cannot become a FedCoin task's content."""


@dataclass(frozen=True)
class ModelShape:
    """What a data set must look like for a model: input shape (no batch axis), output units."""

    input_shape: tuple[int, ...]
    outputs: int


def load_keras_model(path: Path) -> Any:
    """Load a ``.keras`` file in Keras' safe mode (no arbitrary code)."""
    if path.suffix != ".keras":
        raise BundleError(f"{path}: expected a Keras model saved as .keras (model.save(...))")
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    from fedcoin.application.training import keras_module

    keras = keras_module()
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: cannot load the Keras model: {exc}") from None


def model_bundle(model: Any) -> tuple[bytes, ModelShape]:
    """The bundle of a Keras model, if the validators' evaluator supports every layer."""
    import numpy as np

    from fedcoin.consensus.evaluator import compile_architecture
    from fedcoin.data.tensors import encode_bundle
    from fedcoin.errors import EvaluatorError

    if type(model).__name__ != "Sequential":
        raise BundleError(
            f"the model is a {type(model).__name__}; FedCoin evaluates keras.Sequential models"
        )
    architecture = model.to_json()
    try:
        program = compile_architecture(architecture)
    except EvaluatorError as exc:
        raise BundleError(f"unsupported by FedCoin's evaluator: {exc}") from None
    weights = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
    used = len(program.tensor_shapes)
    if used != len(weights):
        raise BundleError(f"the model has {len(weights)} weight tensors, its layers use {used}")
    if any(not np.isfinite(w).all() for w in weights):
        raise BundleError("the model's weights contain NaN or infinity")
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    outputs = int(model.output_shape[-1])
    return encode_bundle(architecture, weights), ModelShape(input_shape, outputs)


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise BundleError(f"{path}: needs arrays named 'x' and 'y', has {list(data)}")
            return np.asarray(data["x"]), np.asarray(data["y"])
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: not a readable .npz: {exc}") from None


def dataset_blob(x: np.ndarray, y: np.ndarray, shape: ModelShape | None = None) -> bytes:
    """The dataset blob of ``(x, y)``, checked against the model's shape when given."""
    import numpy as np

    from fedcoin.data.tensors import encode_dataset

    if x.ndim < 2 or len(x) == 0:
        raise BundleError(f"x must hold at least one sample of features, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise BundleError(f"y must hold one label per row of x: x {x.shape}, y {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise BundleError("x must be numbers without NaN or infinity")
    if not np.issubdtype(y.dtype, np.integer) and not (
        np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))
    ):
        raise BundleError(f"y must be integer class labels, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    if labels.min() < 0:
        raise BundleError("class labels must be 0 or more")
    if shape is not None:
        if tuple(x.shape[1:]) != shape.input_shape:
            raise BundleError(
                f"the model takes inputs of shape {shape.input_shape}, x has {tuple(x.shape[1:])}"
            )
        classes = 2 if shape.outputs == 1 else shape.outputs
        if labels.max() >= classes:
            raise BundleError(f"label {labels.max()} is not one of the model's {classes} classes")
    return encode_dataset(x.astype(np.float32), labels)


def write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def add_bundle_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bundle",
        help="make a task's model bundle from a .keras model and its dataset blob from an .npz",
        description="Turn your own Keras model (.keras) into a model bundle and your own data "
        "(.npz with arrays x and y) into a dataset blob, for publish-task --bundle/--validation.",
    )
    p.add_argument("--model", type=Path, help="a Keras model saved with model.save('m.keras')")
    p.add_argument("--data", type=Path, help="an .npz with arrays x (features) and y (labels)")
    p.add_argument("--model-out", type=Path, help="bundle to write (default: MODEL with .fcm)")
    p.add_argument("--data-out", type=Path, help="dataset blob to write (default: DATA with .fcd)")


def cmd_bundle(args: argparse.Namespace) -> int:
    if args.model is None and args.data is None:
        raise BundleError("give --model, --data or both")
    shape = None
    outputs: list[tuple[Path, bytes]] = []
    if args.model is not None:
        bundle, shape = model_bundle(load_keras_model(args.model))
        outputs.append((args.model_out or args.model.with_suffix(".fcm"), bundle))
    if args.data is not None:
        blob = dataset_blob(*load_npz(args.data), shape)
        outputs.append((args.data_out or args.data.with_suffix(".fcd"), blob))
    for path, data in outputs:  # written only once everything checked out
        write_new(path, data)
        print(f"wrote {path} ({len(data)} bytes)")
    return 0
