"""The SQLite chain store: the committed chain in one file, one transaction per commit.

It keeps every committed block (indexed by height), its certificate, its receipt and, for each,
either a full state snapshot (every ``SNAPSHOT_EVERY`` heights, and genesis) or the delta from its
parent. ``commit`` writes block, certificate, state, task index and head in one SQLite
transaction (WAL, ``synchronous=FULL``): a process killed at any point leaves either the whole
commit or none of it, and never a head without its block.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.chain_store import ChainStore
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import State
from fedcoin.data.state_delta import StateDelta
from fedcoin.data.task_index import task_touches
from fedcoin.data.vote import CommitCertificate
from fedcoin.errors import DecodeError, StoreError

SNAPSHOT_EVERY = 32
STATE_CACHE = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY, parent BLOB NOT NULL, height INTEGER NOT NULL UNIQUE,
    header BLOB NOT NULL, data BLOB NOT NULL, receipt BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (height INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS states (
    hash BLOB PRIMARY KEY, full INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS task_blocks (
    task_id BLOB NOT NULL, hash BLOB NOT NULL, height INTEGER NOT NULL,
    PRIMARY KEY (task_id, hash));
"""


P = ParamSpec("P")
R = TypeVar("R")


def _serialized(
    method: Callable[Concatenate[SqliteChainStore, P], R],
) -> Callable[Concatenate[SqliteChainStore, P], R]:
    """One thread at a time in the store: the event loop and worker threads (block imports,
    admission checks) share one connection, whose statement cache and cursors are not safe to
    use from two threads at once (it crashed the process), and one state cache."""

    def locked(store: SqliteChainStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store._lock:
            return method(store, *args, **kwargs)

    locked.__doc__ = method.__doc__
    return locked


class SqliteChainStore(ChainStore):
    """A SQLite file; one transaction per commit. Safe to call from several threads."""

    def __init__(self, path: str | Path, genesis: Genesis) -> None:
        self._lock = threading.RLock()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open chain store {self.path}: {exc}") from None
        self._cache: OrderedDict[bytes, State] = OrderedDict()
        block = genesis.block()
        row = self._db.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()
        if row is None:
            with self._tx():
                self._db.execute(
                    "INSERT INTO blocks VALUES (?,?,?,?,?,?)",
                    (block.hash, block.parent, 0, block.header.encode(), block.encode(), b""),
                )
                self._db.execute(
                    "INSERT INTO states VALUES (?,1,?)", (block.hash, genesis.state().encode())
                )
                self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (block.hash,))
                self._db.execute("INSERT INTO meta VALUES ('head', ?)", (block.hash,))
        elif bytes(row[0]) != block.hash:
            raise StoreError(
                f"{self.path} belongs to another network (genesis {bytes(row[0]).hex()[:16]}, "
                f"configured {block.hash.hex()[:16]})"
            )
        self._genesis = block.hash

    def _index_tasks(self, block: Block, settled: tuple[bytes, ...]) -> None:
        """Inside a transaction: record which tasks ``block`` touches."""
        touched = task_touches(block, settled)
        self._db.executemany(
            "INSERT OR IGNORE INTO task_blocks VALUES (?,?,?)",
            [(task_id, block.hash, block.height) for task_id in touched],
        )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis

    @_serialized
    def commit(
        self,
        block: Block,
        state: State,
        certificate: CommitCertificate,
        *,
        receipt: bytes = b"",
        settled: tuple[bytes, ...] = (),
    ) -> None:
        self._check_extends_head(block, certificate)
        full = block.height % SNAPSHOT_EVERY == 0
        if full:
            data = state.encode()
        else:
            data = StateDelta.between(self.get_state(block.parent), state).encode()
        with self._tx():
            self._db.execute(
                "INSERT INTO blocks VALUES (?,?,?,?,?,?)",
                (
                    block.hash,
                    block.parent,
                    block.height,
                    block.header.encode(),
                    block.encode(),
                    receipt,
                ),
            )
            self._db.execute(
                "INSERT INTO certificates VALUES (?,?)", (block.height, certificate.encode())
            )
            self._db.execute("INSERT INTO states VALUES (?,?,?)", (block.hash, int(full), data))
            self._index_tasks(block, settled)
            self._db.execute("UPDATE meta SET value=? WHERE key='head'", (block.hash,))
        self._remember(block.hash, state)

    @_serialized
    def get_block(self, block_hash: bytes) -> Block | None:
        row = self._db.execute("SELECT data FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        return None if row is None else self._decode_block(bytes(row[0]), block_hash)

    def _decode_block(self, data: bytes, block_hash: bytes) -> Block:
        try:
            return Block.decode(data)
        except DecodeError as exc:
            raise StoreError(f"corrupt block {block_hash.hex()} in {self.path}: {exc}") from None

    @_serialized
    def get_header(self, block_hash: bytes) -> BlockHeader | None:
        row = self._db.execute("SELECT header FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        if row is None:
            return None
        try:
            return BlockHeader.decode(bytes(row[0]))
        except DecodeError as exc:
            raise StoreError(f"corrupt header {block_hash.hex()} in {self.path}: {exc}") from None

    @_serialized
    def has_block(self, block_hash: bytes) -> bool:
        row = self._db.execute("SELECT 1 FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        return row is not None

    @_serialized
    def get_receipt(self, block_hash: bytes) -> bytes | None:
        row = self._db.execute("SELECT receipt FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        return bytes(row[0]) if row is not None else None

    @_serialized
    def get_certificate(self, height: int) -> CommitCertificate | None:
        row = self._db.execute("SELECT data FROM certificates WHERE height=?", (height,)).fetchone()
        return None if row is None else self._decode_certificate(bytes(row[0]), height)

    def _decode_certificate(self, data: bytes, height: int) -> CommitCertificate:
        try:
            return CommitCertificate.decode(data)
        except DecodeError as exc:
            raise StoreError(f"corrupt certificate {height} in {self.path}: {exc}") from None

    @_serialized
    def committed_range(
        self, after_height: int, limit: int
    ) -> list[tuple[Block, CommitCertificate]]:
        rows = self._db.execute(
            "SELECT b.hash, b.height, b.data, c.data FROM blocks b "
            "JOIN certificates c ON c.height = b.height "
            "WHERE b.height > ? ORDER BY b.height LIMIT ?",
            (after_height, max(limit, 0)),
        ).fetchall()
        return [
            (
                self._decode_block(bytes(data), bytes(h)),
                self._decode_certificate(bytes(cert), int(height)),
            )
            for h, height, data, cert in rows
        ]

    @_serialized
    def get_state(self, block_hash: bytes) -> State:
        cached = self._cache.get(block_hash)
        if cached is not None:
            self._cache.move_to_end(block_hash)
            return cached
        # Walk back to a snapshot (or a cached state), then replay the deltas forward.
        deltas: list[bytes] = []
        cursor = block_hash
        base: State | None = None
        while base is None:
            row = self._db.execute(
                "SELECT s.full, s.data, b.parent FROM states s JOIN blocks b ON b.hash = s.hash "
                "WHERE s.hash=?",
                (cursor,),
            ).fetchone()
            if row is None:
                raise StoreError(f"no state for block {cursor.hex()}")
            full, data, parent = row
            try:
                if full:
                    base = State.decode(bytes(data))
                else:
                    deltas.append(bytes(data))
                    cursor = bytes(parent)
                    base = self._cache.get(cursor)
            except DecodeError as exc:
                raise StoreError(f"corrupt state for {cursor.hex()}: {exc}") from None
        state = base
        for data in reversed(deltas):
            state = StateDelta.decode(data).apply(state)
        self._remember(block_hash, state)
        return state

    def _remember(self, block_hash: bytes, state: State) -> None:
        self._cache[block_hash] = state
        self._cache.move_to_end(block_hash)
        while len(self._cache) > STATE_CACHE:
            self._cache.popitem(last=False)

    @_serialized
    def head_hash(self) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE key='head'").fetchone()
        return bytes(row[0])

    @_serialized
    def canonical_hash(self, height: int) -> bytes | None:
        row = self._db.execute("SELECT hash FROM blocks WHERE height=?", (height,)).fetchone()
        return bytes(row[0]) if row is not None else None

    @_serialized
    def task_blocks(self, task_id: bytes) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT height, hash FROM task_blocks WHERE task_id=? ORDER BY height", (task_id,)
        ).fetchall()
        return [(int(height), bytes(h)) for height, h in rows]

    @_serialized
    def close(self) -> None:
        self._db.close()


class _Transaction:
    """``with`` block = one SQLite transaction (BEGIN IMMEDIATE … COMMIT, or ROLLBACK)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
