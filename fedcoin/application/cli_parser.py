"""The command line's flags: ``build_parser`` and the argument types it uses.

Parsing only: what each command does lives in ``cli`` (node commands) and ``cli_client``
(light FL server and wallet commands).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from pathlib import Path

from fedcoin.application.bundle import add_bundle_parser
from fedcoin.application.light import add_light_arguments, add_posap_arguments
from fedcoin.data.genesis import DEFAULT_PARAMS, UNIT, ChainParams
from fedcoin.errors import BadAddress
from fedcoin.network.addresses import format_host_port, is_unspecified, parse_host_port

#: The simulation's PoSap windows: short, since its validators value a round in well under a
#: second and the windows close early once every member committed (and revealed); a crashed
#: validator keeps the commit window open to its end.
SIM_COMMIT_BLOCKS = 8
SIM_REVEAL_BLOCKS = 8

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


def advertise_arg(text: str) -> str:
    """A ``HOST:PORT`` others can dial (strictly parsed; port 1-65535), never an unspecified
    address such as 0.0.0.0 or ::."""
    try:
        host, port = parse_host_port(text)
        if is_unspecified(host):
            raise BadAddress(f"{text!r} is not an address others can dial")
    except BadAddress as exc:
        raise argparse.ArgumentTypeError(f"expected a dialable HOST:PORT: {exc}") from None
    return format_host_port(host, port)


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
    p.add_argument(
        "--validator", action="append", default=[], metavar="KEYFILE=FC",
        help="bond a validator at genesis: KEYFILE=FC, or PUBKEY_HEX:RANDAO_TIP_HEX=FC "
        "(repeatable; at least one)",
    )  # fmt: skip
    p.add_argument("--timestamp-ms", type=int, default=0, help="genesis timestamp (default 0)")
    for name in (f.name for f in fields(ChainParams)):  # every chain parameter, PoSap's too
        p.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(DEFAULT_PARAMS, name),
            help="chain parameter (default %(default)s)",
        )  # fmt: skip

    p = sub.add_parser("full", help="run a full node (a validator if its key is bonded)")
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
    p.add_argument(
        "--advertise", type=advertise_arg, default=None, metavar="HOST:PORT",
        help="address peers should dial to reach this node, e.g. behind NAT or in a container "
        "(default: the listen address; env FEDCOIN_ADVERTISE, the flag wins)",
    )  # fmt: skip
    p.add_argument("--no-discover", action="store_true", help="do not dial peers learnt from peers")
    p.add_argument(
        "--ipfs-api",
        default=os.environ.get("FEDCOIN_IPFS_API") or None,
        help="IPFS HTTP API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001 (env FEDCOIN_IPFS_API)",
    )
    p.add_argument(
        "--no-mine", action="store_true",
        help="follow only: never sign votes or proposals nor value rounds, even if the key is "
        "a validator",
    )  # fmt: skip
    t = p.add_argument_group(
        "consensus timeouts",
        "Local Tendermint settings (not consensus parameters): a round waits PROPOSE ms for the "
        "proposal, then PREVOTE / PRECOMMIT ms once 2/3 of the votes are in but undecided; each "
        "grows by its DELTA per round so that a round eventually outlasts any network delay. The "
        "private validator's state (last height/round/step signed) is DATA_DIR/privval_state.bin.",
    )  # fmt: skip
    for name, default in (
        ("propose", 3000), ("propose-delta", 500), ("prevote", 1000), ("prevote-delta", 500),
        ("precommit", 1000), ("precommit-delta", 500),
    ):  # fmt: skip
        t.add_argument(
            f"--timeout-{name}-ms", type=int, default=default, metavar="MS",
            help="(default %(default)s)",
        )  # fmt: skip
    t.add_argument(
        "--heartbeat-ms", type=int, default=5000, metavar="MS",
        help="with no transaction pending and no SV task open, start the next height this long "
        "after a commit (default %(default)s); a transaction arriving earlier starts it",
    )  # fmt: skip

    p = sub.add_parser("light", help="run a lightweight FL server against a full node")
    add_light_arguments(p, default_home(), DEFAULT_NODE, fc_amount)
    add_bundle_parser(sub)

    p = sub.add_parser(
        "simulate",
        help="N validators, one FL server and K clients in one process; prints a report, "
        "writes plots",
        description="Run a whole FedCoin network in one process over real loopback sockets and "
        "SQLite files: validators order blocks by Tendermint, value every round by Proof of "
        "Shapley and pay the clients.",
    )
    p.add_argument(
        "--validators", "--miners", dest="miners", type=int, default=4, metavar="N",
        help="bonded validators, each a full node (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--byzantine", type=int, default=0, metavar="K",
        help="validators that equivocate: two proposals per round, two votes per step "
        "(default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--crashed", type=int, default=0, metavar="K",
        help="validators that stop at --crash-at-height (default %(default)s); with the "
        "byzantine ones, fewer than a third of N",
    )  # fmt: skip
    p.add_argument(
        "--crash-at-height", type=int, default=3, metavar="H",
        help="the height at which the crashed validators stop (default %(default)s)",
    )  # fmt: skip
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
    add_kind_arguments(p)
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
        help="keep the validators' SQLite files here (default: a temporary dir)",
    )
    p.add_argument(
        "--connect-timeout", type=float, default=30.0, metavar="SECONDS",
        help="give up when a validator has no peer after this long (default %(default)s)",
    )  # fmt: skip
    add_posap_arguments(p, SIM_COMMIT_BLOCKS, SIM_REVEAL_BLOCKS)

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
    add_posap_arguments(w)
    w = wallet("bond", "lock FC of your balance as validator stake (power from the next epoch)")
    w.add_argument("--amount", type=fc_amount, required=True, help="FC to bond, up to 6 decimals")
    w.add_argument("--wait", action="store_true", help="wait until a block includes it")
    w.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (120)")
    w = wallet("unbond", "start releasing bonded FC (back after unbonding_blocks)")
    w.add_argument("--amount", type=fc_amount, required=True, help="FC to unbond, up to 6 decimals")
    w.add_argument("--wait", action="store_true", help="wait until a block includes it")
    w.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (120)")
    w = wallet("validators", "show the validator set, the bonds and the unbonding entries")
    w = wallet("close-task", "close your task and take back what is left of its escrow")
    w.add_argument("--task-id", required=True, help="the task (64 hex digits)")
    w = wallet("task", "show a task with its rounds, Shapley values and payouts")
    w.add_argument("--task-id", required=True, help="the task (64 hex digits)")

    p = sub.add_parser("demo", help="run a small ledger demo on a SQLite store")
    p.add_argument("--data-dir", type=Path, help="keep the demo's SQLite file here")
    return parser


def add_kind_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's manipulating client kinds (issue 12; ``application/sim_kinds.py``)."""
    for flag, what in (
        ("--delta-free-riders", "clients that send the global model plus its last change"),
        ("--disguised-free-riders", "clients that send the global model plus small noise"),
        ("--label-flippers", "clients that train on labels shifted by one class"),
    ):
        p.add_argument(flag, type=int, default=0, metavar="N", help=f"{what} (default 0)")
    p.add_argument(
        "--sybil-split", type=int, default=0, metavar="K",
        help="client 0 splits its data over K keys (default: no split)",
    )  # fmt: skip
    p.add_argument(
        "--server-copies", type=int, default=0, metavar="K",
        help="the FL server adds K noised copies of client 0's update under its own keys",
    )  # fmt: skip
    p.add_argument(
        "--inflate-samples", type=int, default=0, metavar="X",
        help="the last honest client reports X times its samples (default: none)",
    )  # fmt: skip
    p.add_argument(
        "--allowed-clients", action="store_true",
        help="publish a consortium task listing the real clients' keys (sybils and copies "
        "are refused by the chain)",
    )  # fmt: skip
