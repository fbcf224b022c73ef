"""The simulation's outputs: ``report.json``, three PNG plots and the final rich tables.

``build_report`` gathers, after the run, the clients' Shapley values and payouts, what the FL
server, the validators and the publisher earned, the coin balance, and the consensus record of
``sim_consensus`` (per height: round, time to finality, evidence, stake slashed; whether every
honest validator committed the same block at every height). The tables summarise it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedcoin.application.fl_server import FLServer, RoundReport
from fedcoin.application.full_node import FullNode
from fedcoin.application.sim_kinds import Roster
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.shapley import SV_SCALE
from fedcoin.data.genesis import UNIT
from fedcoin.data.keys import PrivateKey, address_of, format_address


def build_report(
    config: dict[str, Any], nodes: list[FullNode], server: FLServer, reports: list[RoundReport],
    roster: Roster, server_key: PrivateKey, escrow: int, consensus: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The whole run as JSON-ready data; balances are read from the first live honest node."""
    live = [i for i, role in enumerate(consensus["roles"]) if role == "honest"]
    node = nodes[live[0]]
    state = node.chain.head_state()
    clients: list[dict[str, Any]] = []
    for i, (shard, key) in enumerate(zip(roster.shards, roster.keys, strict=True)):
        clients.append({
            "index": i, "address": format_address(key.address), "kind": roster.kinds[i],
            "samples": len(shard.data), "claimed": roster.claims[i],
            "sv_per_round": [r.sv[i] / SV_SCALE if r.sv else None for r in reports],
            "paid_per_round": [r.paid[i] if r.paid else 0 for r in reports],
            "total_paid": sum(r.paid[i] if r.paid else 0 for r in reports),
            "balance": state.balance(key.address),
        })  # fmt: skip
    refund = sum(r.refund for r in reports)
    server_pay = sum(r.server for r in reports)
    income = pool_income(node.chain, reports)
    earned = [income.get(n.key.address, 0) for n in nodes]
    validators = [
        {"address": format_address(n.key.address), "role": role, "earned": e,
         "balance": state.balance(n.key.address),
         "bond": stake.bond if (stake := state.stakes.get(n.key.public)) else 0}
        for n, e, role in zip(nodes, earned, consensus["roles"], strict=True)
    ]  # fmt: skip
    paid_clients = sum(sum(r.paid) for r in reports)
    paid_out = paid_clients + server_pay + sum(earned)
    heads = {format_address(n.key.address): n.chain.head.hash.hex() for n in nodes}
    canonical = node.chain.store.canonical_hash
    blocks = [h.hex() for h in map(canonical, range(node.chain.head.height + 1)) if h is not None]
    return {
        "config": config,
        "task_id": server.task_id.hex() if server.task_id else None,
        "escrow": escrow,
        "rounds": [asdict(r) for r in reports],
        "accuracy": [r.accuracy for r in reports],
        "clients": clients,
        "server": {"address": format_address(server_key.address), "earned": server_pay},
        "miners": validators,
        "publisher": {"address": format_address(server_key.address), "refunded": refund},
        "paid_out": paid_out,
        "escrow_left": state.tasks[server.task_id].escrow if server.task_id else None,
        "conserved": state.supply == state.total_held(),
        "consensus": consensus,
        "heads": heads,
        "same_head": consensus["same_chain"],
        "blocks": blocks,
    }


def pool_income(chain: Chain, reports: list[RoundReport]) -> dict[bytes, int]:
    """What each validator earned from the rounds' miners' pools (its share, plus the remainder
    when it created the settling block), read from the settling blocks' receipts. A validator's
    balance may hold more: its part of the slashes in the blocks it created."""
    income: dict[bytes, int] = {}
    for height in sorted({r.block_height for r in reports}):  # one receipt per block
        block = chain.store.block_at(height)
        if block is None:
            continue
        for payout in chain.payouts_of(block.hash):  # a block may settle several rounds
            for address, paid in payout.miners:
                income[address] = income.get(address, 0) + paid
            creator = address_of(block.header.proposer_pubkey)
            income[creator] = income.get(creator, 0) + payout.proposer
    return income


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    rounds = [r["round"] for r in report["rounds"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in report["clients"]:
        ax.plot(rounds, [v if v is not None else float("nan") for v in c["sv_per_round"]],
                marker="o", label=f"{c['index']} {c['kind']}")  # fmt: skip
    ax.set(
        xlabel="round",
        ylabel="Shapley value (U units: 256 per validation sample)",
        title="SV per client per round",
    )
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(out / "sv_per_round.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in report["clients"]:
        total, series = 0, []
        for paid in c["paid_per_round"]:
            total += paid
            series.append(total / UNIT)
        ax.plot(rounds, series, marker="o", label=f"{c['index']} {c['kind']}")
    ax.set(xlabel="round", ylabel="FC", title="Cumulative payouts per client")
    ax.set_xticks(rounds)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(out / "cumulative_payouts.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rounds, report["accuracy"], marker="o")
    ax.set(
        xlabel="round",
        ylabel="accuracy",
        title="Global model accuracy (validation set)",
        ylim=(0, 1),
    )
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)


def print_tables(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="Clients")
    for col in (
        "#",
        "kind",
        "samples",
        *(f"SV r{r['round']}" for r in report["rounds"]),
        "paid FC",
    ):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for c in report["clients"]:
        svs = [f"{v:.0f}" if v is not None else "–" for v in c["sv_per_round"]]
        table.add_row(
            str(c["index"]), c["kind"], str(c["samples"]), *svs, f"{c['total_paid'] / UNIT:.3f}"
        )
    console.print(table)
    others = Table(title="Everyone else")
    others.add_column("who")
    others.add_column("address")
    others.add_column("earned FC", justify="right")
    others.add_column("bond FC", justify="right")
    others.add_row(
        "FL server", report["server"]["address"], f"{report['server']['earned'] / UNIT:.3f}", ""
    )
    for i, m in enumerate(report["miners"]):
        who = f"validator {i}" + (f" ({m['role']})" if m["role"] != "honest" else "")
        others.add_row(who, m["address"], f"{m['earned'] / UNIT:.3f}", f"{m['bond'] / UNIT:g}")
    others.add_row(
        "publisher refund",
        report["publisher"]["address"],
        f"{report['publisher']['refunded'] / UNIT:.3f}",
        "",
    )
    console.print(others)
    print_consensus(console, report["consensus"])
    accuracy = ", ".join(f"{a:.3f}" for a in report["accuracy"])
    console.print(f"global accuracy per round: {accuracy}")
    console.print(
        f"escrow {report['escrow'] / UNIT:g} FC = paid {report['paid_out'] / UNIT:.6f} + refunded "
        f"{report['publisher']['refunded'] / UNIT:.6f}; coins conserved: {report['conserved']}"
    )
    consensus = report["consensus"]
    honest = sum(role != "byzantine" for role in consensus["roles"])
    verdict = "[green]yes[/green]" if consensus["same_chain"] else "[red]NO[/red]"
    console.print(
        f"all {honest} honest validators committed the same block at every height: {verdict}"
        + ("" if consensus["same_chain"] else f" (split at heights {consensus['split_heights']})")
    )
    console.print(f"report and plots written to {report['config']['out']}")


def print_consensus(console: Console, consensus: dict[str, Any]) -> None:
    """The consensus summary, then the heights that were not routine (a later round or
    evidence), at most ten of them."""
    s = consensus["summary"]
    roles = consensus["roles"]
    table = Table(title="Consensus (Tendermint)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    crashed = roles.count("crashed")
    summary_rows = (
        ("validators", str(len(roles))),
        ("byzantine (equivocating)", str(roles.count("byzantine"))),
        ("crashed", f"{crashed} at height {consensus['crash_at_height']}" if crashed else "0"),
        ("heights committed", str(s["heights"])),
        (
            "time to finality p50 / p95",
            f"{_ms(s['finality_p50_ms'])} / {_ms(s['finality_p95_ms'])} ms",
        ),
        ("highest round", _ms(s["max_round"])),
        ("heights after round 0", str(s["heights_after_round_0"])),
        ("evidence included", str(s["evidence"])),
        ("stake slashed", f"{s['slashed'] / UNIT:g} FC"),
    )
    for what, value in summary_rows:
        table.add_row(what, value)
    table.caption = "finality: a block's proposal to each honest validator's commit"
    console.print(table)
    notable = [h for h in consensus["heights"] if h["evidence"] or (h["round"] or 0) > 0]
    if notable:
        rows = Table(title="Heights not decided in round 0, or with evidence")
        for col in ("height", "round", "finality ms", "evidence against", "slashed FC"):
            rows.add_column(col, justify="left" if col == "evidence against" else "right")
        for h in notable[:10]:
            rows.add_row(
                str(h["height"]), _ms(h["round"]), _ms(h["finality_ms"]),
                ", ".join(a[:14] + "…" for a in h["evidence"]) or "–", f"{h['slashed'] / UNIT:g}",
            )  # fmt: skip
        if len(notable) > 10:
            rows.caption = f"… and {len(notable) - 10} more in report.json"
        console.print(rows)


def _ms(value: int | None) -> str:
    return "–" if value is None else str(value)
