"""Merkle roots and block identity."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from fedcoin.data.block import ZERO_HASH, merkle_root
from tests.helpers import ALICE, BOB, make_genesis, make_transfer

leaves = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20, unique=True)


def test_empty_merkle_root_is_zero() -> None:
    assert merkle_root([]) == ZERO_HASH


@given(leaves)
def test_merkle_root_changes_with_any_leaf(items: list[bytes]) -> None:
    root = merkle_root(items)
    for i in range(len(items)):
        changed = list(items)
        changed[i] = hashlib.sha256(changed[i]).digest()
        assert merkle_root(changed) != root


@given(leaves)
def test_duplicating_the_last_leaf_changes_the_root(items: list[bytes]) -> None:
    assert merkle_root([*items, items[-1]]) != merkle_root(items)


@given(leaves)
def test_order_matters(items: list[bytes]) -> None:
    if len(items) > 1:
        assert merkle_root(items[::-1]) != merkle_root(items)


def test_a_leaf_cannot_pose_as_an_inner_node() -> None:
    a, b = b"a" * 32, b"b" * 32
    inner = hashlib.sha256(b"\x01" + hashlib.sha256(b"\x00" + a).digest()
                           + hashlib.sha256(b"\x00" + b).digest()).digest()  # fmt: skip
    assert merkle_root([a, b]) == inner
    assert merkle_root([inner]) != inner


def test_block_hash_ignores_signature_but_commits_to_everything_else() -> None:
    header = make_genesis().block().header
    assert replace(header, signature=b"\x01" * 64).hash == header.hash
    assert replace(header, timestamp_ms=header.timestamp_ms + 1).hash != header.hash
    assert replace(header, state_root=b"\x02" * 32).hash != header.hash


def test_transaction_id_excludes_signature_leaf_hash_includes_it() -> None:
    tx = make_transfer(ALICE, BOB, 5, 0)
    forged = replace(tx, signature=b"\x00" * 64)
    assert forged.id == tx.id
    assert forged.leaf_hash() != tx.leaf_hash()
    assert tx.signature_ok() and not forged.signature_ok()
