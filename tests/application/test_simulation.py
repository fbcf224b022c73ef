"""``simulate`` with tiny settings: a consistent report and three plots."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from fedcoin.application.simulation import SimConfig, simulate

PNG = b"\x89PNG\r\n\x1a\n"


async def test_tiny_simulation_report_is_consistent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = SimConfig(miners=2, clients=3, rounds=2, noisy=1, free_riders=0, epochs=1, out=out,
                    data_dir=tmp_path / "nodes")  # fmt: skip
    text = io.StringIO()
    returned = await simulate(cfg, Console(file=text, width=140))
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(returned))
    # payouts plus refunds equal the escrow, and nothing is left in it
    assert report["paid_out"] + report["publisher"]["refunded"] == report["escrow"] == 2 * cfg.price
    assert report["escrow_left"] == 0
    assert report["conserved"] and report["same_head"]
    assert len(report["heads"]) == 2 and len(set(report["heads"].values())) == 1
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert [c["kind"] for c in report["clients"]] == ["honest", "honest", "noisy"]
    for c in report["clients"]:
        assert c["total_paid"] == sum(c["paid_per_round"]) == c["balance"]
    assert report["blocks"][0] and len(report["blocks"]) >= 5
    for name in ("sv_per_round.png", "cumulative_payouts.png", "accuracy.png"):
        assert (out / name).read_bytes().startswith(PNG)
    printed = text.getvalue()
    assert "miners on the same head: yes" in printed and "Clients" in printed
    assert (tmp_path / "nodes" / "miner0" / "chain.sqlite").exists()
