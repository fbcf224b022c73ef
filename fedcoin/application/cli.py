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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from fedcoin.application.bundle import cmd_bundle
from fedcoin.application.cli_client import cmd_light, load_or_create_key, run_wallet
from fedcoin.application.cli_parser import advertise_arg, build_parser, fc_amount
from fedcoin.data.genesis import ChainParams, Genesis
from fedcoin.data.keys import PrivateKey, format_address, parse_address
from fedcoin.errors import FedCoinError

__all__ = ["build_parser", "main"]

log = logging.getLogger("fedcoin")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failure to write ``path`` (no permission, no such folder) into one clear line."""
    try:
        yield
    except OSError as exc:
        raise FedCoinError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_keygen(args: argparse.Namespace) -> int:
    key = PrivateKey.generate()
    with writing(args.out):
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
    params = ChainParams(**{f.name: getattr(args, f.name) for f in fields(ChainParams)})
    genesis = Genesis.from_json(
        {
            "chain_id": args.chain_id, "timestamp_ms": args.timestamp_ms,
            "allocations": {format_address(a): v for a, v in alloc.items()},
            "params": {f.name: getattr(params, f.name) for f in fields(ChainParams)},
            "validators": [validator_arg(item) for item in args.validator],
        }
    )  # fmt: skip
    with writing(args.out):
        genesis.save(args.out)
    print(f"wrote {args.out}: chain {genesis.chain_id}, genesis {genesis.block().hash.hex()}")
    return 0


def validator_arg(item: str) -> dict[str, Any]:
    """``KEYFILE=FC`` (the tip is derived from the key) or ``PUBKEY_HEX:TIP_HEX=FC``."""
    from fedcoin.consensus.stake import randao_tip_of

    who, sep, amount = item.rpartition("=")
    if not sep or not who:
        raise FedCoinError(f"--validator takes KEYFILE=FC or PUBKEY:TIP=FC, got {item!r}")
    try:
        bond = fc_amount(amount)
    except argparse.ArgumentTypeError as exc:
        raise FedCoinError(f"--validator {item!r}: {exc}") from None
    if Path(who).is_file():
        key = PrivateKey.load(who)
        return {"pubkey": key.public.hex(), "bond": bond, "randao_tip": randao_tip_of(key).hex()}
    pubkey, sep, tip = who.partition(":")
    if not sep:
        raise FedCoinError(f"--validator {item!r}: no key file {who!r}, and not PUBKEY:TIP")
    return {"pubkey": pubkey, "bond": bond, "randao_tip": tip}


async def run_until_signalled(coro_factory: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await coro_factory(stop)


def consensus_config(args: argparse.Namespace) -> Any:
    """The node's local consensus settings from ``full``'s flags (and the test-only env hook
    ``FEDCOIN_TEST_KILL_AFTER_SIGN=HEIGHT``: SIGKILL after persisting a vote, before sending)."""
    from fedcoin.application.node_consensus import ConsensusConfig
    from fedcoin.consensus.tendermint_io import Timeouts

    timeouts = Timeouts(
        args.timeout_propose_ms, args.timeout_propose_delta_ms, args.timeout_prevote_ms,
        args.timeout_prevote_delta_ms, args.timeout_precommit_ms, args.timeout_precommit_delta_ms,
    )  # fmt: skip
    kill = os.environ.get("FEDCOIN_TEST_KILL_AFTER_SIGN")
    return ConsensusConfig(
        timeouts=timeouts, heartbeat_ms=args.heartbeat_ms,
        kill_after_sign_height=int(kill) if kill else None,
    )  # fmt: skip


def cmd_full(args: argparse.Namespace) -> int:
    from fedcoin.application.full_node import FullNode, FullNodeConfig

    genesis = Genesis.load(args.genesis or args.data_dir / "genesis.json")
    key = load_or_create_key(args.key or args.data_dir / "node.pem")
    host, _, port = args.listen.rpartition(":")
    advertise = args.advertise or os.environ.get("FEDCOIN_ADVERTISE", "")
    if advertise:
        try:
            advertise = advertise_arg(advertise)
        except argparse.ArgumentTypeError as exc:
            raise FedCoinError(f"--advertise / FEDCOIN_ADVERTISE: {exc}") from None
    config = FullNodeConfig(
        data_dir=args.data_dir, genesis=genesis, key=key, host=host, port=int(port),
        advertise=advertise, bootstrap=tuple(args.bootstrap), discover=not args.no_discover,
        ipfs_api=args.ipfs_api, mine=not args.no_mine, consensus=consensus_config(args),
    )  # fmt: skip

    async def serve(stop: asyncio.Event) -> None:
        async with FullNode(config):
            await stop.wait()
            log.info("signal received, shutting down")

    asyncio.run(run_until_signalled(serve))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedcoin.application.simulation import SimConfig, run

    report = run(SimConfig.from_args(args))
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
    wallet = ("balance", "transfer", "publish-task", "close-task", "task", "bond", "unbond")
    for name in (*wallet, "validators"):
        commands[name] = lambda a: asyncio.run(run_wallet(a))
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
    except TimeoutError:  # an OSError whose message is empty: say what it means
        print(f"fedcoin {args.command}: gave up waiting (timed out)", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or socket the command needed; the message names it
        print(f"fedcoin {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
