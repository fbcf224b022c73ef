"""The content store: blobs written in chunks, kept only when hash and size match, and refs
that resolve only to bytes of their own size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedcoin.data.content import ContentStore, MemoryContent, resolve
from fedcoin.data.tx import ContentRef
from fedcoin.errors import ContentMismatch, ContentTooLarge


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_blob_written_in_chunks_is_kept_under_its_hash(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    blob = bytes(range(256)) * 5000
    with store.writer() as w:
        for i in range(0, len(blob), 4096):
            w.write(blob[i : i + 4096])
        ref = w.commit(hashlib.sha256(blob).digest(), len(blob), "cid")
    assert ref == ContentRef(hashlib.sha256(blob).digest(), len(blob), "cid")
    assert store.get(ref.sha256) == blob and store.has_ref(ref)
    assert len(files_in(tmp_path)) == 1


def test_wrong_hash_or_size_leaves_no_file(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    blob = b"weights" * 1000
    sha = hashlib.sha256(blob).digest()
    with pytest.raises(ContentMismatch, match="hash"), store.writer() as w:
        w.write(blob)
        w.commit(hashlib.sha256(b"other").digest())
    with pytest.raises(ContentMismatch, match="bytes"), store.writer() as w:
        w.write(blob)
        w.commit(sha, len(blob) + 1)
    with pytest.raises(ContentMismatch), store.writer() as w:  # a cut-short upload
        w.write(blob[:-1])
        w.commit(sha)
    assert files_in(tmp_path) == []
    assert not store.has(sha)


def test_a_writer_refuses_bytes_past_its_cap_before_writing_them(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, max_blob=10_000)
    with pytest.raises(ContentTooLarge), store.writer() as w:
        w.write(b"x" * 6_000)
        w.write(b"x" * 6_000)
    assert w.size == 6_000
    with pytest.raises(ContentTooLarge), store.writer(max_size=100) as w:
        w.write(b"x" * 101)
    assert files_in(tmp_path) == []


def test_a_writer_left_without_commit_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with store.writer() as w:
        w.write(b"half a blob")
    assert files_in(tmp_path) == []


def test_stale_temporary_files_from_a_crash_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".tmp-crashed").write_bytes(b"partial")
    ContentStore(tmp_path)
    assert files_in(tmp_path) == []


def test_put_checked_checks_the_declared_size(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    blob = b"model bundle"
    with pytest.raises(ContentMismatch, match="bytes"):
        store.put_checked(hashlib.sha256(blob).digest(), blob, size=len(blob) - 1)
    assert files_in(tmp_path) == []
    assert store.put_checked(hashlib.sha256(blob).digest(), blob, size=len(blob)).size == len(blob)


@pytest.mark.parametrize("kind", ["store", "memory"])
def test_a_ref_resolves_only_with_its_hash_and_size(tmp_path: Path, kind: str) -> None:
    source = ContentStore(tmp_path) if kind == "store" else MemoryContent()
    ref = source.put(b"client weights")
    assert resolve(source, ref) == b"client weights"
    # Same hash, another size: the blob accepted here could never be fetched elsewhere.
    liar = ContentRef(ref.sha256, ref.size + 1, "")
    assert resolve(source, liar) is None
    assert resolve(source, ContentRef(b"\x00" * 32, ref.size, "")) is None
    if isinstance(source, ContentStore):
        assert source.has_ref(ref) and not source.has_ref(liar)
        assert source.resolve(liar) is None


def test_a_memory_source_holding_wrong_bytes_resolves_nothing() -> None:
    source = MemoryContent()
    sha = hashlib.sha256(b"real").digest()
    source.blobs[sha] = b"fake"
    assert resolve(source, ContentRef(sha, 4, "")) is None
