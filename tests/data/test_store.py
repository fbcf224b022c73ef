"""Chain stores: one contract, run against the memory and the SQLite implementation."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fedcoin.data.block import Block, PosapSection
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import State
from fedcoin.data.store import SNAPSHOT_EVERY, ChainStore, MemoryChainStore, SqliteChainStore
from fedcoin.errors import StoreError
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    MINER2,
    MINER3,
    ChainBuilder,
    make_genesis,
    make_publish,
    make_share,
    make_store,
    make_submit,
    make_transfer,
)

REPO = Path(__file__).resolve().parents[2]


def build_chain(genesis: Genesis, length: int, seed: int = 0) -> list[tuple[Block, State]]:
    builder = ChainBuilder(genesis)
    out = []
    for h in range(length):
        applied = builder.add([make_transfer(ALICE, BOB, 1 + seed + h, h)])
        out.append((builder.block, applied.state))
    return out


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChainStore]:
    made = make_store(request.param, tmp_path, make_genesis())
    yield made
    made.close()


class TestChainStoreContract:
    def test_starts_at_genesis(self, store: ChainStore) -> None:
        genesis = make_genesis()
        assert store.head_hash() == store.genesis_hash == genesis.block().hash
        assert store.head().height == 0
        assert store.head_state() == genesis.state()

    def test_put_then_get(self, store: ChainStore) -> None:
        chain = build_chain(make_genesis(), 3)
        for block, state in chain:
            store.put_block(block, state, receipt=b"r" + bytes([block.height]))
        for block, state in chain:
            assert store.get_block(block.hash) == block
            assert store.get_state(block.hash) == state
            assert store.get_receipt(block.hash) == b"r" + bytes([block.height])
        assert store.head().height == 0  # storing does not move the head

    def test_put_is_idempotent(self, store: ChainStore) -> None:
        block, state = build_chain(make_genesis(), 1)[0]
        store.put_block(block, state)
        store.put_block(block, state)
        assert store.get_block(block.hash) == block

    def test_orphan_is_refused(self, store: ChainStore) -> None:
        chain = build_chain(make_genesis(), 2)
        with pytest.raises(StoreError, match="not stored"):
            store.put_block(*chain[1])
        assert not store.has_block(chain[1][0].hash)

    def test_set_head_moves_canonical_chain(self, store: ChainStore) -> None:
        chain = build_chain(make_genesis(), 4)
        for block, state in chain:
            store.put_block(block, state)
        store.set_head(chain[-1][0].hash)
        assert store.head_hash() == chain[-1][0].hash
        for block, _ in chain:
            assert store.canonical_hash(block.height) == block.hash
            assert store.block_at(block.height) == block
        assert store.canonical_hash(5) is None

    def test_reorg_to_a_side_branch_and_back(self, store: ChainStore) -> None:
        genesis = make_genesis()
        main = build_chain(genesis, 4, seed=0)
        side = build_chain(genesis, 2, seed=100)
        for block, state in main + side:
            store.put_block(block, state)
        store.set_head(main[-1][0].hash)
        store.set_head(side[-1][0].hash)
        assert store.head_hash() == side[-1][0].hash
        assert store.canonical_hash(2) == side[1][0].hash
        assert store.canonical_hash(3) is None
        assert store.head_state() == side[-1][1]
        store.set_head(main[-1][0].hash)
        assert [store.canonical_hash(h) for h in range(1, 5)] == [b.hash for b, _ in main]
        assert store.head_state() == main[-1][1]

    def test_unknown_lookups(self, store: ChainStore) -> None:
        assert store.get_block(b"\x09" * 32) is None
        assert store.get_receipt(b"\x09" * 32) is None
        with pytest.raises(StoreError):
            store.get_state(b"\x09" * 32)
        with pytest.raises(StoreError):
            store.set_head(b"\x09" * 32)

    def test_locator_starts_at_head_and_ends_at_genesis(self, store: ChainStore) -> None:
        chain = build_chain(make_genesis(), 30)
        for block, state in chain:
            store.put_block(block, state)
        store.set_head(chain[-1][0].hash)
        locator = store.locator()
        assert locator[0] == chain[-1][0].hash
        assert locator[-1] == store.genesis_hash
        assert len(locator) < 20


def task_chain(genesis: Genesis) -> tuple[ChainBuilder, bytes, list[tuple[Block, State]]]:
    """Publish a task, then: a transfer, round 1, its settlement, another transfer."""
    builder = ChainBuilder(genesis)
    out = []
    publish = make_publish(ALICE, 0)
    submit = make_submit(publish.id, 1, 0)
    builder.verifier.true_sv[submit.id] = (3, 2, 1)
    shares = tuple(make_share(m, submit.id, (3, 2, 1)) for m in (MINER2, MINER3))
    steps: list[dict[str, object]] = [
        {"txs": [publish]},
        {"txs": [make_transfer(BOB, CAROL, 1, 0)]},
        {"txs": [submit]},
        {"posap": PosapSection(submit.id, shares)},
        {"txs": [make_transfer(BOB, CAROL, 1, 1)]},
    ]
    for step in steps:
        applied = builder.add(**step)
        out.append((builder.block, applied.state))
    return builder, publish.id, out


class TestTaskIndex:
    """The blocks that touch a task, without walking the chain (GET /tasks/{id})."""

    def test_publish_submit_and_settle_are_indexed(self, store: ChainStore) -> None:
        _, task_id, chain = task_chain(make_genesis())
        for block, state in chain:
            store.put_block(block, state)
        store.set_head(chain[-1][0].hash)
        assert store.task_blocks(task_id) == [(1, chain[0][0].hash), (3, chain[2][0].hash),
                                              (4, chain[3][0].hash)]  # fmt: skip
        assert store.task_blocks(b"\x07" * 32) == []

    def test_only_canonical_blocks_are_listed(self, store: ChainStore) -> None:
        genesis = make_genesis()
        _, task_id, chain = task_chain(genesis)
        side = build_chain(genesis, 5, seed=100)
        for block, state in chain + side:
            store.put_block(block, state)
        store.set_head(chain[-1][0].hash)
        assert len(store.task_blocks(task_id)) == 3
        store.set_head(side[-1][0].hash)  # a reorg away from the task
        assert store.task_blocks(task_id) == []
        store.set_head(chain[-1][0].hash)
        assert len(store.task_blocks(task_id)) == 3

    def test_unsettled_round_lists_only_its_submission(self, store: ChainStore) -> None:
        _, task_id, chain = task_chain(make_genesis())
        for block, state in chain[:3]:
            store.put_block(block, state)
        store.set_head(chain[2][0].hash)
        assert [h for h, _ in store.task_blocks(task_id)] == [1, 3]


def test_sqlite_indexes_a_store_written_before_the_index(tmp_path: Path) -> None:
    genesis = make_genesis()
    _, task_id, chain = task_chain(genesis)
    store = SqliteChainStore(tmp_path / "chain.sqlite", genesis)
    for block, state in chain:
        store.put_block(block, state)
    store.set_head(chain[-1][0].hash)
    expected = store.task_blocks(task_id)
    store.close()
    # What an older version wrote: no index tables, no marker.
    db = sqlite3.connect(tmp_path / "chain.sqlite")
    db.executescript(
        "DROP TABLE task_blocks; DROP TABLE sv_tasks; DELETE FROM meta WHERE key='task_index';"
    )
    db.close()
    reopened = SqliteChainStore(tmp_path / "chain.sqlite", genesis)
    assert reopened.task_blocks(task_id) == expected and len(expected) == 3
    reopened.close()


def test_sqlite_rebuilds_states_across_snapshots(tmp_path: Path) -> None:
    genesis = make_genesis()
    chain = build_chain(genesis, SNAPSHOT_EVERY + 5)
    store = SqliteChainStore(tmp_path / "c.sqlite", genesis)
    for block, state in chain:
        store.put_block(block, state)
    store.set_head(chain[-1][0].hash)
    store.close()
    reopened = SqliteChainStore(tmp_path / "c.sqlite", genesis)  # empty cache: rebuilt from disk
    for block, state in chain:
        assert reopened.get_state(block.hash) == state
    assert reopened.head_hash() == chain[-1][0].hash


def test_sqlite_refuses_another_network(tmp_path: Path) -> None:
    SqliteChainStore(tmp_path / "c.sqlite", make_genesis()).close()
    with pytest.raises(StoreError, match="another network"):
        SqliteChainStore(tmp_path / "c.sqlite", make_genesis({CAROL: 5}))


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SqliteChainStore(path, make_genesis())


@pytest.mark.parametrize("acks", [3, 17, 40])
def test_sqlite_survives_sigkill_mid_write(tmp_path: Path, acks: int) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.data.crash_writer", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    acknowledged = []
    try:
        for line in proc.stdout:
            acknowledged.append(int(line.split()[1]))
            if len(acknowledged) >= acks:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(acknowledged) == acks
    store = SqliteChainStore(path, make_genesis())
    head = store.head()
    assert head.height >= acknowledged[-1]
    # Every canonical block is present, linked to its parent, and its state matches its root.
    cursor = head
    while cursor.height > 0:
        assert store.canonical_hash(cursor.height) == cursor.hash
        assert store.get_state(cursor.hash).root() == cursor.state_root
        parent = store.get_header(cursor.parent)
        assert parent is not None
        cursor = parent
    assert cursor.hash == store.genesis_hash
    # The store accepts new blocks on top of the recovered head.
    state = store.head_state()
    assert state.supply == state.total_held()


class StoreEquivalence(RuleBasedStateMachine):
    """Random puts and head moves: the memory and SQLite stores answer every query alike."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fc-store-{os.getpid()}-{id(self)}"

    @initialize()
    def setup(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        genesis = make_genesis({ALICE: 10**9, MINER2: 10**9})
        self.mem = MemoryChainStore(genesis)
        db = self.tmp / "s.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        self.sql = SqliteChainStore(db, genesis)
        self.builders = [ChainBuilder(genesis)]
        self.nonces = [0]
        self.stored: list[bytes] = [genesis.block().hash]

    @rule(branch=st.integers(0, 3), amount=st.integers(1, 1000))
    def extend(self, branch: int, amount: int) -> None:
        b = branch % len(self.builders)
        builder = self.builders[b]
        applied = builder.add([make_transfer(ALICE, BOB, amount, self.nonces[b])])
        self.nonces[b] += 1
        for s in (self.mem, self.sql):
            s.put_block(builder.block, applied.state)
        self.stored.append(builder.block.hash)

    @precondition(lambda self: len(self.builders) < 4)
    @rule(branch=st.integers(0, 3))
    def fork(self, branch: int) -> None:
        src = self.builders[branch % len(self.builders)]
        clone = ChainBuilder(src.genesis)
        clone.block, clone.state, clone.now = src.block, src.state, src.now + 7
        self.builders.append(clone)
        self.nonces.append(self.nonces[branch % len(self.nonces)])

    @rule(pick=st.integers(0, 10_000))
    def move_head(self, pick: int) -> None:
        target = self.stored[pick % len(self.stored)]
        for s in (self.mem, self.sql):
            s.set_head(target)

    @invariant()
    def same_answers(self) -> None:
        if not hasattr(self, "mem"):
            return
        assert self.mem.head_hash() == self.sql.head_hash()
        height = self.mem.head().height
        for h in range(height + 2):
            assert self.mem.canonical_hash(h) == self.sql.canonical_hash(h)
        for block_hash in self.stored[-5:]:
            assert self.mem.get_state(block_hash) == self.sql.get_state(block_hash)
            assert self.mem.get_block(block_hash) == self.sql.get_block(block_hash)

    def teardown(self) -> None:
        if hasattr(self, "sql"):
            self.sql.close()


StoreEquivalence.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
test_memory_store_equals_sqlite_store = StoreEquivalence.TestCase


class _CountingConnection:
    """Wraps a sqlite3 connection and records how many threads are inside it at once."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.inside, self.most, self.lock = db, 0, 0, threading.Lock()

    def execute(self, *args: object) -> object:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            time.sleep(0.0005)  # widen the window two threads would share
            rows = self.db.execute(*args).fetchall()  # type: ignore[arg-type]
            return _Rows(rows)
        finally:
            with self.lock:
                self.inside -= 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


class _Rows:
    def __init__(self, rows: list[object]) -> None:
        self.rows = rows

    def fetchone(self) -> object:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[object]:
        return self.rows


def test_sqlite_store_is_used_by_one_thread_at_a_time(tmp_path: Path) -> None:
    """The event loop and worker threads share one connection; two threads inside it at once
    crashed a node's process in libsqlite3 (seen in the kernel log), so every call is serialized."""
    genesis = make_genesis()
    store = SqliteChainStore(tmp_path / "chain.sqlite", genesis)
    counting = _CountingConnection(store._db)
    store._db = counting  # type: ignore[assignment]
    head = store.head_hash()

    def reader() -> None:
        for _ in range(40):
            store.get_header(head)
            store.has_block(head)
            store.canonical_hash(0)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store._db = counting.db
    store.close()
    assert counting.most == 1
