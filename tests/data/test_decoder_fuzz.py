"""Decoder fuzz over every decodable type of the data layer: random bytes, random msgpack
trees and mutated valid encodings raise only ``DecodeError`` (never another exception type),
and whatever a decoder accepts is canonical: it re-encodes to exactly the input bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.genesis import ChainParams, Genesis
from fedcoin.data.state import Account, SettledSv, State, SvTask, TaskState
from fedcoin.data.state_delta import StateDelta
from fedcoin.data.tensors import decode_bundle, decode_dataset, decode_weights, weights_of
from fedcoin.data.tx import (
    ClientUpdate,
    CloseTask,
    ContentRef,
    FraudProof,
    PosapParams,
    PublishTask,
    ShareCommit,
    ShareReveal,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
)
from fedcoin.errors import DecodeError
from fedcoin.incentive.payouts import BlockReceipt, RoundPayout
from tests.data.test_encoding import ALL

#: Every type with a canonical decoder: its decode, and whether accepted bytes must re-encode
#: to themselves (State and StateDelta hold maps: the store writes them, peers never do).
CANONICAL: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        ContentRef, PosapParams, TaskSpec, ClientUpdate, Transfer, PublishTask, SubmitRound,
        CloseTask, ShareCommit, ShareReveal, FraudProof, Transaction, BlockHeader, Block,
        Account, TaskState, SvTask, SettledSv, ChainParams, Genesis, RoundPayout, BlockReceipt,
    )
}  # fmt: skip
OTHER: dict[str, Callable[[bytes], object]] = {
    "State": State.decode,
    "StateDelta": StateDelta.decode,
    "weights": decode_weights,
    "bundle": decode_bundle,
    "dataset": decode_dataset,
    "weights_of": weights_of,
}
DECODERS = sorted([*CANONICAL, *OTHER])

#: Random wire trees: what msgpack can say, including what FedCoin refuses (maps, str, floats).
scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=70),
    st.text(max_size=5),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.integers(0, 5), inner),
    max_leaves=60,
)
#: Bytes that start msgpack constructs: array/bin/str/map headers, nil, never-used.
SPECIAL = [0x90, 0x9F, 0xDC, 0xDD, 0xC4, 0xC5, 0xC6, 0xA0, 0x80, 0xC0, 0xC1, 0xCF, 0xD3, 0xFF]


def decode_with(name: str, data: bytes) -> None:
    """Decode; fail the test on any exception but DecodeError, or on a non-canonical accept."""
    if name in CANONICAL:
        try:
            obj = CANONICAL[name].decode(data)
        except DecodeError:
            return
        assert obj.encode() == data, f"{name} accepted a non-canonical encoding"
    else:
        try:
            OTHER[name](data)
        except DecodeError:
            return


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A valid encoding of a random object of a type, then a few random edits."""
    strategy_of = {**{k: v[1] for k, v in ALL.items()}}
    source = strategy_of.get(name, strategy_of["Transaction"])
    data = bytearray(draw(source).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from(SPECIAL) | st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", DECODERS)
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(name: str, data: bytes) -> None:
    decode_with(name, data)


@pytest.mark.parametrize("name", DECODERS)
@FUZZ
@given(tree=trees)
def test_random_msgpack_trees_raise_only_decode_error(name: str, tree: Any) -> None:
    decode_with(name, msgpack.packb(tree, use_bin_type=True))


@pytest.mark.parametrize("name", sorted(CANONICAL.keys() & ALL.keys()))
@FUZZ
@given(data=st.data())
def test_mutated_encodings_raise_only_decode_error(name: str, data: st.DataObject) -> None:
    decode_with(name, data.draw(mutated(name)))


@pytest.mark.parametrize("name", DECODERS)
def test_hostile_shapes_raise_only_decode_error(name: str) -> None:
    for raw in (
        b"",
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xc6\xff\xff\xff\xff",  # a bin claiming 4 GB
        b"\x91" * 2000 + b"\x90",  # 2001 arrays deep
        b"\xdc\x01\x00" + b"\x90" * 256,  # many empty arrays
        msgpack.packb([[b"\x00" * 32] * 7] * 7),
        msgpack.packb([2**64 - 1] * 20),
    ):
        decode_with(name, raw)
