"""The chain store: blocks, the state after each block, the canonical chain and its head.

One interface, two implementations that behave identically (the same contract tests run on
both): ``MemoryChainStore`` for tests and simulations, ``SqliteChainStore`` for nodes.

The SQLite store keeps every block and, for each, either a full state snapshot (every
``SNAPSHOT_EVERY`` heights, and genesis) or the delta from its parent, so the state after any
stored block — on the canonical chain or a side branch — can be rebuilt to reorganise. Each
``put_block`` and ``set_head`` is one SQLite transaction (WAL, ``synchronous=FULL``): a process
killed at any point leaves either the whole block or none of it, and never a head without its
block.

Both keep a task index: for each task, the blocks that publish it, submit one of its rounds or
settle (or void) one, so the API reads a task's rounds without walking the chain. Every stored
block is indexed, on a side branch too; ``task_blocks`` keeps those on the canonical chain.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import State, StateDelta
from fedcoin.data.task_index import task_touches
from fedcoin.errors import DecodeError, StoreError

SNAPSHOT_EVERY = 32
STATE_CACHE = 64


class ChainStore(ABC):
    """Blocks by hash, states by block hash, the canonical chain by height, the head."""

    @property
    @abstractmethod
    def genesis_hash(self) -> bytes: ...

    @abstractmethod
    def put_block(self, block: Block, state: State, *, receipt: bytes = b"") -> None:
        """Store ``block`` and its post-state (its parent must be stored). Idempotent."""

    @abstractmethod
    def set_head(self, block_hash: bytes) -> None:
        """Make a stored block the head; the canonical chain becomes its ancestry."""

    @abstractmethod
    def get_block(self, block_hash: bytes) -> Block | None: ...

    @abstractmethod
    def get_receipt(self, block_hash: bytes) -> bytes | None: ...

    @abstractmethod
    def get_state(self, block_hash: bytes) -> State:
        """The state after a stored block; ``StoreError`` if the block is unknown."""

    @abstractmethod
    def head_hash(self) -> bytes: ...

    @abstractmethod
    def canonical_hash(self, height: int) -> bytes | None: ...

    @abstractmethod
    def task_blocks(self, task_id: bytes) -> list[tuple[int, bytes]]:
        """(height, hash) of the canonical blocks that touch a task, by height."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    # Conveniences built on the primitives -----------------------------------------------
    def has_block(self, block_hash: bytes) -> bool:
        return self.get_block(block_hash) is not None

    def get_header(self, block_hash: bytes) -> BlockHeader | None:
        block = self.get_block(block_hash)
        return block.header if block is not None else None

    def head(self) -> BlockHeader:
        header = self.get_header(self.head_hash())
        if header is None:
            raise StoreError("head block missing from store")
        return header

    def head_state(self) -> State:
        return self.get_state(self.head_hash())

    def block_at(self, height: int) -> Block | None:
        found = self.canonical_hash(height)
        return self.get_block(found) if found is not None else None

    def locator(self) -> list[bytes]:
        """Hashes back from the head: the last 10 one by one, then doubling steps, then genesis."""
        hashes: list[bytes] = []
        height, step = self.head().height, 1
        while height > 0:
            found = self.canonical_hash(height)
            if found is not None:
                hashes.append(found)
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self.genesis_hash)
        return hashes

    def _check_parent(self, block: Block) -> None:
        if not self.has_block(block.parent):
            raise StoreError(f"parent {block.parent.hex()} of block {block.hash.hex()} not stored")


class MemoryChainStore(ChainStore):
    """Everything in dicts: fast, gone at exit."""

    def __init__(self, genesis: Genesis) -> None:
        block = genesis.block()
        self._genesis = block.hash
        self._blocks: dict[bytes, Block] = {block.hash: block}
        self._states: dict[bytes, State] = {block.hash: genesis.state()}
        self._receipts: dict[bytes, bytes] = {block.hash: b""}
        self._canonical: list[bytes] = [block.hash]
        self._task_blocks: dict[bytes, list[bytes]] = {}
        self._sv_owner: dict[bytes, bytes] = {}

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis

    def put_block(self, block: Block, state: State, *, receipt: bytes = b"") -> None:
        if block.hash in self._blocks:
            return
        self._check_parent(block)
        self._blocks[block.hash] = block
        self._states[block.hash] = state
        self._receipts[block.hash] = receipt
        touched, submitted = task_touches(block, self._sv_owner.get)
        self._sv_owner.update(submitted)
        for task_id in touched:
            self._task_blocks.setdefault(task_id, []).append(block.hash)

    def set_head(self, block_hash: bytes) -> None:
        block = self._blocks.get(block_hash)
        if block is None:
            raise StoreError(f"cannot make unknown block {block_hash.hex()} the head")
        chain = [block_hash]
        while block.height > 0:
            block = self._blocks[block.parent]
            chain.append(block.hash)
        self._canonical = chain[::-1]

    def get_block(self, block_hash: bytes) -> Block | None:
        return self._blocks.get(block_hash)

    def get_receipt(self, block_hash: bytes) -> bytes | None:
        return self._receipts.get(block_hash)

    def get_state(self, block_hash: bytes) -> State:
        try:
            return self._states[block_hash]
        except KeyError:
            raise StoreError(f"no state for block {block_hash.hex()}") from None

    def head_hash(self) -> bytes:
        return self._canonical[-1]

    def canonical_hash(self, height: int) -> bytes | None:
        return self._canonical[height] if 0 <= height < len(self._canonical) else None

    def task_blocks(self, task_id: bytes) -> list[tuple[int, bytes]]:
        found = [(self._blocks[h].height, h) for h in self._task_blocks.get(task_id, [])]
        return sorted((height, h) for height, h in found if self.canonical_hash(height) == h)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY, parent BLOB NOT NULL, height INTEGER NOT NULL,
    header BLOB NOT NULL, data BLOB NOT NULL, receipt BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS states (
    hash BLOB PRIMARY KEY, full INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS canonical (height INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS task_blocks (
    task_id BLOB NOT NULL, hash BLOB NOT NULL, height INTEGER NOT NULL,
    PRIMARY KEY (task_id, hash));
CREATE TABLE IF NOT EXISTS sv_tasks (sv_task_id BLOB PRIMARY KEY, task_id BLOB NOT NULL);
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
    """A SQLite file; one transaction per block. Safe to call from several threads."""

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
                self._db.execute("INSERT INTO canonical VALUES (0, ?)", (block.hash,))
                self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (block.hash,))
                self._db.execute("INSERT INTO meta VALUES ('head', ?)", (block.hash,))
                self._db.execute("INSERT INTO meta VALUES ('task_index', 1)")
        elif bytes(row[0]) != block.hash:
            raise StoreError(
                f"{self.path} belongs to another network (genesis {bytes(row[0]).hex()[:16]}, "
                f"configured {block.hash.hex()[:16]})"
            )
        self._genesis = block.hash
        if self._db.execute("SELECT 1 FROM meta WHERE key='task_index'").fetchone() is None:
            self._build_task_index()

    def _build_task_index(self) -> None:
        """Index the blocks of a store written before the task index existed (once)."""
        with self._tx():
            rows = self._db.execute("SELECT data FROM blocks ORDER BY height").fetchall()
            for (data,) in rows:
                try:
                    self._index_tasks(Block.decode(bytes(data)))
                except DecodeError as exc:
                    raise StoreError(f"corrupt block in {self.path}: {exc}") from None
            self._db.execute("INSERT INTO meta VALUES ('task_index', 1)")

    def _sv_owner(self, sv_task_id: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT task_id FROM sv_tasks WHERE sv_task_id=?", (sv_task_id,)
        ).fetchone()
        return bytes(row[0]) if row is not None else None

    def _index_tasks(self, block: Block) -> None:
        """Inside a transaction: record which tasks ``block`` touches."""
        touched, submitted = task_touches(block, self._sv_owner)
        self._db.executemany("INSERT OR IGNORE INTO sv_tasks VALUES (?,?)", list(submitted.items()))
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
    def put_block(self, block: Block, state: State, *, receipt: bytes = b"") -> None:
        if self.has_block(block.hash):
            return
        self._check_parent(block)
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
            self._db.execute("INSERT INTO states VALUES (?,?,?)", (block.hash, int(full), data))
            self._index_tasks(block)
        self._remember(block.hash, state)

    @_serialized
    def set_head(self, block_hash: bytes) -> None:
        row = self._db.execute("SELECT height FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        if row is None:
            raise StoreError(f"cannot make unknown block {block_hash.hex()} the head")
        height = row[0]
        with self._tx():
            self._db.execute("DELETE FROM canonical WHERE height > ?", (height,))
            cursor, h = block_hash, height
            while True:
                current = self.canonical_hash(h)
                if current == cursor:
                    break
                self._db.execute("INSERT OR REPLACE INTO canonical VALUES (?,?)", (h, cursor))
                parent_row = self._db.execute(
                    "SELECT parent FROM blocks WHERE hash=?", (cursor,)
                ).fetchone()
                if h == 0:
                    break
                cursor, h = bytes(parent_row[0]), h - 1
            self._db.execute("UPDATE meta SET value=? WHERE key='head'", (block_hash,))

    @_serialized
    def get_block(self, block_hash: bytes) -> Block | None:
        row = self._db.execute("SELECT data FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        if row is None:
            return None
        try:
            return Block.decode(bytes(row[0]))
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
        row = self._db.execute("SELECT hash FROM canonical WHERE height=?", (height,)).fetchone()
        return bytes(row[0]) if row is not None else None

    @_serialized
    def task_blocks(self, task_id: bytes) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT t.height, t.hash FROM task_blocks t "
            "JOIN canonical c ON c.height = t.height AND c.hash = t.hash "
            "WHERE t.task_id=? ORDER BY t.height",
            (task_id,),
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
