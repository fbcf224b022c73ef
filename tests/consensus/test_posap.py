"""PoSap shares: honest shares verify; every kind of falsification is caught."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from fedcoin.consensus.posap import (
    aggregate_shares,
    checked_positions,
    game_key,
    make_share,
    plan,
    verify_share,
)
from fedcoin.consensus.shapley import (
    ESTIMATOR_EXACT,
    ESTIMATOR_STRATIFIED,
    border,
    fixed_point_estimate,
)
from fedcoin.data.block import Share
from fedcoin.data.state import SvTask
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.errors import (
    EstimateMismatch,
    EstimatorMismatch,
    ScheduleMismatch,
    TableEntryMismatch,
)
from tests.helpers import CLIENTS, MINER, MINER2, key, make_spec, make_updates, ref

PARENT = b"\x11" * 32


class SmoothGame:
    """A deterministic FL-like game: accuracy saturating in the members' data; counts evals."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.null_players = 0
        self.calls = 0
        self.memo: dict[int, int] = {}

    def value(self, mask: int) -> int:
        data = sum(1 + (i % 3) for i in range(self.n) if mask >> i & 1)
        return int(300 * (1 - math.exp(-data / 5))) + (mask % 3)

    def utilities(self, masks):
        out = []
        for m in masks:
            if m not in self.memo:
                self.calls += 1
                self.memo[m] = self.value(m)
            out.append(self.memo[m])
        return out


def sv_task(n: int, tag: bytes = b"\x01") -> SvTask:
    task_id = tag * 32
    updates = tuple(
        replace(u, client_pubkey=key(f"c{i}").public)
        for i, u in enumerate(make_updates(task_id, 1, min(n, 8)))
    )
    updates = updates + tuple(
        replace(updates[0], client_pubkey=key(f"x{i}").public) for i in range(n - len(updates))
    )
    return SvTask(tag * 32, task_id, 1, updates, ref("prev"), ref("global"), 10, 1, 0)


def falsify(share: Share, positions: list[int], signer=MINER, delta: int = 5) -> Share:
    table = list(share.table)
    for p in positions:
        mask, value = table[p]
        table[p] = (mask, value + delta)
    n = len(share.estimate)
    forged = replace(share, table=tuple(table), estimate=fixed_point_estimate(n, table))
    return forged.signed(signer)


@pytest.mark.parametrize("n", [4, 10])
def test_exact_share_verifies(n: int) -> None:
    game, task = SmoothGame(n), sv_task(n)
    share = make_share(task, DEFAULT_POSAP, game, MINER)
    assert share.estimator == ESTIMATOR_EXACT and len(share.table) == 1 << n
    verify_share(share, task, DEFAULT_POSAP, SmoothGame(n), PARENT)


def test_sampled_share_verifies_and_costs_under_ten_percent() -> None:
    n = 12
    task = sv_task(n)
    maker, checker = SmoothGame(n), SmoothGame(n)
    share = make_share(task, DEFAULT_POSAP, maker, MINER)
    assert share.estimator == ESTIMATOR_STRATIFIED
    assert len(share.table) == maker.calls == DEFAULT_POSAP.budget
    verify_share(share, task, DEFAULT_POSAP, checker, PARENT)
    assert checker.calls / maker.calls <= 0.10
    # a second share of the same task re-uses the border evaluations
    before = checker.calls
    verify_share(
        make_share(task, DEFAULT_POSAP, SmoothGame(n), MINER2), task, DEFAULT_POSAP, checker, PARENT
    )
    assert checker.calls - before < len(border(n)) + DEFAULT_POSAP.spot_checks


def test_two_miners_sample_different_coalitions() -> None:
    task = sv_task(12)
    a = make_share(task, DEFAULT_POSAP, SmoothGame(12), MINER)
    b = make_share(task, DEFAULT_POSAP, SmoothGame(12), MINER2)
    assert [m for m, _ in a.table] != [m for m, _ in b.table]


def test_wrong_estimator_is_rejected() -> None:
    task = sv_task(4)
    share = make_share(task, DEFAULT_POSAP, SmoothGame(4), MINER)
    with pytest.raises(EstimatorMismatch):
        verify_share(
            replace(share, estimator=ESTIMATOR_STRATIFIED),
            task,
            DEFAULT_POSAP,
            SmoothGame(4),
            PARENT,
        )


@pytest.mark.parametrize("change", ["drop", "extra", "reorder", "other-seed"])
def test_wrong_schedule_is_rejected(change: str) -> None:
    n = 12
    task = sv_task(n)
    share = make_share(task, DEFAULT_POSAP, SmoothGame(n), MINER)
    table = list(share.table)
    if change == "drop":
        table = table[:-1]
    elif change == "extra":
        used = {m for m, _ in table}
        table.append((next(m for m in range(1 << n) if m not in used), 1))
    elif change == "reorder":
        table[-1], table[-2] = table[-2], table[-1]
    else:  # a miner that picked coalitions with another miner's seed
        table = list(make_share(task, DEFAULT_POSAP, SmoothGame(n), MINER2).table)
    forged = replace(share, table=tuple(table), estimate=fixed_point_estimate(n, table)).signed(
        MINER
    )
    with pytest.raises(ScheduleMismatch):
        verify_share(forged, task, DEFAULT_POSAP, SmoothGame(n), PARENT)


def test_estimate_not_matching_table_is_rejected() -> None:
    task = sv_task(5)
    share = make_share(task, DEFAULT_POSAP, SmoothGame(5), MINER)
    inflated = replace(share, estimate=(share.estimate[0] + 1, *share.estimate[1:])).signed(MINER)
    with pytest.raises(EstimateMismatch):
        verify_share(inflated, task, DEFAULT_POSAP, SmoothGame(5), PARENT)


@pytest.mark.parametrize("n", [6, 12])
def test_every_falsified_border_entry_is_caught(n: int) -> None:
    task = sv_task(n)
    share = make_share(task, DEFAULT_POSAP, SmoothGame(n), MINER)
    position = {m: i for i, (m, _) in enumerate(share.table)}
    for mask in border(n):
        forged = falsify(share, [position[mask]], delta=DEFAULT_POSAP.tolerance + 1)
        with pytest.raises(TableEntryMismatch):
            verify_share(forged, task, DEFAULT_POSAP, SmoothGame(n), PARENT)


def test_any_deviation_is_a_mismatch_whatever_the_tolerance() -> None:
    # U is exact, so the spec's tolerance is ignored: one sample off on one entry is forgery
    task = sv_task(6)
    params = replace(DEFAULT_POSAP, tolerance=1000)
    share = make_share(task, params, SmoothGame(6), MINER)
    nudged = falsify(share, [0], delta=1)
    with pytest.raises(TableEntryMismatch):
        verify_share(nudged, task, params, SmoothGame(6), PARENT)


def test_bad_entries_are_caught_before_the_estimate_is_recomputed() -> None:
    # the cheap entry checks run first: a share with a forged entry AND a wrong estimate
    # fails on the entry
    task = sv_task(6)
    share = make_share(task, DEFAULT_POSAP, SmoothGame(6), MINER)
    forged = falsify(share, [0], delta=1)
    forged = replace(forged, estimate=tuple(e + 1 for e in forged.estimate))
    with pytest.raises(TableEntryMismatch):
        verify_share(forged, task, DEFAULT_POSAP, SmoothGame(6), PARENT)


def non_border(share: Share, n: int) -> list[int]:
    fixed = set(checked_positions(share, n, PARENT, 0))
    return [i for i in range(len(share.table)) if i not in fixed]


def ten_percent_lies(candidates: list[int], trial: int) -> list[int]:
    """A different 10 % of the non-border entries for each trial."""
    offset = (trial * 7919) % len(candidates)
    return [candidates[(offset + j * 10) % len(candidates)] for j in range(len(candidates) // 10)]


def test_ten_percent_falsified_entries_are_caught_end_to_end() -> None:
    n = 12
    task = sv_task(n)
    honest = make_share(task, DEFAULT_POSAP, SmoothGame(n), MINER)
    checker = SmoothGame(n)  # shared memo: re-evaluations are cached across trials
    trials, caught = 0, 0
    for lie_set in range(40):
        forged = falsify(honest, ten_percent_lies(non_border(honest, n), lie_set))
        for parent in range(10):  # the same lie meets different parent blocks
            trials += 1
            try:
                verify_share(forged, task, DEFAULT_POSAP, checker, bytes([lie_set, parent]) * 16)
            except TableEntryMismatch:
                caught += 1
    # 400 runs through the whole verification path; the ≥ 99 % claim itself is checked exactly
    # below and over 5 000 draws (a 99 % bound on 400 runs would sit inside the noise).
    assert caught / trials >= 0.98, f"caught {caught} of {trials}"


def test_default_spot_checks_catch_a_ten_percent_lie_with_99_percent_probability() -> None:
    n = 12
    honest = make_share(sv_task(n), DEFAULT_POSAP, SmoothGame(n), MINER)
    entries = len(non_border(honest, n))
    lies = entries // 10
    # the chance that every spot check lands on an honest entry (draws without replacement)
    missed = math.comb(entries - lies, DEFAULT_POSAP.spot_checks) / math.comb(
        entries, DEFAULT_POSAP.spot_checks
    )
    assert 1 - missed >= 0.99


def test_spot_checks_hit_a_ten_percent_lie_99_percent_of_the_time() -> None:
    # The event verify_share's last step detects: a spot-checked position is a falsified one.
    n = 12
    honest = make_share(sv_task(n), DEFAULT_POSAP, SmoothGame(n), MINER)
    candidates = non_border(honest, n)
    trials, caught = 5000, 0
    for trial in range(trials):
        lies = set(ten_percent_lies(candidates, trial))
        picked = checked_positions(honest, n, trial.to_bytes(32, "big"), DEFAULT_POSAP.spot_checks)
        caught += bool(lies.intersection(picked))
    assert caught / trials >= 0.99, f"caught {caught} of {trials}"


def test_spot_positions_depend_on_parent_and_skip_border() -> None:
    share = make_share(sv_task(12), DEFAULT_POSAP, SmoothGame(12), MINER)
    a = checked_positions(share, 12, b"\x01" * 32, 44)
    b = checked_positions(share, 12, b"\x02" * 32, 44)
    nb = len(border(12))
    assert a[:nb] == b[:nb] and a[nb:] != b[nb:]
    assert len(set(a)) == len(a) == nb + 44


def test_plan_is_exact_up_to_n_exact_max() -> None:
    assert plan(10, DEFAULT_POSAP, b"s") == (ESTIMATOR_EXACT, list(range(1024)))
    assert plan(11, DEFAULT_POSAP, b"s")[0] == ESTIMATOR_STRATIFIED


def test_aggregate_is_coordinate_median() -> None:
    shares = [
        replace(make_share(sv_task(3), DEFAULT_POSAP, SmoothGame(3), MINER), estimate=e)
        for e in ((1, 5, 9), (2, 4, 100), (3, 6, -7))
    ]
    assert aggregate_shares(shares) == (2, 5, 9)
    assert aggregate_shares(shares[:2]) == (1, 4, 54)
    assert CLIENTS


def test_games_are_cached_by_the_whole_sv_task_not_its_id() -> None:
    # an FL server equivocating on two branches: same SV task id, another round's content
    task, spec = sv_task(4), make_spec()
    other_round = replace(task, global_model=ref("other global"))
    assert other_round.sv_task_id == task.sv_task_id
    assert game_key(task, spec) != game_key(other_round, spec)
    assert game_key(task, spec) != game_key(task, replace(spec, validation=ref("other val")))
    assert game_key(task, spec) == game_key(sv_task(4), make_spec())
