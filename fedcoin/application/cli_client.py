"""Client commands of the command line: the light FL server and the wallet commands
(balance, transfer, publish-task, close-task, task), all talking to a full node's HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcoin.application.cli_parser import fc_text
from fedcoin.data.keys import PrivateKey, format_address, parse_address
from fedcoin.errors import FedCoinError

if TYPE_CHECKING:
    from fedcoin.application.node_client import NodeClient
    from fedcoin.data.tx import Bond

log = logging.getLogger("fedcoin")


def load_or_create_key(path: Path) -> PrivateKey:
    if not path.exists():
        key = PrivateKey.generate()
        key.save(path)
        log.info("created key %s for %s", path, format_address(key.address))
        return key
    return PrivateKey.load(path)


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


async def run_wallet(args: argparse.Namespace) -> int:
    from fedcoin.application.fl_server import NodeClient, NodeError
    from fedcoin.data.tx import DEFAULT_POSAP, CloseTask, PublishTask, TaskSpec, Transfer, Unbond

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
        if args.command == "validators":
            show_validators(await node.validators())
            return 0
        key = PrivateKey.load(args.key)
        try:
            if args.command == "bond":
                tx = await node.send(key, chain_id, await bond_body(node, key, args.amount))
            elif args.command == "unbond":
                tx = await node.send(key, chain_id, Unbond(args.amount))
            elif args.command == "transfer":
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


async def bond_body(node: NodeClient, key: PrivateKey, amount: int) -> Bond:
    """A Bond that registers the key's randao tip on its first bond and keeps it after."""
    from fedcoin.consensus.stake import NO_TIP, randao_tip_of
    from fedcoin.data.tx import Bond

    bonds = (await node.validators())["bonds"]
    registered = any(b["pubkey"] == key.public.hex() for b in bonds)
    return Bond(amount, NO_TIP if registered else randao_tip_of(key))


def show_validators(view: dict[str, Any]) -> None:
    print(
        f"height {view['height']}, next epoch at {view['next_epoch_at']}, "
        f"total power {fc_text(view['total_power'])} FC"
    )
    for v in view["validators"]:
        print(f"  validator {v['address']}  power {fc_text(v['power'])}  bond {fc_text(v['bond'])}")
    for u in view["unbonding"]:
        print(f"  unbonding {u['address']}  {fc_text(u['amount'])} FC  released at {u['release']}")


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
    for col in ("round", "settled", "SV (samples)", "paid to clients (FC)", "revealers"):
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
            str(len(r.get("revealers", []))),
        )
    console.print(table)
