"""Keys: domain-separated signatures, addresses, key files with safe permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedcoin.data.keys import (
    TAG_BLOCK,
    TAG_TX,
    PrivateKey,
    format_address,
    parse_address,
    verify,
)
from fedcoin.errors import KeyFileError


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
