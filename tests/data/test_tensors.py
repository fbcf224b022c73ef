"""Weights, bundles and datasets: round trips and hostile blobs; the content store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcoin.data.content import ContentStore
from fedcoin.data.encoding import encode
from fedcoin.data.tensors import (
    decode_bundle,
    decode_dataset,
    decode_weights,
    encode_bundle,
    encode_dataset,
    encode_weights,
    weights_of,
)
from fedcoin.errors import ContentMismatch, ContentTooLarge, DecodeError

arrays = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8]),
    hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
)


@given(st.lists(arrays, max_size=4))
def test_weights_round_trip(ws: list[np.ndarray]) -> None:
    back = decode_weights(encode_weights(ws))
    assert len(back) == len(ws)
    for a, b in zip(ws, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=True)


def test_bundle_and_dataset_round_trip() -> None:
    w = [np.arange(6, dtype=np.float32).reshape(2, 3)]
    arch, back = decode_bundle(encode_bundle('{"class_name": "Sequential"}', w))
    assert arch == '{"class_name": "Sequential"}' and np.array_equal(back[0], w[0])
    assert np.array_equal(weights_of(encode_bundle("{}", w))[0], w[0])
    assert np.array_equal(weights_of(encode_weights(w))[0], w[0])
    x, y = decode_dataset(encode_dataset(np.ones((3, 2), np.float32), np.array([0, 1, 2])))
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "raw",
    [
        [b"fcw1", [[b"<f4", [2, 2], b"\x00" * 15]]],  # bytes do not match the shape
        [b"fcw1", [[b"|O", [1], b"\x00" * 8]]],  # object dtype
        [b"fcw1", [[b"<f4", [-1], b""]]],  # negative dimension
        [b"fcw1", [[b"<f4", [1] * 9, b"\x00" * 4]]],  # too many dimensions
        [b"fcx9", []],  # wrong tag
        [b"fcw1"],  # wrong arity
    ],
)
def test_hostile_weights_are_refused(raw: list) -> None:
    with pytest.raises(DecodeError):
        decode_weights(encode(raw))


def test_dataset_labels_must_match_rows() -> None:
    with pytest.raises(DecodeError):
        decode_dataset(encode_dataset(np.ones((3, 2), np.float32), np.array([0, 1])))


def test_content_store_round_trip_and_checks(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "blobs", max_blob=100)
    ref = store.put(b"hello")
    assert store.get(ref.sha256) == b"hello" and store.has(ref.sha256)
    assert store.put(b"hello") == ref
    assert store.get(b"\x00" * 32) is None
    with pytest.raises(ContentTooLarge):
        store.put(b"x" * 101)
    with pytest.raises(ContentMismatch):
        store.put_checked(b"\x00" * 32, b"not that")
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))


def test_corrupted_blob_on_disk_is_dropped(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    ref = store.put(b"payload")
    path = tmp_path / ref.sha256.hex()[:2] / ref.sha256.hex()[2:]
    path.write_bytes(b"tampered")
    assert store.get(ref.sha256) is None
    assert not path.exists()
