"""The ``light`` command: a lightweight FL server with in-process clients, against a full node.

It publishes a task (the built-in digits MLP) or joins one (``--task-id``: it trains that
task's own model on its own validation set, with the clients' data from ``--data``), keeps
the task id under ``--data-dir`` so that a restart resumes the task instead of publishing a
new one, waits at most ``--timeout`` seconds for anything, prints every round with the full
task id, amounts in FC and each client's kind, and writes ``report.json`` and the same plots
as ``simulate``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcoin.data.genesis import UNIT
from fedcoin.data.keys import PrivateKey, format_address
from fedcoin.data.tx import DEFAULT_MAX_SAMPLES, DEFAULT_POSAP, PosapParams
from fedcoin.errors import ConfigError

if TYPE_CHECKING:  # the command imports numpy, aiohttp and the rest only when it runs
    from fedcoin.application.datasets import Dataset
    from fedcoin.application.fl_server import RoundReport

TASK_FILE = "task-id"


def add_posap_arguments(
    p: argparse.ArgumentParser, commit_blocks: int = DEFAULT_POSAP.commit_blocks,
    reveal_blocks: int = DEFAULT_POSAP.reveal_blocks,
) -> None:  # fmt: skip
    """The PoSap windows of a task to publish (``posap_from_args`` reads them)."""
    p.add_argument(
        "--commit-blocks", type=int, default=commit_blocks, metavar="N",
        help="blocks the validators have to commit to a round's table; the window closes "
        "early once all have (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--reveal-blocks", type=int, default=reveal_blocks, metavar="N",
        help="blocks to reveal the tables after the commit window; the round settles at its "
        "end, or earlier once every committer revealed (default %(default)s)",
    )  # fmt: skip


def posap_from_args(args: argparse.Namespace) -> PosapParams:
    """The task's PoSap parameters: the defaults with the windows of the command line."""
    return PosapParams(
        n_exact_max=DEFAULT_POSAP.n_exact_max, budget=DEFAULT_POSAP.budget,
        commit_blocks=args.commit_blocks, reveal_blocks=args.reveal_blocks,
    )  # fmt: skip


def add_light_arguments(
    p: argparse.ArgumentParser, home: Path, default_node: str, fc_amount: Callable[[str], int]
) -> None:
    """The ``light`` command's flags (``fc_amount`` parses FC into base units)."""
    p.add_argument("--node", default=default_node, help="full node API URL (default %(default)s)")
    p.add_argument(
        "--key", type=Path, default=home / "server.pem", help="FL server key (default %(default)s)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=home / "light",
        help="keeps the task id (a restart resumes the task) and the report (default %(default)s)",
    )
    p.add_argument("--task-id", help="join this task (64 hex digits) instead of publishing one")
    p.add_argument(
        "--new-task", action="store_true", help="publish a new task even if one is saved"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds to publish (default %(default)s)")
    p.add_argument("--price", type=fc_amount, default=fc_amount("10"), help="FC per round (10)")
    p.add_argument(
        "--deadline-blocks",
        type=int,
        help="blocks until the task's deadline (default 100 per round + 100)",
    )
    p.add_argument("--clients", type=int, default=4, help="in-process clients (default 4)")
    p.add_argument("--noisy", type=int, default=0, help="clients with noisy labels")
    p.add_argument(
        "--allowed-clients", action="store_true",
        help="publish a consortium task: only the in-process clients' keys are paid",
    )  # fmt: skip
    p.add_argument("--free-riders", type=int, default=0, help="clients that train nothing")
    p.add_argument(
        "--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
        help="the task's max_samples: most samples one update may claim (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--non-iid", type=float, metavar="ALPHA", help="Dirichlet non-IID shards")
    p.add_argument("--epochs", type=int, default=2, help="local epochs per round (default 2)")
    p.add_argument(
        "--dataset", choices=["digits", "mnist"], default="digits", help="(default %(default)s)"
    )
    p.add_argument("--mnist-path", type=Path, help="local mnist.npz for --dataset mnist")
    p.add_argument(
        "--data", type=Path, help="the clients' training data: an .npz with x and y (any model)"
    )
    p.add_argument(
        "--ipfs-api",
        default=os.environ.get("FEDCOIN_IPFS_API") or None,
        help="also add every blob to this IPFS daemon (env FEDCOIN_IPFS_API)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per wait (default 300)")
    p.add_argument("--out", type=Path, help="report.json and plots (default DATA_DIR/report)")
    p.add_argument("--seed", type=int, default=0, help="data split and training seed")
    add_posap_arguments(p)


def parse_task_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ConfigError(f"a task id is 64 hex digits, got {text!r}")
    return value


def client_data(args: argparse.Namespace) -> tuple[Dataset, Dataset | None]:
    """(the clients' training data, a validation set to publish when none is joined)."""
    from fedcoin.application.datasets import from_arrays, load_task_data

    if args.data is None:
        return load_task_data(args.dataset, args.mnist_path, args.seed)
    from fedcoin.application.bundle import load_npz

    x, y = load_npz(args.data)
    return from_arrays(x, y), None


def run_light(args: argparse.Namespace) -> int:
    from fedcoin.application.datasets import make_clients
    from fedcoin.application.fl_server import (
        FLServer,
        FLServerConfig,
        default_deadline_blocks,
    )
    from fedcoin.application.task_file import load_task_id
    from fedcoin.application.training import build_mlp

    task_file = args.data_dir / TASK_FILE
    if args.new_task and task_file.exists():
        task_file.unlink()
    task_id = parse_task_id(args.task_id) if args.task_id else None
    saved = load_task_id(task_file)
    if task_id is None and saved is not None:
        print(f"resuming task {saved.hex()} (saved in {task_file}; --new-task to publish anew)")
    train, val = client_data(args)
    shards = make_clients(
        train, clients=args.clients, noisy=args.noisy, free_riders=args.free_riders,
        non_iid_alpha=args.non_iid, seed=args.seed,
    )  # fmt: skip
    key = PrivateKey.load(args.key) if args.key.exists() else new_key(args.key)
    client_keys = [
        PrivateKey.from_seed(hashlib.sha256(b"fedcoin/client" + key.public + bytes([i])).digest())
        for i in range(args.clients)
    ]
    joining = task_id is not None or saved is not None
    if not joining and val is None:
        raise ConfigError("--data trains a joined task's model: give --task-id too")
    arch, initial = (None, None) if joining else build_mlp(train.x.shape[1], train.classes)
    config = FLServerConfig(
        key=key, node_url=args.node, architecture=arch, initial_weights=initial, validation=val,
        shards=shards, client_keys=client_keys, rounds=args.rounds,
        price_per_round=args.price, epochs=args.epochs,
        deadline_blocks=args.deadline_blocks or default_deadline_blocks(args.rounds),
        task_id=task_id, task_file=task_file, ipfs_api=args.ipfs_api, seed=args.seed,
        settle_timeout=args.timeout, progress=sys.stderr.isatty(),
        allowed_clients=tuple(k.public for k in client_keys) if args.allowed_clients else (),
        max_samples=args.max_samples, posap=posap_from_args(args),
        on_round=lambda r: print(round_line(r), flush=True),
    )  # fmt: skip
    server = FLServer(config)
    reports = asyncio.run(server.run())
    assert server.task_id is not None
    report = light_report(server.task_id, reports, shards, client_keys, key, args)
    out = args.out or args.data_dir / "report"
    from fedcoin.application.simulation import write_outputs

    write_outputs(out, report)
    print_clients(report)
    print(f"task {server.task_id.hex()}: report and plots written to {out}")
    return 0


def new_key(path: Path) -> PrivateKey:
    key = PrivateKey.generate()
    key.save(path)
    print(f"created key {path} for {format_address(key.address)}")
    return key


def fc_text(units: int) -> str:
    return f"{units // UNIT}.{units % UNIT:06d}"


def round_line(r: RoundReport) -> str:
    from fedcoin.consensus.shapley import SV_SCALE

    paid = ", ".join(fc_text(p) for p in r.paid)
    sv = ", ".join(f"{v / SV_SCALE:.2f}" for v in r.sv)
    state = " (voided: refunded)" if r.voided else ""
    return (
        f"round {r.round}{state}: accuracy {r.accuracy:.3f}, SV [{sv}], paid [{paid}] FC, "
        f"FL server {fc_text(r.server)} FC"
    )


def light_report(
    task_id: bytes, reports: list[RoundReport], shards: Any, client_keys: list[PrivateKey],
    key: PrivateKey, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    from fedcoin.consensus.shapley import SV_SCALE

    clients = []
    for i, (shard, ck) in enumerate(zip(shards, client_keys, strict=True)):
        paid = [r.paid[i] if i < len(r.paid) else 0 for r in reports]
        clients.append({
            "index": i, "address": format_address(ck.address), "kind": str(shard.kind),
            "samples": len(shard.data),
            "sv_per_round": [r.sv[i] / SV_SCALE if i < len(r.sv) else None for r in reports],
            "paid_per_round": paid, "total_paid": sum(paid),
        })  # fmt: skip
    return {
        "task_id": task_id.hex(),
        "node": args.node,
        "rounds": [vars(r) for r in reports],
        "accuracy": [r.accuracy for r in reports],
        "clients": clients,
        "server": {
            "address": format_address(key.address),
            "earned": sum(r.server for r in reports),
        },
        "refunded": sum(r.refund for r in reports),
    }


def print_clients(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Clients of task {report['task_id']}")
    rounds = [r["round"] for r in report["rounds"]]
    for col in ("#", "kind", "address", "samples", *(f"SV r{r}" for r in rounds), "paid FC"):
        table.add_column(col, justify="left" if col in ("kind", "address") else "right")
    for c in report["clients"]:
        svs = [f"{v:.2f}" if v is not None else "–" for v in c["sv_per_round"]]
        table.add_row(
            str(c["index"]), c["kind"], c["address"], str(c["samples"]), *svs,
            fc_text(c["total_paid"]),
        )  # fmt: skip
    Console().print(table)
