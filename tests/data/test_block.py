"""Merkle roots and block identity."""

from __future__ import annotations

import hashlib
from dataclasses import fields, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcoin.data.block import (
    MAX_EVIDENCE,
    ZERO_HASH,
    Block,
    evidence_root,
    last_commit_hash,
    merkle_root,
)
from fedcoin.data.encoding import encode
from fedcoin.errors import DecodeError
from tests.helpers import (
    ALICE,
    BOB,
    MINER2,
    ChainBuilder,
    equivocation,
    make_genesis,
    make_transfer,
)

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


def test_block_hash_commits_to_every_header_field() -> None:
    builder = ChainBuilder(make_genesis())
    builder.add()
    header = builder.make()[0].header
    for f in fields(header):
        value = getattr(header, f.name)
        if f.name == "proposer_pubkey":
            changed = MINER2.public
        else:
            changed = value + 1 if isinstance(value, int) else hashlib.sha256(value).digest()
        assert replace(header, **{f.name: changed}).hash != header.hash, f.name


def test_header_roots_commit_to_the_body() -> None:
    builder = ChainBuilder(make_genesis())
    builder.add()
    block, _ = builder.make([make_transfer(ALICE, BOB, 5, 0)], evidence=[equivocation(MINER2, 1)])
    header = block.header
    assert header.last_commit_hash == last_commit_hash(block.last_commit) != ZERO_HASH
    assert header.evidence_root == evidence_root(block.evidence) != ZERO_HASH
    assert Block.decode(block.encode()) == block
    # Height 1 carries no certificate and the genesis hash of nothing
    assert builder.blocks[1].last_commit is None
    assert builder.blocks[1].header.last_commit_hash == ZERO_HASH


def test_a_block_with_too_much_evidence_does_not_decode() -> None:
    builder = ChainBuilder(make_genesis())
    block, _ = builder.make()
    item = equivocation(MINER2, 1)
    raw = block.to_wire()
    raw[3] = [item.to_wire()] * (MAX_EVIDENCE + 1)  # header, txs, last_commit, evidence
    with pytest.raises(DecodeError):
        Block.decode(encode(raw))


def test_transaction_id_excludes_signature_leaf_hash_includes_it() -> None:
    tx = make_transfer(ALICE, BOB, 5, 0)
    forged = replace(tx, signature=b"\x00" * 64)
    assert forged.id == tx.id
    assert forged.leaf_hash() != tx.leaf_hash()
    assert tx.signature_ok() and not forged.signature_ok()
