"""Off-chain content formats: model weights, model bundles and datasets. Never pickle.

- weights  = ``[b"fcw1", [tensor…]]``
- bundle   = ``[b"fcm1", architecture JSON (UTF-8 bytes), [tensor…]]`` — a Keras model's
  ``to_json()`` with built-in layers only, and its initial weights
- dataset  = ``[b"fcd1", x tensor, y tensor]``

A tensor is ``[dtype, [dim…], raw little-endian bytes]`` with dtype one of a short whitelist.
Decoding checks that every tensor's bytes match its dtype and shape; hostile blobs raise
``DecodeError`` before any array is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcoin.data.encoding import MAX_BYTES, decode_raw, encode
from fedcoin.errors import DecodeError

WEIGHTS_TAG = b"fcw1"
BUNDLE_TAG = b"fcm1"
DATASET_TAG = b"fcd1"
DTYPES = {
    b"<f4": np.float32,
    b"<f8": np.float64,
    b"<i4": np.int32,
    b"<i8": np.int64,
    b"|u1": np.uint8,
}
MAX_TENSORS = 1024
MAX_DIMS = 8

Weights = list[np.ndarray]


def _tensor_wire(array: np.ndarray) -> list[Any]:
    arr = np.asarray(array)
    arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    code = dtype.str.encode()
    if code not in DTYPES:
        raise ValueError(f"unsupported tensor dtype {arr.dtype}")
    return [code, list(arr.shape), arr.astype(dtype, copy=False).tobytes()]


def _tensor_from_wire(raw: Any) -> np.ndarray:
    if type(raw) is not list or len(raw) != 3:
        raise DecodeError("tensor must be [dtype, shape, bytes]")
    code, shape, data = raw
    if type(code) is not bytes or code not in DTYPES:
        raise DecodeError(f"unsupported tensor dtype {code!r}")
    if type(shape) is not list or len(shape) > MAX_DIMS:
        raise DecodeError("tensor shape must be a list of at most 8 dimensions")
    if any(type(d) is not int or d < 0 for d in shape):
        raise DecodeError("tensor dimensions must be non-negative integers")
    if type(data) is not bytes:
        raise DecodeError("tensor data must be bytes")
    dtype = np.dtype(DTYPES[code])
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(data):
        raise DecodeError(f"tensor of shape {shape} needs {count * dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _tensors_from_wire(raw: Any) -> Weights:
    if type(raw) is not list or len(raw) > MAX_TENSORS:
        raise DecodeError(f"expected a list of at most {MAX_TENSORS} tensors")
    return [_tensor_from_wire(t) for t in raw]


def _unpack(blob: bytes, tag: bytes, length: int) -> list[Any]:
    raw = decode_raw(blob, max_bytes=MAX_BYTES)
    if type(raw) is not list or len(raw) != length or raw[0] != tag:
        raise DecodeError(f"not a {tag.decode()} blob")
    return raw


def encode_weights(weights: Weights) -> bytes:
    return encode([WEIGHTS_TAG, [_tensor_wire(w) for w in weights]])


def decode_weights(blob: bytes) -> Weights:
    return _tensors_from_wire(_unpack(blob, WEIGHTS_TAG, 2)[1])


def encode_bundle(architecture_json: str, weights: Weights) -> bytes:
    return encode([BUNDLE_TAG, architecture_json.encode(), [_tensor_wire(w) for w in weights]])


def decode_bundle(blob: bytes) -> tuple[str, Weights]:
    raw = _unpack(blob, BUNDLE_TAG, 3)
    try:
        arch = raw[1].decode("utf-8")
    except (AttributeError, UnicodeDecodeError) as exc:
        raise DecodeError("bundle architecture must be UTF-8 JSON") from exc
    return arch, _tensors_from_wire(raw[2])


def encode_dataset(x: np.ndarray, y: np.ndarray) -> bytes:
    return encode([DATASET_TAG, _tensor_wire(x), _tensor_wire(y)])


def decode_dataset(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    raw = _unpack(blob, DATASET_TAG, 3)
    x, y = _tensor_from_wire(raw[1]), _tensor_from_wire(raw[2])
    if x.ndim < 1 or y.shape != (x.shape[0],):
        raise DecodeError("dataset y must be a vector with one label per row of x")
    return x, y


def weights_of(blob: bytes) -> Weights:
    """The weights in a weights blob or a model bundle (model(∅) of round 1 is the bundle's)."""
    raw = decode_raw(blob, max_bytes=MAX_BYTES)
    if type(raw) is list and raw and raw[0] == BUNDLE_TAG:
        return decode_bundle(blob)[1]
    return decode_weights(blob)
