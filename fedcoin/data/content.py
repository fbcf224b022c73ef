"""A local content-addressed store: blobs (weights, bundles, datasets) named by their sha256.

Files live under ``root/ab/cdef…``; a write goes to a temporary file in the same directory,
is fsynced, then renamed into place, so a reader never sees half a blob. Every read is checked
against its name. A size cap bounds each blob.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from fedcoin.data.tx import ContentRef
from fedcoin.errors import ContentMismatch, ContentTooLarge

DEFAULT_MAX_BLOB = 64 * 1024 * 1024


class ContentSource(Protocol):
    """Where verification reads blobs from: anything that returns checked bytes or None."""

    def get(self, sha256: bytes) -> bytes | None: ...


class ContentStore:
    """Blobs on disk by sha256, written atomically, checked on read."""

    def __init__(self, root: str | os.PathLike[str], max_blob: int = DEFAULT_MAX_BLOB) -> None:
        self.root = Path(root)
        self.max_blob = max_blob
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: bytes) -> Path:
        name = sha256.hex()
        return self.root / name[:2] / name[2:]

    def put(self, data: bytes, cid: str = "") -> ContentRef:
        """Store ``data``; return its reference. Storing the same bytes twice is a no-op."""
        if len(data) > self.max_blob:
            raise ContentTooLarge(f"blob of {len(data)} bytes exceeds the {self.max_blob} cap")
        digest = hashlib.sha256(data).digest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return ContentRef(digest, len(data), cid)

    def put_checked(self, ref_sha256: bytes, data: bytes) -> ContentRef:
        """Store bytes that claim to have ``ref_sha256``; refuse them if they do not."""
        if len(data) > self.max_blob:
            raise ContentTooLarge(f"blob of {len(data)} bytes exceeds the {self.max_blob} cap")
        if hashlib.sha256(data).digest() != ref_sha256:
            raise ContentMismatch(f"blob does not hash to {ref_sha256.hex()}")
        return self.put(data)

    def get(self, sha256: bytes) -> bytes | None:
        try:
            data = self._path(sha256).read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).digest() != sha256:
            # Corrupted on disk: drop it so it can be fetched again.
            self._path(sha256).unlink(missing_ok=True)
            return None
        return data

    def has(self, sha256: bytes) -> bool:
        return self._path(sha256).exists()


class MemoryContent:
    """A dict-backed content source for tests and single-process simulations."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def put(self, data: bytes, cid: str = "") -> ContentRef:
        digest = hashlib.sha256(data).digest()
        self.blobs[digest] = data
        return ContentRef(digest, len(data), cid)

    def get(self, sha256: bytes) -> bytes | None:
        return self.blobs.get(sha256)
