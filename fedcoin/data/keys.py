"""Ed25519 keys, addresses and domain-separated signatures.

A signature is always over ``domain_tag || hash``, one tag per kind of object, so a signature
made for a transaction can never be replayed as a block's or a share's. An address is
``sha256(pubkey)[:20]``, shown to people as ``"fc" + hex``. Key files hold the raw 32-byte seed
as PKCS#8 PEM and are created with mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedcoin.data.curve import is_small_order
from fedcoin.data.encoding import sha256
from fedcoin.errors import DecodeError, KeyFileError, SmallOrderKey

ADDRESS_PREFIX = "fc"
ADDRESS_BYTES = 20
PUBKEY_BYTES = 32

TAG_TX = b"fedcoin/tx/v1"
TAG_BLOCK = b"fedcoin/block/v1"
TAG_UPDATE = b"fedcoin/update/v1"
TAG_HELLO = b"fedcoin/hello/v1"


def parse_pubkey(raw: bytes) -> bytes:
    """A public key from untrusted bytes: 32 bytes, not a point of small order."""
    if len(raw) != PUBKEY_BYTES:
        raise DecodeError(f"a public key is {PUBKEY_BYTES} bytes, got {len(raw)}")
    if is_small_order(raw):
        raise SmallOrderKey(f"public key {raw.hex()} is a point of small order")
    return bytes(raw)


def address_of(pubkey: bytes) -> bytes:
    """The 20-byte address that a public key controls."""
    return sha256(pubkey)[:ADDRESS_BYTES]


def format_address(address: bytes) -> str:
    return ADDRESS_PREFIX + address.hex()


def parse_address(text: str) -> bytes:
    """Parse ``fc`` + 40 hex digits; raise ValueError with a clear message otherwise."""
    if not isinstance(text, str) or not text.startswith(ADDRESS_PREFIX):
        raise ValueError(f"not a FedCoin address (must start with {ADDRESS_PREFIX!r}): {text!r}")
    body = text[len(ADDRESS_PREFIX) :]
    if len(body) != 2 * ADDRESS_BYTES:
        raise ValueError(f"a FedCoin address has {2 * ADDRESS_BYTES} hex digits: {text!r}")
    if not all(c in "0123456789abcdefABCDEF" for c in body):  # fromhex would skip spaces
        raise ValueError(f"address is not hexadecimal: {text!r}")
    return bytes.fromhex(body)


def verify(pubkey: bytes, tag: bytes, digest: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``pubkey``'s signature of ``tag || digest``.

    A key at a point of small order verifies nothing: the identity key would otherwise accept
    the signature (R = identity, S = 0) on every message, so anyone could sign for it.
    """
    if is_small_order(pubkey):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, tag + digest)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """An Ed25519 signing key with its public half and address precomputed."""

    key: Ed25519PrivateKey
    public: bytes
    address: bytes

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls.from_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        """Deterministic key from a 32-byte seed (tests and simulations)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls.from_key(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_key(cls, key: Ed25519PrivateKey) -> PrivateKey:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key, public, address_of(public))

    def sign(self, tag: bytes, digest: bytes) -> bytes:
        return self.key.sign(tag + digest)

    @property
    def address_text(self) -> str:
        return format_address(self.address)

    def to_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a new file readable by its owner only; never overwrite."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"refusing to overwrite existing key file {target}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.to_pem())
            fh.flush()
            os.fsync(fh.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivateKey:
        target = Path(path)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"key file not found: {target} (create one with 'keygen')") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {target}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{target} is not a valid PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{target} holds a {type(key).__name__}, not an Ed25519 key")
        return cls.from_key(key)
