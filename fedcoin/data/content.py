"""A local content-addressed store: blobs (weights, bundles, datasets) named by their sha256.

Files live under ``root/ab/cdef…``; a write goes to a temporary file in the store, is fsynced,
then renamed into place, so a reader never sees half a blob and a refused upload leaves no file.
Large blobs arrive in chunks through a ``BlobWriter`` (hashed as they come, refused the moment
they pass their cap, never held whole in memory). Every read is checked against its name, and
a ``ContentRef`` resolves only to bytes with its sha256 AND its size: a ref whose size is wrong
is unusable everywhere, so a blob accepted on one node is fetchable by every other. The default
cap, 64 MiB, fits a 60 MB model and equals the canonical decoder's bound on one blob
(``encoding.MAX_BYTES``): a larger blob could be stored but never decoded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from fedcoin.data.tx import ContentRef
from fedcoin.errors import ContentMismatch, ContentTooLarge

DEFAULT_MAX_BLOB = 64 * 1024 * 1024


class ContentSource(Protocol):
    """Where verification reads blobs from: anything that returns checked bytes or None."""

    def get(self, sha256: bytes) -> bytes | None: ...


def resolve(source: ContentSource, ref: ContentRef) -> bytes | None:
    """The blob ``ref`` names, from any source, only if both its sha256 and its size match."""
    data = source.get(ref.sha256)
    if data is None or len(data) != ref.size or hashlib.sha256(data).digest() != ref.sha256:
        return None
    return data


class BlobWriter:
    """One blob arriving in chunks: a temporary file in the store, hashed as it is written.

    ``commit`` checks the hash (and the size, when one was declared) and renames the file into
    place; leaving the ``with`` block without a commit deletes it. A write past ``max_size``
    raises ``ContentTooLarge`` before the bytes touch the disk.
    """

    def __init__(self, store: ContentStore, max_size: int) -> None:
        self.store = store
        self.max_size = max_size
        self.size = 0
        self._hash = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=store.root, prefix=".tmp-")
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._done = False

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_size:
            raise ContentTooLarge(f"blob exceeds the {self.max_size}-byte cap")
        self._fh.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self, sha256: bytes, size: int | None = None, cid: str = "") -> ContentRef:
        """Keep the blob if it hashes to ``sha256`` (and has ``size`` bytes, when given)."""
        if size is not None and self.size != size:
            raise ContentMismatch(f"blob has {self.size} bytes, not the {size} declared")
        if self._hash.digest() != sha256:
            raise ContentMismatch(f"blob does not hash to {sha256.hex()}")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        path = self.store._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, path)
        self._done = True
        return ContentRef(sha256, self.size, cid)

    def abort(self) -> None:
        if not self._done:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class ContentStore:
    """Blobs on disk by sha256, written atomically, checked on read."""

    def __init__(self, root: str | os.PathLike[str], max_blob: int = DEFAULT_MAX_BLOB) -> None:
        self.root = Path(root)
        self.max_blob = max_blob
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):  # uploads cut short by a crash
            stale.unlink(missing_ok=True)

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

    def put_checked(self, ref_sha256: bytes, data: bytes, size: int | None = None) -> ContentRef:
        """Store bytes that claim to have ``ref_sha256`` (and ``size``); refuse them otherwise."""
        if len(data) > self.max_blob:
            raise ContentTooLarge(f"blob of {len(data)} bytes exceeds the {self.max_blob} cap")
        if size is not None and len(data) != size:
            raise ContentMismatch(f"blob has {len(data)} bytes, not the {size} declared")
        if hashlib.sha256(data).digest() != ref_sha256:
            raise ContentMismatch(f"blob does not hash to {ref_sha256.hex()}")
        return self.put(data)

    def writer(self, max_size: int | None = None) -> BlobWriter:
        """Receive a blob in chunks, at most ``max_size`` (default: the store's cap) bytes."""
        cap = self.max_blob if max_size is None else min(max_size, self.max_blob)
        return BlobWriter(self, cap)

    def resolve(self, ref: ContentRef) -> bytes | None:
        """The blob ``ref`` names, if it is here with the right sha256 and size."""
        return resolve(self, ref)

    def has_ref(self, ref: ContentRef) -> bool:
        """True when the blob is here and has ``ref.size`` bytes (its hash is checked on read)."""
        try:
            return self._path(ref.sha256).stat().st_size == ref.size
        except FileNotFoundError:
            return False

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
