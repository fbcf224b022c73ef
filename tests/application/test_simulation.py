"""``simulate`` with tiny settings on 4 validators: one that equivocates, or one that crashes.

Each run is a whole network in one process (real sockets, SQLite files, Tendermint, PoSap);
both check the report end to end: payouts add up to the escrow, every round settles, and every
honest validator committed the same block at every height.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from fedcoin.application.sim_consensus import agreement, percentile
from fedcoin.application.simulation import SimConfig, simulate
from fedcoin.consensus.tendermint_io import Timeouts
from fedcoin.data.genesis import DEFAULT_PARAMS

PNG = b"\x89PNG\r\n\x1a\n"
FAST = Timeouts(
    propose_ms=1500, propose_delta_ms=300, prevote_ms=600, prevote_delta_ms=200,
    precommit_ms=600, precommit_delta_ms=200,
)  # fmt: skip


def tiny(tmp_path: Path, **faults: int) -> SimConfig:
    return SimConfig(
        miners=4, clients=3, rounds=2, noisy=1, free_riders=0, epochs=1, out=tmp_path / "out",
        data_dir=tmp_path / "nodes", heartbeat_ms=300, timeouts=FAST, **faults,
    )  # fmt: skip


def assert_settled_and_agreed(report: dict[str, Any], cfg: SimConfig) -> None:
    # Payouts plus refunds equal the escrow, nothing is left in it, coins are conserved
    assert report["paid_out"] + report["publisher"]["refunded"] == report["escrow"]
    assert report["escrow_left"] == 0 and report["conserved"]
    # Every round settled (none voided) and paid its clients
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert all(not r["voided"] and sum(r["paid"]) > 0 for r in report["rounds"])
    # The validators of the one process computed each round's table once, not once each
    assert report["valuation"]["tables_computed"] == len(report["rounds"])
    # Every honest validator has the same committed block at every height
    consensus = report["consensus"]
    assert consensus["same_chain"] and consensus["split_heights"] == [] and report["same_head"]
    # One record per committed height, each with its round and a time to finality
    heights = consensus["heights"]
    assert [h["height"] for h in heights] == list(range(1, len(heights) + 1))
    assert len(heights) == len(report["blocks"]) - 1 >= 5
    assert all(h["round"] is not None and h["round"] >= 0 for h in heights)
    timed = [h["finality_ms"] for h in heights if h["finality_ms"] is not None]
    assert len(timed) >= len(heights) - 1 and min(timed) >= 0
    assert consensus["summary"]["finality_p50_ms"] <= consensus["summary"]["finality_p95_ms"]


async def test_a_byzantine_validator_is_caught_slashed_and_the_honest_chains_agree(
    tmp_path: Path,
) -> None:
    cfg = tiny(tmp_path, byzantine=1)
    text = io.StringIO()
    returned = await simulate(cfg, Console(file=text, width=160))
    report = json.loads((cfg.out / "report.json").read_text())
    assert report == json.loads(json.dumps(returned))
    assert_settled_and_agreed(report, cfg)
    consensus = report["consensus"]
    assert consensus["roles"] == ["honest", "byzantine", "honest", "honest"]
    # Its equivocations were included as evidence, against it alone, and slashed its bond
    byzantine = report["miners"][1]
    accused = {a for h in consensus["heights"] for a in h["evidence"]}
    assert accused == {byzantine["address"]}
    assert consensus["summary"]["evidence"] >= 1
    slashed = consensus["summary"]["slashed"]
    assert slashed > 0 and byzantine["bond"] == DEFAULT_PARAMS.min_bond - slashed
    assert all(m["bond"] == DEFAULT_PARAMS.min_bond for m in report["miners"] if m is not byzantine)
    for name in ("sv_per_round.png", "cumulative_payouts.png", "accuracy.png"):
        assert (cfg.out / name).read_bytes().startswith(PNG)
    printed = text.getvalue()
    assert "Consensus (Tendermint)" in printed and "Clients" in printed
    assert "committed the same block at every height: yes" in printed
    assert (cfg.data_dir / "miner0" / "chain.sqlite").exists()  # type: ignore[operator]


async def test_one_crashed_validator_of_four_leaves_every_round_settling(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, crashed=1, crash_at_height=2)
    report = await simulate(cfg, Console(file=io.StringIO(), width=160))
    assert_settled_and_agreed(report, cfg)
    consensus = report["consensus"]
    assert consensus["roles"] == ["honest", "honest", "honest", "crashed"]
    assert consensus["summary"]["evidence"] == 0
    # The crash was real: the crashed validator's turns to propose went to a later round
    assert consensus["summary"]["max_round"] >= 1
    assert any(h["round"] > 0 and h["height"] >= cfg.crash_at_height for h in consensus["heights"])


def test_agreement_names_every_height_where_two_honest_chains_differ() -> None:
    chains = {
        "a": {1: b"x", 2: b"y", 3: b"z"},
        "b": {1: b"x", 2: b"Y", 3: b"z"},
        "c": {1: b"x"},  # behind: compared only where it has committed
    }
    assert agreement([c.get for c in chains.values()], 3) == [2]
    assert agreement([chains["a"].get, chains["c"].get], 3) == []


def test_percentile_is_the_nearest_rank() -> None:
    values = [40, 10, 30, 20]
    assert [percentile(values, q) for q in (0.25, 0.5, 0.95, 1.0)] == [10, 20, 40, 40]
    assert percentile([], 0.5) is None
