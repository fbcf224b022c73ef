"""FedCoin's command line: ``python main.py COMMAND`` or the ``fedcoin`` console script.

    keygen   make a key file (mode 0600) and print its address
    genesis  write a genesis file from allocations and parameters
    full     run a full node (miner): chain, P2P, HTTP API, PoSap mining
    light    run a lightweight FL server: train clients, submit rounds, report SVs and payouts
    bundle   make a task's model bundle (.keras) and dataset blob (.npz) for publish-task
    simulate N miners, one FL server and K clients in one process, with a report and plots
    balance, transfer, publish-task, close-task, task   wallet commands against a node's API
    demo     a small ledger demo on a SQLite file

Exit codes: 0 success, 1 a failure the message explains, 2 a bad flag (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fedcoin.application.bundle import add_bundle_parser, cmd_bundle
from fedcoin.application.light import add_light_arguments
from fedcoin.data.genesis import DEFAULT_PARAMS, UNIT, ChainParams, Genesis
from fedcoin.data.keys import PrivateKey, format_address, parse_address
from fedcoin.errors import FedCoinError

log = logging.getLogger("fedcoin")
DEFAULT_NODE = "http://127.0.0.1:8700"


def default_home() -> Path:
    """$FEDCOIN_HOME, else $XDG_DATA_HOME/fedcoin, else ~/.local/share/fedcoin."""
    if os.environ.get("FEDCOIN_HOME"):
        return Path(os.environ["FEDCOIN_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fedcoin"


def fc_amount(text: str) -> int:
    """'1.5' FC → 1 500 000 base units; at most 6 decimals, positive."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount of FC: {text!r}") from None
    units = value * UNIT
    if units != units.to_integral_value() or units <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive amount with at most 6 decimals")
    return int(units)


def fc_text(units: int) -> str:
    """Base units as FC with all six decimals, exactly (no float)."""
    return f"{units // UNIT}.{units % UNIT:06d}"


def host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcoin",
        description="FedCoin: a peer-to-peer payment system for federated learning "
        "with Proof-of-Shapley consensus.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create a key file and print its address")
    p.add_argument("--out", type=Path, required=True, help="key file to create (never overwritten)")

    p = sub.add_parser("genesis", help="write a genesis file")
    p.add_argument("--out", type=Path, required=True, help="genesis JSON to write")
    p.add_argument("--chain-id", default="fedcoin-local", help="network name (default %(default)s)")
    p.add_argument(
        "--alloc", action="append", default=[], metavar="ADDRESS=FC",
        help="credit an address at genesis, e.g. fc12…=1000 (repeatable)",
    )  # fmt: skip
    p.add_argument("--timestamp-ms", type=int, default=0, help="genesis timestamp (default 0)")
    for name in (
        "min_fee",
        "block_reward",
        "min_block_interval_ms",
        "future_tolerance_ms",
        "max_block_txs",
    ):
        p.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(DEFAULT_PARAMS, name),
            help="chain parameter (default %(default)s)",
        )  # fmt: skip

    p = sub.add_parser("full", help="run a full node (miner)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_home() / "node",
        help="chain store and content (default %(default)s)",
    )
    p.add_argument(
        "--genesis", type=Path, help="the network's genesis file (default DATA_DIR/genesis.json)"
    )
    p.add_argument(
        "--key", type=Path, help="node key (default DATA_DIR/node.pem, created if missing)"
    )
    p.add_argument(
        "--listen",
        type=host_port,
        default=os.environ.get("FEDCOIN_LISTEN", "127.0.0.1:8700"),
        help="HOST:PORT for peers and the API (default %(default)s; env FEDCOIN_LISTEN)",
    )
    p.add_argument(
        "--bootstrap",
        type=host_port,
        action="append",
        default=[],
        help="a peer to keep connected (repeatable)",
    )
    p.add_argument("--no-discover", action="store_true", help="do not dial peers learnt from peers")
    p.add_argument(
        "--ipfs-api",
        default=os.environ.get("FEDCOIN_IPFS_API") or None,
        help="IPFS HTTP API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001 (env FEDCOIN_IPFS_API)",
    )
    p.add_argument(
        "--no-mine", action="store_true", help="validate and serve only; make no shares or blocks"
    )

    p = sub.add_parser("light", help="run a lightweight FL server against a full node")
    add_light_arguments(p, default_home(), DEFAULT_NODE, fc_amount)
    add_bundle_parser(sub)

    p = sub.add_parser(
        "simulate",
        help="N miners, one FL server and K clients in one process; prints a report, writes plots",
        description="Run a whole FedCoin network in one process over real loopback sockets and "
        "SQLite files: miners value every round by Proof of Shapley and pay the clients.",
    )
    p.add_argument("--miners", type=int, default=4, help="full nodes (default %(default)s)")
    p.add_argument("--clients", type=int, default=8, help="FL clients (default %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="FL rounds (default %(default)s)")
    p.add_argument(
        "--noisy", type=int, default=1, help="clients with noisy labels (default %(default)s)"
    )
    p.add_argument(
        "--free-riders",
        type=int,
        default=1,
        help="clients that train nothing (default %(default)s)",
    )
    p.add_argument(
        "--non-iid",
        type=float,
        metavar="ALPHA",
        help="Dirichlet(ALPHA) label-skewed shards (default IID)",
    )
    p.add_argument(
        "--epochs", type=int, default=2, help="local epochs per round (default %(default)s)"
    )
    p.add_argument(
        "--price", type=fc_amount, default=fc_amount("10"), help="FC per round (default 10)"
    )
    p.add_argument(
        "--dataset", choices=["digits", "mnist"], default="digits", help="(default %(default)s)"
    )
    p.add_argument(
        "--mnist-path", type=Path, help="local mnist.npz (x_train, y_train, x_test, y_test)"
    )
    p.add_argument("--seed", type=int, default=0, help="keys, data split and training seed")
    p.add_argument(
        "--out", type=Path, default=Path("out"), help="report.json and plots (default %(default)s)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="keep the miners' SQLite files here (default: a temporary dir)",
    )

    def wallet(name: str, help_text: str) -> argparse.ArgumentParser:
        w = sub.add_parser(name, help=help_text, description=help_text)
        w.add_argument(
            "--node", default=DEFAULT_NODE, help="full node API URL (default %(default)s)"
        )
        w.add_argument(
            "--key",
            type=Path,
            default=default_home() / "wallet.pem",
            help="your key file (default %(default)s)",
        )
        return w

    w = wallet("balance", "show an address's balance and nonce (default: your key's)")
    w.add_argument("--address", help="another address to look up")
    w = wallet("transfer", "send FC to an address")
    w.add_argument("--to", required=True, help="recipient address (fc…)")
    w.add_argument("--amount", type=fc_amount, required=True, help="FC to send, up to 6 decimals")
    w.add_argument("--fee", type=fc_amount, help="fee in FC (default: none)")
    w.add_argument("--wait", action="store_true", help="wait until a block includes it")
    w.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (120)")
    w = wallet(
        "publish-task", "escrow a budget for an FL task (digits MLP and validation set by default)"
    )
    w.add_argument("--server", required=True, help="the FL server's address (fc…)")
    w.add_argument("--rounds", type=int, default=3, help="rounds paid for (default %(default)s)")
    w.add_argument(
        "--price", type=fc_amount, default=fc_amount("10"), help="FC per round (default 10)"
    )
    w.add_argument("--min-clients", type=int, default=1, help="(default %(default)s)")
    w.add_argument("--max-clients", type=int, default=10, help="(default %(default)s)")
    w.add_argument(
        "--deadline-blocks",
        type=int,
        default=10_000,
        help="blocks until the deadline (default %(default)s)",
    )
    w.add_argument("--bundle", type=Path, help="model bundle file (fcm1) instead of the digits MLP")
    w.add_argument(
        "--validation", type=Path, help="validation dataset file (fcd1) instead of digits"
    )
    w.add_argument("--seed", type=int, default=0, help="seed of the default model and split")
    w = wallet("close-task", "close your task and take back what is left of its escrow")
    w.add_argument("--task-id", required=True, help="the task (64 hex digits)")
    w = wallet("task", "show a task with its rounds, Shapley values and payouts")
    w.add_argument("--task-id", required=True, help="the task (64 hex digits)")

    p = sub.add_parser("demo", help="run a small ledger demo on a SQLite store")
    p.add_argument("--data-dir", type=Path, help="keep the demo's SQLite file here")
    return parser


def load_or_create_key(path: Path) -> PrivateKey:
    if not path.exists():
        key = PrivateKey.generate()
        key.save(path)
        log.info("created key %s for %s", path, format_address(key.address))
        return key
    return PrivateKey.load(path)


def cmd_keygen(args: argparse.Namespace) -> int:
    key = PrivateKey.generate()
    key.save(args.out)
    print(format_address(key.address))
    return 0


def cmd_genesis(args: argparse.Namespace) -> int:
    alloc: dict[bytes, int] = {}
    for item in args.alloc:
        address, sep, amount = item.partition("=")
        if not sep:
            raise FedCoinError(f"--alloc takes ADDRESS=FC, got {item!r}")
        try:
            alloc[parse_address(address)] = alloc.get(parse_address(address), 0) + fc_amount(amount)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise FedCoinError(f"--alloc {item!r}: {exc}") from None
    params = ChainParams(
        args.min_fee,
        args.block_reward,
        args.min_block_interval_ms,
        args.future_tolerance_ms,
        args.max_block_txs,
    )
    genesis = Genesis.from_json(
        {
            "chain_id": args.chain_id, "timestamp_ms": args.timestamp_ms,
            "allocations": {format_address(a): v for a, v in alloc.items()},
            "params": {f.name: getattr(params, f.name) for f in fields(ChainParams)},
        }
    )  # fmt: skip
    genesis.save(args.out)
    print(f"wrote {args.out}: chain {genesis.chain_id}, genesis {genesis.block().hash.hex()}")
    return 0


async def run_until_signalled(coro_factory: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await coro_factory(stop)


def cmd_full(args: argparse.Namespace) -> int:
    from fedcoin.application.full_node import FullNode, FullNodeConfig

    genesis = Genesis.load(args.genesis or args.data_dir / "genesis.json")
    key = load_or_create_key(args.key or args.data_dir / "node.pem")
    host, _, port = args.listen.rpartition(":")
    config = FullNodeConfig(
        data_dir=args.data_dir, genesis=genesis, key=key, host=host, port=int(port),
        bootstrap=tuple(args.bootstrap), discover=not args.no_discover, ipfs_api=args.ipfs_api,
        mine=not args.no_mine,
    )  # fmt: skip

    async def serve(stop: asyncio.Event) -> None:
        async with FullNode(config):
            await stop.wait()
            log.info("signal received, shutting down")

    asyncio.run(run_until_signalled(serve))
    return 0


def cmd_light(args: argparse.Namespace) -> int:
    from fedcoin.application.light import run_light

    return run_light(args)


def task_id_arg(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise FedCoinError(f"a task id is 64 hex digits, got {text!r}")
    return value


async def _wallet(args: argparse.Namespace) -> int:
    from fedcoin.application.fl_server import NodeClient, NodeError
    from fedcoin.data.tx import DEFAULT_POSAP, CloseTask, PublishTask, TaskSpec, Transfer

    async with NodeClient(args.node) as node:
        chain_id = (await node.status())["chain_id"]
        if args.command == "balance":
            address = (
                parse_address(args.address) if args.address else PrivateKey.load(args.key).address
            )
            acc = await node.account(address)
            print(f"{format_address(address)}: {fc_text(acc['balance'])} FC (nonce {acc['nonce']})")
            return 0
        if args.command == "task":
            show_task(await node.task(task_id_arg(args.task_id)))
            return 0
        key = PrivateKey.load(args.key)
        try:
            if args.command == "transfer":
                try:
                    to = parse_address(args.to)
                except ValueError as exc:
                    raise FedCoinError(f"--to: {exc}") from None
                tx = await node.send(key, chain_id, Transfer(to, args.amount), args.fee or 0)
            elif args.command == "close-task":
                tx = await node.send(key, chain_id, CloseTask(task_id_arg(args.task_id)))
            else:
                bundle, validation = default_task_content(args)
                model_ref = await node.put_content(bundle)
                validation_ref = await node.put_content(validation)
                height = (await node.status())["height"]
                spec = TaskSpec(
                    name="fedcoin-task", model=model_ref, validation=validation_ref,
                    server=parse_address(args.server), rounds=args.rounds,
                    price_per_round=args.price, split_bps=(7000, 1000, 2000),
                    min_clients=args.min_clients, max_clients=args.max_clients,
                    deadline_height=height + args.deadline_blocks, posap=DEFAULT_POSAP,
                )  # fmt: skip
                tx = await node.send(key, chain_id, PublishTask(spec))
                print(f"task id {tx.id.hex()}")
        except NodeError as exc:
            if exc.rule:
                raise FedCoinError(f"rejected, rule {exc.rule}: {exc}") from None
            raise
        except ValueError as exc:
            raise FedCoinError(str(exc)) from None
        print(f"submitted {tx.kind_name} {tx.id.hex()}")
        if getattr(args, "wait", False):
            deadline = asyncio.get_running_loop().time() + args.timeout
            while (await node.account(key.address))["nonce"] <= tx.nonce:
                if asyncio.get_running_loop().time() > deadline:
                    raise FedCoinError(f"not included in a block after {args.timeout:g} s")
                await asyncio.sleep(0.2)  # polling the node's HTTP API
            print("included in a block")
        return 0


def default_task_content(args: argparse.Namespace) -> tuple[bytes, bytes]:
    from fedcoin.data.tensors import decode_bundle, decode_dataset, encode_bundle, encode_dataset

    if args.bundle is not None or args.validation is not None:
        if args.bundle is None or args.validation is None:
            raise FedCoinError("--bundle and --validation go together")
        try:
            bundle, validation = args.bundle.read_bytes(), args.validation.read_bytes()
        except OSError as exc:
            raise FedCoinError(f"cannot read task content: {exc}") from None
        decode_bundle(bundle)
        decode_dataset(validation)
        return bundle, validation
    from fedcoin.application.datasets import load_task_data
    from fedcoin.application.training import build_mlp

    _, val = load_task_data("digits", None, args.seed)
    arch, weights = build_mlp(val.x.shape[1], val.classes, seed=args.seed)
    return encode_bundle(arch, weights), encode_dataset(val.x, val.y)


def show_task(task: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"task {task['id']} ({task['status']}): "
        f"{task['rounds_done']}/{task['spec']['rounds']} rounds, "
        f"escrow left {fc_text(task['escrow'])} FC, server {task['spec']['server']}"
    )
    table = Table()
    for col in ("round", "settled", "SV (samples)", "paid to clients (FC)", "shares"):
        table.add_column(col)
    for r in task["rounds"]:
        payout = r.get("payout") or {}
        sv = ", ".join(f"{v / 1e6:.2f}" for v in payout.get("sv", []))
        paid = ", ".join(fc_text(c["paid"]) for c in payout.get("clients", []))
        table.add_row(
            str(r["round"]),
            str(r["settled"]),
            sv or "–",
            paid or "–",
            str(len(r.get("shares", []))),
        )
    console.print(table)


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedcoin.application.simulation import SimConfig, run

    report = run(
        SimConfig(
            miners=args.miners, clients=args.clients, rounds=args.rounds, noisy=args.noisy,
            free_riders=args.free_riders, non_iid=args.non_iid, epochs=args.epochs,
            price=args.price, seed=args.seed, dataset=args.dataset, mnist_path=args.mnist_path,
            out=args.out, data_dir=args.data_dir,
        )
    )  # fmt: skip
    return 0 if report["same_head"] and report["conserved"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "keygen": cmd_keygen, "genesis": cmd_genesis, "full": cmd_full, "light": cmd_light,
        "simulate": cmd_simulate, "bundle": cmd_bundle,
    }  # fmt: skip
    for name in ("balance", "transfer", "publish-task", "close-task", "task"):
        commands[name] = lambda a: asyncio.run(_wallet(a))
    try:
        if args.command == "demo":
            from fedcoin.application.demo import run_demo

            if args.data_dir is not None:
                args.data_dir.mkdir(parents=True, exist_ok=True)
            return run_demo(args.data_dir)
        return commands[args.command](args)
    except FedCoinError as exc:
        print(f"fedcoin {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
