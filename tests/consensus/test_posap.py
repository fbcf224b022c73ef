"""The node's PoSap oracle: what its game cache is keyed by, and where estimates run."""

from __future__ import annotations

import os
from dataclasses import replace

from fedcoin.consensus.posap import LazyWorker, PosapVerifier, estimate_worker, game_key
from fedcoin.consensus.schedule import common_schedule
from fedcoin.consensus.table import table_estimate
from fedcoin.data.content import MemoryContent
from fedcoin.data.state import SvTask, TaskState
from tests.helpers import MINER, key, make_spec, make_updates, ref


def sv_task(n: int, tag: bytes = b"\x01") -> SvTask:
    task_id = tag * 32
    updates = tuple(
        replace(u, client_pubkey=key(f"c{i}").public)
        for i, u in enumerate(make_updates(task_id, 1, min(n, 8)))
    )
    return SvTask(tag * 32, task_id, 1, updates, ref("prev"), ref("global"), 10, 1, 0)


def test_games_are_cached_by_the_whole_round_not_its_id() -> None:
    # an FL server equivocating on two branches: same SV task id, another round's content
    task, spec = sv_task(4), make_spec()
    other_round = replace(task, global_model=ref("other global"))
    assert other_round.sv_task_id == task.sv_task_id
    assert game_key(task, spec) != game_key(other_round, spec)
    assert game_key(task, spec) != game_key(replace(task, updates=task.updates[:3]), spec)
    assert game_key(task, spec) != game_key(task, replace(spec, validation=ref("other val")))
    assert game_key(task, spec) == game_key(sv_task(4), make_spec())


def test_valuation_progress_does_not_rebuild_the_game() -> None:
    task, spec = sv_task(4), make_spec()
    progressed = replace(
        task, committee=((MINER.public, 5),), mix=b"\x02" * 32, commits=((MINER.public, b"c" * 32),)
    )
    assert game_key(progressed, spec) == game_key(task, spec)


class FakeGame:
    """What ``PosapVerifier.estimate`` reads of a game."""

    n = 14
    null_players = 1 << 3


def test_sampled_estimates_run_in_a_worker_process_with_the_same_result() -> None:
    schedule = common_schedule(FakeGame.n, 256, b"\x01" * 32, b"\x02" * 32)
    table = [bin(m).count("1") * 100 + m % 7 for m in schedule]
    spec = make_spec()
    task = TaskState(spec, bytes(20), 0, 0, 0, spec.model, 0)
    pool = estimate_worker()
    try:
        verifier = PosapVerifier(MemoryContent(), estimator=pool)
        verifier.game = lambda sv, task: FakeGame()  # type: ignore[assignment,method-assign,return-value]
        got = verifier.estimate(sv_task(4), task, schedule, table)
        assert got == table_estimate(FakeGame.n, schedule, table, FakeGame.null_players)
        assert got[3] == 0  # the null player
        assert pool.submit(os.getpid).result() != os.getpid()  # really another process
    finally:
        pool.shutdown()


def test_the_node_starts_its_estimate_process_only_when_needed() -> None:
    worker = LazyWorker()
    try:
        assert worker._pool is None  # a node that never settles a sampled table spawns nothing
        assert worker.submit(os.getpid).result() != os.getpid()
    finally:
        worker.shutdown()
    assert worker._pool is None
