"""Flower arrays ↔ FedCoin weights: the one canonical blob that the client signs and the server
uploads.

A Keras model's weights travel in Flower as ``ArrayRecord(model.get_weights())``, keyed
``"0"…"n-1"``. FedCoin's weights are that list in the model's order, encoded by
``encode_weights`` (dtype, shape, little-endian C-order bytes). Flower's own array bytes and
record ids depend on memory layout and chunking, so neither side hashes them: both hash the
FedCoin blob of the decoded arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np
from flwr.app import ArrayRecord

from fedcoin.data.tensors import Weights, encode_weights
from fedcoin.errors import FedCoinError


class BadArrays(FedCoinError):
    """A reply's arrays cannot be FedCoin weights (wrong dtype, no arrays)."""


def weights_of_record(record: ArrayRecord) -> Weights:
    """The record's arrays in model order: numeric keys by number, other keys as inserted."""
    keys = list(record.keys())
    if not keys:
        raise BadArrays("the reply carries no arrays")
    if all(k.isdigit() for k in keys):
        keys.sort(key=int)
    arrays = [np.ascontiguousarray(record[k].numpy()) for k in keys]
    return arrays


def record_of_weights(weights: Weights) -> ArrayRecord:
    return ArrayRecord([np.ascontiguousarray(w) for w in weights])


def weights_blob(weights: Weights) -> bytes:
    """FedCoin's canonical weights blob (what the server uploads and the chain hashes)."""
    try:
        return encode_weights(weights)
    except ValueError as exc:
        raise BadArrays(str(exc)) from None


def weights_sha256(weights: Weights) -> bytes:
    return hashlib.sha256(weights_blob(weights)).digest()
