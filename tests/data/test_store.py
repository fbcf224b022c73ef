"""Chain stores: one contract, run against the memory and the SQLite implementation."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fedcoin.consensus.rules import Applied
from fedcoin.contract.limits import MIN_COMMIT_BLOCKS, MIN_REVEAL_BLOCKS
from fedcoin.data.block import Block
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import State
from fedcoin.data.store import SNAPSHOT_EVERY, ChainStore, MemoryChainStore, SqliteChainStore
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.data.vote import CommitCertificate
from fedcoin.errors import StoreError
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    MINER,
    MINER2,
    MINER3,
    ChainBuilder,
    honest_table,
    make_genesis,
    make_publish,
    make_store,
    make_submit,
    make_transfer,
)

REPO = Path(__file__).resolve().parents[2]


Committed = tuple[Block, State, CommitCertificate]


def build_chain(genesis: Genesis, length: int, seed: int = 0) -> list[Committed]:
    builder = ChainBuilder(genesis)
    out = []
    for h in range(length):
        applied = builder.add([make_transfer(ALICE, BOB, 1 + seed + h, h)])
        out.append((builder.block, applied.state, builder.certificates[h + 1]))
    return out


def commit_all(store: ChainStore, chain: list[Committed]) -> None:
    for block, state, certificate in chain:
        store.commit(block, state, certificate)


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
        assert store.get_certificate(0) is None
        assert store.committed_range(0, 10) == []

    def test_commit_then_get(self, store: ChainStore) -> None:
        chain = build_chain(make_genesis(), 3)
        for block, state, certificate in chain:
            store.commit(block, state, certificate, receipt=b"r" + bytes([block.height]))
            assert store.head_hash() == block.hash  # committing moves the head
        for block, state, certificate in chain:
            assert store.get_block(block.hash) == block
            assert store.get_state(block.hash) == state
            assert store.get_receipt(block.hash) == b"r" + bytes([block.height])
            assert store.get_certificate(block.height) == certificate
            assert store.canonical_hash(block.height) == block.hash
            assert store.block_at(block.height) == block
        assert store.canonical_hash(4) is None and store.get_certificate(4) is None

    def test_committed_range_serves_blocks_with_certificates_by_height(
        self, store: ChainStore
    ) -> None:
        chain = build_chain(make_genesis(), 6)
        commit_all(store, chain)
        got = store.committed_range(2, 3)
        assert [(b.height, c.height) for b, c in got] == [(3, 3), (4, 4), (5, 5)]
        assert got == [(b, c) for b, _, c in chain[2:5]]
        assert store.committed_range(5, 10) == [(chain[5][0], chain[5][2])]
        assert store.committed_range(6, 10) == []
        assert len(store.committed_range(0, 100)) == 6

    def test_only_a_child_of_the_head_commits(self, store: ChainStore) -> None:
        genesis = make_genesis()
        main = build_chain(genesis, 2)
        side = build_chain(genesis, 1, seed=100)
        # Not the head's child: a gap, or a second block at a committed height
        with pytest.raises(StoreError, match="does not extend the head"):
            store.commit(*main[1])
        store.commit(*main[0])
        with pytest.raises(StoreError, match="does not extend the head"):
            store.commit(*side[0])
        with pytest.raises(StoreError, match="does not extend the head"):
            store.commit(*main[0])
        # A certificate naming another block
        with pytest.raises(StoreError, match="certificate"):
            store.commit(main[1][0], main[1][1], side[0][2])
        assert store.head_hash() == main[0][0].hash
        assert not store.has_block(side[0][0].hash)
        assert store.get_certificate(2) is None

    def test_unknown_lookups(self, store: ChainStore) -> None:
        assert store.get_block(b"\x09" * 32) is None
        assert store.get_receipt(b"\x09" * 32) is None
        with pytest.raises(StoreError):
            store.get_state(b"\x09" * 32)


#: A small committee keeps a round's valuation (one commit and one reveal each) cheap.
COMMITTEE = [MINER, MINER2, MINER3]
#: The shortest PoSap windows a spec may ask for: a void comes after 2 × (4 + 2) blocks.
SHORT = replace(DEFAULT_POSAP, commit_blocks=MIN_COMMIT_BLOCKS, reveal_blocks=MIN_REVEAL_BLOCKS)
#: A block with what its execution settled (the chain passes ``settled`` to ``commit``).
Executed = tuple[Block, State, CommitCertificate, tuple[bytes, ...]]


def task_genesis() -> Genesis:
    return make_genesis(validators=COMMITTEE)


@dataclass
class RecordingBuilder(ChainBuilder):
    """A ``ChainBuilder`` that keeps, per committed block, the tasks its execution settled."""

    settled: dict[int, tuple[bytes, ...]] = field(default_factory=dict)

    def add(self, *args: object, **kwargs: object) -> Applied:
        applied = super().add(*args, **kwargs)
        self.settled[self.header.height] = tuple(p.task_id for p in applied.payouts)
        return applied

    def executed(self) -> list[Executed]:
        return [
            (b, self.states[b.height], self.certificates[b.height], self.settled[b.height])
            for b in self.blocks[1:]
        ]


def task_chain(
    genesis: Genesis, *, tables: dict[PrivateKey, Sequence[int]] | None = None
) -> tuple[RecordingBuilder, bytes, bytes]:
    """Publish a task, then: a transfer, round 1, its valuation (an empty block while its
    schedule is drawn, the commits, the reveals that settle it), another transfer."""
    builder = RecordingBuilder(genesis)
    publish = make_publish(ALICE, 0, posap=SHORT)
    submit = make_submit(publish.id, 1, 0)
    builder.add([publish])
    builder.add([make_transfer(BOB, CAROL, 1, 0)])
    builder.add([submit])
    builder.value(submit.id, tables)
    builder.add([make_transfer(BOB, CAROL, 1, 1)])
    return builder, publish.id, submit.id


def commit_executed(store: ChainStore, chain: list[Executed]) -> None:
    for block, state, certificate, settled in chain:
        store.commit(block, state, certificate, settled=settled)


@pytest.fixture(params=["memory", "sqlite"])
def task_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChainStore]:
    made = make_store(request.param, tmp_path, task_genesis())
    yield made
    made.close()


class TestTaskIndex:
    """The blocks that touch a task, without walking the chain (GET /tasks/{id}): it publishes
    the task, submits a round, or its end-of-block step settles or voids one of its rounds."""

    def test_publish_submit_and_settle_are_indexed(self, task_store: ChainStore) -> None:
        builder, task_id, _ = task_chain(task_genesis())
        chain = builder.executed()
        (settling,) = [b.height for b, _, _, settled in chain if settled]
        assert settling > 4  # commits and reveals came in blocks of their own
        commit_executed(task_store, chain)
        assert task_store.task_blocks(task_id) == [
            (h, builder.blocks[h].hash) for h in (1, 3, settling)
        ]
        # The blocks carrying commits and reveals name only the SV task: not indexed
        assert task_store.task_blocks(b"\x07" * 32) == []

    def test_unsettled_round_lists_only_its_submission(self, task_store: ChainStore) -> None:
        builder, task_id, _ = task_chain(task_genesis())
        chain = builder.executed()
        settling = next(i for i, (_, _, _, settled) in enumerate(chain) if settled)
        commit_executed(task_store, chain[:settling])  # every block before the settling one
        assert [h for h, _ in task_store.task_blocks(task_id)] == [1, 3]

    def test_a_voided_round_indexes_its_voiding_block(self, task_store: ChainStore) -> None:
        """One member of three reveals (too little power) twice: retried, then voided."""
        genesis = task_genesis()
        builder = RecordingBuilder(genesis)
        publish = make_publish(ALICE, 0, posap=SHORT)
        submit = make_submit(publish.id, 1, 0)
        builder.add([publish])
        builder.add([submit])
        builder.add()  # block q+1 draws the schedule
        table = honest_table(builder.verifier, builder.state, submit.id)
        assert builder.value(submit.id, {MINER: table}).payouts == ()  # retried
        (payout,) = builder.value(submit.id, {MINER: table}).payouts
        assert payout.voided
        commit_executed(task_store, builder.executed())
        assert task_store.task_blocks(publish.id) == [
            (h, builder.blocks[h].hash) for h in (1, 2, builder.header.height)
        ]


def test_sqlite_rebuilds_states_across_snapshots(tmp_path: Path) -> None:
    genesis = make_genesis()
    chain = build_chain(genesis, SNAPSHOT_EVERY + 5)
    store = SqliteChainStore(tmp_path / "c.sqlite", genesis)
    commit_all(store, chain)
    store.close()
    reopened = SqliteChainStore(tmp_path / "c.sqlite", genesis)  # empty cache: rebuilt from disk
    for block, state, certificate in chain:
        assert reopened.get_state(block.hash) == state
        assert reopened.get_certificate(block.height) == certificate
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
        certificate = store.get_certificate(cursor.height)
        assert certificate is not None and certificate.block_id == cursor.hash
        parent = store.get_header(cursor.parent)
        assert parent is not None
        cursor = parent
    assert cursor.hash == store.genesis_hash
    state = store.head_state()
    assert state.supply == state.total_held()


class StoreEquivalence(RuleBasedStateMachine):
    """Random commits, refused commits and reopenings: the memory and SQLite stores answer every
    query alike."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fc-store-{os.getpid()}-{id(self)}"

    @initialize()
    def setup(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.genesis = make_genesis({ALICE: 10**9, MINER2: 10**9})
        self.mem = MemoryChainStore(self.genesis)
        self.db = self.tmp / "s.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.db) + suffix).unlink(missing_ok=True)
        self.sql = SqliteChainStore(self.db, self.genesis)
        self.builder = ChainBuilder(self.genesis)
        self.nonce = 0
        self.stored: list[bytes] = [self.genesis.block().hash]

    @rule(amount=st.integers(1, 1000), txs=st.integers(0, 2))
    def commit(self, amount: int, txs: int) -> None:
        batch = [make_transfer(ALICE, BOB, amount, self.nonce + i) for i in range(txs)]
        self.nonce += txs
        applied = self.builder.add(batch)
        certificate = self.builder.certificates[self.builder.block.height]
        for s in (self.mem, self.sql):
            s.commit(self.builder.block, applied.state, certificate)
        self.stored.append(self.builder.block.hash)

    @precondition(lambda self: len(self.stored) > 1)
    @rule()
    def recommit_is_refused(self) -> None:
        block = self.builder.block
        for s in (self.mem, self.sql):
            with pytest.raises(StoreError):
                s.commit(block, self.builder.state, self.builder.certificates[block.height])

    @rule()
    def reopen(self) -> None:
        self.sql.close()
        self.sql = SqliteChainStore(self.db, self.genesis)

    @invariant()
    def same_answers(self) -> None:
        if not hasattr(self, "mem"):
            return
        assert self.mem.head_hash() == self.sql.head_hash()
        height = self.mem.head().height
        for h in range(height + 2):
            assert self.mem.canonical_hash(h) == self.sql.canonical_hash(h)
            assert self.mem.get_certificate(h) == self.sql.get_certificate(h)
        assert self.mem.committed_range(max(height - 3, 0), 3) == self.sql.committed_range(
            max(height - 3, 0), 3
        )
        for block_hash in self.stored[-5:]:
            assert self.mem.get_state(block_hash) == self.sql.get_state(block_hash)
            assert self.mem.get_block(block_hash) == self.sql.get_block(block_hash)

    def teardown(self) -> None:
        if hasattr(self, "sql"):
            self.sql.close()


StoreEquivalence.TestCase.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None
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
