"""One-process simulation: N miners, one FL server and K clients over real loopback sockets and
real SQLite files, on the offline digits set (or MNIST from a local ``.npz``).

It prints progress per round, then a table per client (kind, samples, SV per round, total
paid), the FL server's and each miner's earnings, the publisher's refund, the global accuracy
per round and whether every miner ended on the same head; it writes ``report.json`` and three
PNG plots (SV per client per round, cumulative payouts, accuracy per round) to ``--out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedcoin.application.datasets import ClientKind, load_task_data
from fedcoin.application.fl_server import FLServer, FLServerConfig, RoundReport
from fedcoin.application.full_node import FullNode, FullNodeConfig
from fedcoin.application.sim_kinds import KindCounts, Roster, make_roster
from fedcoin.consensus.shapley import SV_SCALE
from fedcoin.consensus.stake import randao_tip_of
from fedcoin.data.genesis import DEFAULT_PARAMS, UNIT, Genesis, GenesisValidator
from fedcoin.data.keys import PrivateKey, format_address
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.errors import ConfigError, StartupError
from fedcoin.network.node import Notifier

log = logging.getLogger("fedcoin.simulate")


@dataclass
class SimConfig:
    miners: int = 4
    clients: int = 8
    rounds: int = 5
    noisy: int = 1
    free_riders: int = 1
    non_iid: float | None = None
    epochs: int = 2
    price: int = 10 * UNIT
    seed: int = 0
    dataset: str = "digits"
    mnist_path: Path | None = None
    out: Path = Path("out")
    data_dir: Path | None = None
    connect_seconds: float = 30.0
    """How long the miners may take to find a peer each before the simulation gives up."""
    share_window_ms: int = 500
    min_block_interval_ms: int = 300
    delta_free_riders: int = 0
    disguised_free_riders: int = 0
    label_flippers: int = 0
    sybil_split: int = 0
    server_copies: int = 0
    inflate_samples: int = 0
    allowed_clients: bool = False
    """Publish a consortium task listing the real clients' keys (sybils and copies refused)."""

    def kind_counts(self) -> KindCounts:
        return KindCounts(
            noisy=self.noisy, free_riders=self.free_riders,
            delta_free_riders=self.delta_free_riders,
            disguised_free_riders=self.disguised_free_riders, label_flippers=self.label_flippers,
            sybil_split=self.sybil_split, server_copies=self.server_copies,
            inflate_samples=self.inflate_samples,
        )  # fmt: skip

    def check(self) -> None:
        if self.miners < 1:
            raise ConfigError("--miners must be at least 1")
        if self.clients < 1 or self.clients > 16:
            raise ConfigError("--clients must be between 1 and 16 (exact Shapley tables up to 10)")
        if self.rounds < 1:
            raise ConfigError("--rounds must be at least 1")
        if self.clients + max(self.sybil_split - 1, 0) + self.server_copies > 16:
            raise ConfigError("at most 16 client keys in all (sybils and copies included)")


def derived_key(seed: int, role: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(f"fedcoin/sim/{seed}/{role}".encode()).digest())


async def simulate(cfg: SimConfig, console: Console) -> dict[str, Any]:
    cfg.check()
    for name in ("fedcoin", "aiohttp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    train, val = load_task_data(cfg.dataset, cfg.mnist_path, cfg.seed)
    roster = make_roster(train, cfg.clients, cfg.kind_counts(), cfg.non_iid, cfg.seed)
    shards = roster.shards
    server_key = derived_key(cfg.seed, "server")
    miner_keys = [derived_key(cfg.seed, f"miner-{i}") for i in range(cfg.miners)]
    client_keys = roster.keys
    escrow = cfg.rounds * cfg.price
    params = replace(DEFAULT_PARAMS, min_block_interval_ms=cfg.min_block_interval_ms)
    validators = tuple(
        sorted(
            (GenesisValidator(k.public, params.min_bond, randao_tip_of(k)) for k in miner_keys),
            key=lambda v: v.pubkey,
        )
    )  # the simulated miners are the validators
    genesis = Genesis(
        "fedcoin-sim", 0, ((server_key.address, escrow + 10 * UNIT),), params, validators
    )
    posap = replace(DEFAULT_POSAP, share_window_ms=cfg.share_window_ms)

    from fedcoin.application.training import build_mlp

    arch, initial = build_mlp(train.x.shape[1], train.classes, seed=cfg.seed)
    console.print(
        f"[bold]FedCoin simulation[/bold]: {cfg.miners} miners, {cfg.clients} clients "
        f"({', '.join(sorted(set(roster.kinds)))}"
        + (", consortium task" if cfg.allowed_clients else "")
        + (f", Dirichlet α={cfg.non_iid}" if cfg.non_iid else ", IID")
        + f"), {cfg.rounds} rounds at {cfg.price / UNIT:g} FC, {cfg.dataset}"
    )
    notifier = Notifier()
    with contextlib.ExitStack() as tmp_stack:
        root = cfg.data_dir or Path(tmp_stack.enter_context(tempfile.TemporaryDirectory()))
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[FullNode] = []
            for i, key in enumerate(miner_keys):
                config = FullNodeConfig(
                    data_dir=root / f"miner{i}", genesis=genesis, key=key, notifier=notifier,
                    bootstrap=(nodes[(i - 1) // 2].address,) if nodes else (),
                )  # fmt: skip
                nodes.append(await stack.enter_async_context(FullNode(config)))
            want = min(cfg.miners - 1, 1)
            try:
                await notifier.wait_for(
                    lambda: all(len(n.p2p.peers) >= want for n in nodes), cfg.connect_seconds
                )
            except TimeoutError:
                alone = sum(len(n.p2p.peers) < want for n in nodes)
                raise StartupError(
                    f"{alone} of {cfg.miners} miners had no peer after {cfg.connect_seconds:g} s"
                ) from None
            console.print(f"miners up on {', '.join(n.address for n in nodes)}")

            def on_round(r: RoundReport) -> None:
                what = "voided" if r.voided else f"settled at height {r.block_height}"
                console.print(
                    f"round {r.round}: global accuracy {r.accuracy:.3f}; {what}; "
                    f"paid {sum(r.paid) / UNIT:.3f} FC to clients"
                )

            server = FLServer(
                FLServerConfig(
                    key=server_key, node_url=nodes[0].url, architecture=arch,
                    initial_weights=initial, validation=val, shards=shards,
                    client_keys=client_keys, rounds=cfg.rounds, price_per_round=cfg.price,
                    epochs=cfg.epochs, posap=posap, seed=cfg.seed, on_round=on_round,
                    progress=console.is_terminal, settle_timeout=600,
                    sample_claims=roster.claims, behave=roster.behave(),
                    allowed_clients=roster.allowed if cfg.allowed_clients else (),
                )
            )  # fmt: skip
            reports = await server.run()
            try:
                await notifier.wait_for(lambda: len({n.chain.head.hash for n in nodes}) == 1, 60)
            except TimeoutError:
                log.warning("miners still disagree on the head after 60 s; reporting as is")
            report = build_report(cfg, nodes, server, reports, roster, server_key, escrow)
    write_outputs(cfg.out, report)
    print_tables(console, report)
    return report


def build_report(
    cfg: SimConfig, nodes: list[FullNode], server: FLServer, reports: list[RoundReport],
    roster: Roster, server_key: PrivateKey, escrow: int,
) -> dict[str, Any]:  # fmt: skip
    node = nodes[0]
    state = node.chain.head_state()
    heads = {format_address(n.key.address): n.chain.head.hash.hex() for n in nodes}
    blocks = [node.store.block_at(h) for h in range(node.chain.head.height + 1)]
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
    earned = [state.balance(n.key.address) for n in nodes]
    miners = [
        {"address": format_address(n.key.address), "earned": e}
        for n, e in zip(nodes, earned, strict=True)
    ]
    paid_clients = sum(sum(r.paid) for r in reports)
    paid_out = paid_clients + server_pay + sum(earned)
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "task_id": server.task_id.hex() if server.task_id else None,
        "escrow": escrow,
        "rounds": [asdict(r) for r in reports],
        "accuracy": [r.accuracy for r in reports],
        "clients": clients,
        "server": {"address": format_address(server_key.address), "earned": server_pay},
        "miners": miners,
        "publisher": {"address": format_address(server_key.address), "refunded": refund},
        "paid_out": paid_out,
        "escrow_left": state.tasks[server.task_id].escrow if server.task_id else None,
        "conserved": state.supply == state.total_held(),
        "heads": heads,
        "same_head": len(set(heads.values())) == 1,
        "blocks": [b.hash.hex() for b in blocks if b is not None],
    }


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
        xlabel="round", ylabel="Shapley value (validation samples)", title="SV per client per round"
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
        svs = [f"{v:.2f}" if v is not None else "–" for v in c["sv_per_round"]]
        table.add_row(
            str(c["index"]), c["kind"], str(c["samples"]), *svs, f"{c['total_paid'] / UNIT:.3f}"
        )
    console.print(table)
    others = Table(title="Everyone else")
    others.add_column("who")
    others.add_column("address")
    others.add_column("FC", justify="right")
    others.add_row(
        "FL server", report["server"]["address"], f"{report['server']['earned'] / UNIT:.3f}"
    )
    for i, m in enumerate(report["miners"]):
        others.add_row(f"miner {i}", m["address"], f"{m['earned'] / UNIT:.3f}")
    others.add_row(
        "publisher refund",
        report["publisher"]["address"],
        f"{report['publisher']['refunded'] / UNIT:.3f}",
    )
    console.print(others)
    accuracy = ", ".join(f"{a:.3f}" for a in report["accuracy"])
    console.print(f"global accuracy per round: {accuracy}")
    console.print(
        f"escrow {report['escrow'] / UNIT:g} FC = paid {report['paid_out'] / UNIT:.6f} + refunded "
        f"{report['publisher']['refunded'] / UNIT:.6f}; coins conserved: {report['conserved']}"
    )
    verdict = "[green]yes[/green]" if report["same_head"] else "[red]NO[/red]"
    console.print(f"all {len(report['heads'])} miners on the same head: {verdict}")
    console.print(f"report and plots written to {report['config']['out']}")


def run(cfg: SimConfig, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(simulate(cfg, console or Console()))


__all__ = ["ClientKind", "SimConfig", "run", "simulate"]
