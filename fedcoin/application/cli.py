"""FedCoin's command line: ``python main.py COMMAND`` or the ``fedcoin`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcoin",
        description="FedCoin: a peer-to-peer payment system for federated learning "
        "with Proof-of-Shapley consensus.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="run a small ledger demo on a SQLite store and print the balances"
    )
    demo.add_argument("--data-dir", type=Path, help="keep the demo's SQLite file here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from fedcoin.application.demo import run_demo

        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True)
        return run_demo(args.data_dir)
    return 2


if __name__ == "__main__":
    sys.exit(main())
