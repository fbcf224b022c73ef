"""Keys: domain-separated signatures, addresses, key files with safe permissions."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.curve import is_small_order
from fedcoin.data.keys import (
    TAG_BLOCK,
    TAG_TX,
    PrivateKey,
    format_address,
    parse_address,
    parse_pubkey,
    verify,
)
from fedcoin.data.tx import ClientUpdate, ContentRef, Transaction, Transfer, make_tx
from fedcoin.data.vote import Vote, VoteType
from fedcoin.errors import KeyFileError, SmallOrderKey
from fedcoin.network.messages import Hello
from tests.helpers import make_genesis


def test_signature_verifies_only_under_its_domain_tag() -> None:
    key = PrivateKey.generate()
    digest = b"\x01" * 32
    sig = key.sign(TAG_TX, digest)
    assert verify(key.public, TAG_TX, digest, sig)
    assert not verify(key.public, TAG_BLOCK, digest, sig)
    assert not verify(key.public, TAG_TX, b"\x02" * 32, sig)
    assert not verify(PrivateKey.generate().public, TAG_TX, digest, sig)


def test_verify_rejects_malformed_keys_and_signatures() -> None:
    assert not verify(b"short", TAG_TX, bytes(32), bytes(64))
    assert not verify(PrivateKey.generate().public, TAG_TX, bytes(32), b"short")


def test_address_round_trips_and_rejects_garbage() -> None:
    key = PrivateKey.generate()
    text = format_address(key.address)
    assert text.startswith("fc") and len(text) == 42
    assert parse_address(text) == key.address
    for bad in ["", "fc", "xx" + text[2:], text[:-1], "fc" + "zz" * 20]:
        with pytest.raises(ValueError):
            parse_address(bad)


def test_key_file_is_private_and_loads_back(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "keys" / "node.pem"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert PrivateKey.load(path).public == key.public


def test_saving_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="overwrite"):
        PrivateKey.generate().save(path)
    assert path.read_bytes() == before


def test_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keygen"):
        PrivateKey.load(tmp_path / "absent.pem")


def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a valid PEM"):
        PrivateKey.load(path)


def test_non_ed25519_key_file_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        PrivateKey.load(path)


# --- small-order keys (issue 9) -------------------------------------------------------------
IDENTITY_KEY = (1).to_bytes(32, "little")
#: R = the identity point, S = 0: valid for the identity key on every message (cofactorless
#: verification computes [S]B = R + [k]A, and both sides are the identity).
FORGED = IDENTITY_KEY + bytes(32)


def test_identity_key_verifies_no_signature() -> None:
    for digest in (bytes(32), b"\x01" * 32, b"any message at all, 32 bytes!!!!"):
        assert not verify(IDENTITY_KEY, TAG_TX, digest, FORGED)
        assert not verify(IDENTITY_KEY, TAG_BLOCK, digest, FORGED)


def test_no_small_order_encoding_verifies_a_forgery() -> None:
    from tests.data.test_curve import encodings, torsion_points

    keys = [enc for point in torsion_points() for enc in encodings(point)]
    assert len(keys) > 8  # non-canonical encodings included
    for pubkey in keys:
        for digest in (bytes(32), b"\x07" * 32):
            assert not verify(pubkey, TAG_TX, digest, FORGED)
        with pytest.raises(SmallOrderKey):
            parse_pubkey(pubkey)
    real = PrivateKey.generate()
    assert parse_pubkey(real.public) == real.public


def test_small_order_keys_do_not_decode_in_any_signed_object() -> None:
    key = PrivateKey.from_seed(b"k" * 32)
    tx = make_tx(key, "chain", 0, Transfer(b"\x02" * 20, 5))
    vote = Vote(1, 0, VoteType.PRECOMMIT, b"\x03" * 32, key.public, bytes(64))
    header = replace(genesis_block().header, height=1)
    update = ClientUpdate(key.public, ContentRef(b"\x04" * 32, 1, ""), 1, bytes(64))
    hello = Hello(1, "chain", bytes(32), key.public, "", bytes(32), 0, bytes(32))
    cases = [
        (tx.to_wire(), 2, Transaction.from_wire),
        (vote.to_wire(), 4, Vote.from_wire),
        (header.to_wire(), 4, BlockHeader.from_wire),
        (update.to_wire(), 0, ClientUpdate.from_wire),
        (hello.to_wire(), 3, Hello.from_wire),
    ]
    for wire_form, field, decode in cases:
        decode(list(wire_form))  # the real key decodes
        # the identity, its "negative zero" encoding, and y = p - 1 (the point of order 2)
        smalls = (
            IDENTITY_KEY,
            (1 | 1 << 255).to_bytes(32, "little"),
            b"\xec" + b"\xff" * 30 + b"\x7f",
        )
        for small in smalls:
            assert is_small_order(small)
            forged = list(wire_form)
            forged[field] = small
            with pytest.raises(SmallOrderKey):
                decode(forged)
    # A small-order key cannot be encoded into a transaction either.
    with pytest.raises(ValueError, match="small order"):
        Transaction("chain", IDENTITY_KEY, 0, 0, Transfer(b"\x02" * 20, 5))


def test_genesis_keeps_its_all_zero_proposer_and_it_signs_nothing() -> None:
    block = genesis_block()
    assert block.header.proposer_pubkey == bytes(32)
    assert type(block).decode(block.encode()) == block
    assert not verify(bytes(32), TAG_BLOCK, block.hash, bytes(64))
    # The zero key is "nobody" only in a header; as a sender it is refused.
    with pytest.raises(SmallOrderKey):
        Transaction.from_wire(
            [1, b"chain", bytes(32), 0, 0, Transfer(b"\x02" * 20, 5).to_wire(), bytes(64)]
        )


def test_address_with_spaces_is_refused() -> None:
    with pytest.raises(ValueError, match="hexadecimal"):
        parse_address("fc" + "00 " * 13 + "0")


def genesis_block() -> Block:
    return make_genesis().block()
