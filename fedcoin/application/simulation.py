"""One-process simulation: N validators, one FL server and K clients over real loopback sockets
and real SQLite files, on the offline digits set (or MNIST from a local ``.npz``).

The validators, bonded equally in genesis, run Tendermint; ``--byzantine K`` of them equivocate
(double-propose and double-vote, through the consensus driver's ``Faults`` hook) and
``--crashed K`` stop at ``--crash-at-height``. It prints progress per round, then a table per
client (kind, samples, SV per round, total paid), everyone else's earnings, a consensus summary
(heights, p50/p95 time to finality, highest round, evidence, stake slashed) and whether every
honest validator committed the same block at every height; it writes ``report.json`` (with a
record per height, ``sim_consensus``) and three PNG plots to ``--out`` (``sim_report``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from fedcoin.application.chain_link import wall_clock_ms
from fedcoin.application.cli_parser import SIM_COMMIT_BLOCKS, SIM_REVEAL_BLOCKS
from fedcoin.application.consensus_ports import Faults
from fedcoin.application.datasets import ClientKind, load_task_data
from fedcoin.application.fl_server import FLServer, FLServerConfig, RoundReport
from fedcoin.application.full_node import FullNode, FullNodeConfig
from fedcoin.application.miner import TableCache
from fedcoin.application.node_consensus import ConsensusConfig
from fedcoin.application.sim_consensus import (
    CommitClock,
    Roles,
    committed_height,
    consensus_report,
)
from fedcoin.application.sim_kinds import KindCounts, make_roster
from fedcoin.application.sim_report import build_report, print_tables, write_outputs
from fedcoin.consensus.stake import randao_tip_of
from fedcoin.consensus.tendermint_io import Timeouts
from fedcoin.consensus.validators import SignatureCache
from fedcoin.data.genesis import DEFAULT_PARAMS, UNIT, Genesis, GenesisValidator
from fedcoin.data.keys import PrivateKey
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.errors import ConfigError, StartupError
from fedcoin.network.node import Notifier

log = logging.getLogger("fedcoin.simulate")


@dataclass
class SimConfig:
    miners: int = 4
    """Validators (``--validators``, alias ``--miners``)."""
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
    """How long the validators may take to find a peer each before the simulation gives up."""
    commit_blocks: int = SIM_COMMIT_BLOCKS
    """The task's PoSap commit window in blocks (``--commit-blocks``)."""
    reveal_blocks: int = SIM_REVEAL_BLOCKS
    """The task's PoSap reveal window in blocks (``--reveal-blocks``)."""
    min_block_interval_ms: int = 300
    delta_free_riders: int = 0
    disguised_free_riders: int = 0
    label_flippers: int = 0
    sybil_split: int = 0
    server_copies: int = 0
    inflate_samples: int = 0
    allowed_clients: bool = False
    """Publish a consortium task listing the real clients' keys (sybils and copies refused)."""
    byzantine: int = 0
    """Validators 1..K equivocate: two proposals per round they propose, two votes per step."""
    crashed: int = 0
    """The last K validators stop at ``crash_at_height`` (round 0)."""
    crash_at_height: int = 3
    heartbeat_ms: int = 2000
    """With nothing to include, the next height starts this long after a commit."""
    timeouts: Timeouts | None = None
    """Tendermint's local timeouts (propose / prevote / precommit, growing per round); None:
    ``sim_timeouts`` for this many validators and clients."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SimConfig:
        """The ``simulate`` subcommand's flags (``cli_parser``)."""
        return cls(
            miners=args.miners, clients=args.clients, rounds=args.rounds, noisy=args.noisy,
            free_riders=args.free_riders, non_iid=args.non_iid, epochs=args.epochs,
            price=args.price, seed=args.seed, dataset=args.dataset, mnist_path=args.mnist_path,
            out=args.out, data_dir=args.data_dir, connect_seconds=args.connect_timeout,
            delta_free_riders=args.delta_free_riders,
            disguised_free_riders=args.disguised_free_riders, label_flippers=args.label_flippers,
            sybil_split=args.sybil_split, server_copies=args.server_copies,
            inflate_samples=args.inflate_samples, allowed_clients=args.allowed_clients,
            byzantine=args.byzantine, crashed=args.crashed, crash_at_height=args.crash_at_height,
            commit_blocks=args.commit_blocks, reveal_blocks=args.reveal_blocks,
        )  # fmt: skip

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
            raise ConfigError("--validators must be at least 1")
        if self.clients < 1 or self.clients > 16:
            raise ConfigError("--clients must be between 1 and 16 (exact Shapley tables up to 10)")
        if self.rounds < 1:
            raise ConfigError("--rounds must be at least 1")
        if self.clients + max(self.sybil_split - 1, 0) + self.server_copies > 16:
            raise ConfigError("at most 16 client keys in all (sybils and copies included)")
        if self.byzantine < 0 or self.crashed < 0 or self.crash_at_height < 1:
            raise ConfigError("--byzantine and --crashed take K ≥ 0, --crash-at-height H ≥ 1")
        faulty = self.byzantine + self.crashed
        # Tendermint decides (and is safe) only while faulty power is below a third
        if 3 * faulty >= self.miners and faulty > 0:
            raise ConfigError(
                f"{faulty} faulty of {self.miners} validators: Tendermint needs fewer than a "
                f"third faulty (at most {(self.miners - 1) // 3})"
            )

    def roles(self) -> Roles:
        """Validator 0 (the FL server's node) stays honest; 1..K equivocate; the last K crash."""
        n = self.miners
        return Roles(
            byzantine=frozenset(range(1, 1 + self.byzantine)),
            crashed=frozenset(range(n - self.crashed, n)),
            crash_at_height=self.crash_at_height if self.crashed else None,
        )

    def consensus(self, i: int) -> ConsensusConfig:
        """Validator ``i``'s local consensus settings and fault hooks."""
        roles = self.roles()
        faults = Faults(
            equivocate=i in roles.byzantine,
            crash_at=(self.crash_at_height, 0) if i in roles.crashed else None,
        )
        timeouts = self.timeouts or sim_timeouts(self.miners, self.clients)
        return ConsensusConfig(timeouts=timeouts, heartbeat_ms=self.heartbeat_ms, faults=faults)

    def to_json(self) -> dict[str, Any]:
        """The settings as run (the timeouts in effect included)."""
        settings = asdict(replace(self, timeouts=sim_timeouts(self.miners, self.clients)))
        if self.timeouts is not None:
            settings["timeouts"] = asdict(self.timeouts)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}


def sim_timeouts(validators: int, clients: int) -> Timeouts:
    """Timeouts long enough for every validator of one process to check a settling block.

    Such a block carries one share per validator, each a table of 2^clients utilities (up to
    1 024), and all N validators check it on the same two cores: the work grows as
    N² · 2^clients (measured: 32 validators, 10 clients, ~50 s until the round could commit).
    A proposal that arrives checked after the propose timeout gets nil prevotes, the next
    proposer's block must be checked again, and the height never ends; so the propose timeout
    budgets ~50 µs per (validator, share, table entry) above the default 3 s.
    """
    entries = 2 ** min(clients, 10)
    check_ms = validators * validators * entries // 20
    return Timeouts(propose_ms=3000 + check_ms, prevote_ms=1000 + check_ms // 10,
                    precommit_ms=1000 + check_ms // 10)  # fmt: skip


def derived_key(seed: int, role: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(f"fedcoin/sim/{seed}/{role}".encode()).digest())


async def simulate(cfg: SimConfig, console: Console) -> dict[str, Any]:
    cfg.check()
    for name in ("fedcoin", "aiohttp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if cfg.byzantine:  # their equivocations are expected: one warning each would flood
        logging.getLogger("fedcoin.consensus").setLevel(logging.ERROR)
    train, val = load_task_data(cfg.dataset, cfg.mnist_path, cfg.seed)
    roster = make_roster(train, cfg.clients, cfg.kind_counts(), cfg.non_iid, cfg.seed)
    server_key = derived_key(cfg.seed, "server")
    miner_keys = [derived_key(cfg.seed, f"miner-{i}") for i in range(cfg.miners)]
    escrow = cfg.rounds * cfg.price
    genesis = sim_genesis(cfg, miner_keys, server_key.address, escrow + 10 * UNIT)
    posap = replace(DEFAULT_POSAP, commit_blocks=cfg.commit_blocks, reveal_blocks=cfg.reveal_blocks)
    roles = cfg.roles()

    from fedcoin.application.training import build_mlp

    arch, initial = build_mlp(train.x.shape[1], train.classes, seed=cfg.seed)
    faults = (
        f"; {len(roles.byzantine)} byzantine" if roles.byzantine else ""
    ) + (
        f"; {len(roles.crashed)} crash at height {cfg.crash_at_height}" if roles.crashed else ""
    )  # fmt: skip
    console.print(
        f"[bold]FedCoin simulation[/bold]: {cfg.miners} validators{faults}, {cfg.clients} "
        f"clients ({', '.join(sorted(set(roster.kinds)))}"
        + (", consortium task" if cfg.allowed_clients else "")
        + (f", Dirichlet α={cfg.non_iid}" if cfg.non_iid else ", IID")
        + f"), {cfg.rounds} rounds at {cfg.price / UNIT:g} FC, {cfg.dataset}"
    )
    notifier = Notifier()
    cache = SignatureCache()  # one process: each vote signature is verified once, not N times
    tables = TableCache()  # and each PoSap table (the same for every honest validator) made once
    clocks = [CommitClock(notifier, wall_clock_ms) for _ in miner_keys]
    with contextlib.ExitStack() as tmp_stack:
        root = cfg.data_dir or Path(tmp_stack.enter_context(tempfile.TemporaryDirectory()))
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[FullNode] = []
            for i, key in enumerate(miner_keys):
                config = FullNodeConfig(
                    data_dir=root / f"miner{i}", genesis=genesis, key=key, notifier=clocks[i],
                    bootstrap=(nodes[(i - 1) // 2].address,) if nodes else (),
                    consensus=cfg.consensus(i), vote_check=cache, clock_ms=wall_clock_ms,
                    tables=tables,
                )  # fmt: skip
                node = await stack.enter_async_context(FullNode(config))
                nodes.append(node)
                clocks[i].watch(committed_height(node))
            await wait_connected(nodes, notifier, cfg.connect_seconds)
            console.print(f"validators up on {', '.join(n.address for n in nodes)}")

            def on_round(r: RoundReport) -> None:
                what = "voided" if r.voided else f"settled at height {r.block_height}"
                console.print(
                    f"round {r.round}: global accuracy {r.accuracy:.3f}; {what}; "
                    f"paid {sum(r.paid) / UNIT:.3f} FC to clients"
                )

            server = FLServer(
                FLServerConfig(
                    key=server_key, node_url=nodes[0].url, architecture=arch,
                    initial_weights=initial, validation=val, shards=roster.shards,
                    client_keys=roster.keys, rounds=cfg.rounds, price_per_round=cfg.price,
                    epochs=cfg.epochs, posap=posap, seed=cfg.seed, on_round=on_round,
                    progress=console.is_terminal, settle_timeout=600,
                    sample_claims=roster.claims, behave=roster.behave(),
                    allowed_clients=roster.allowed if cfg.allowed_clients else (),
                )
            )  # fmt: skip
            reports = await server.run()
            await wait_caught_up(nodes, roles, notifier)
            chains = [n.chain for n in nodes]
            consensus = consensus_report(chains, clocks, roles)
            report = build_report(
                cfg.to_json(), nodes, server, reports, roster, server_key, escrow, consensus
            )
            # One process: every honest validator's table came from the one shared cache
            report["valuation"] = {"tables_computed": tables.computed}
            # Stop deciding heights everywhere first: closing 32 busy nodes one by one is slow
            await asyncio.gather(*(n.consensus.stop() for n in nodes if n.consensus is not None))
    write_outputs(cfg.out, report)
    print_tables(console, report)
    return report


def sim_genesis(
    cfg: SimConfig, validator_keys: list[PrivateKey], publisher: bytes, funds: int
) -> Genesis:
    """The simulated validators, bonded equally; the publisher holds the escrow and fees."""
    params = replace(DEFAULT_PARAMS, min_block_interval_ms=cfg.min_block_interval_ms)
    validators = tuple(
        sorted(
            (GenesisValidator(k.public, params.min_bond, randao_tip_of(k)) for k in validator_keys),
            key=lambda v: v.pubkey,
        )
    )
    return Genesis("fedcoin-sim", 0, ((publisher, funds),), params, validators)


async def wait_connected(nodes: list[FullNode], notifier: Notifier, seconds: float) -> None:
    """Every validator has a peer (they find the rest by discovery)."""
    want = min(len(nodes) - 1, 1)
    try:
        await notifier.wait_for(lambda: all(len(n.p2p.peers) >= want for n in nodes), seconds)
    except TimeoutError:
        alone = sum(len(n.p2p.peers) < want for n in nodes)
        raise StartupError(
            f"{alone} of {len(nodes)} validators had no peer after {seconds:g} s"
        ) from None


async def wait_caught_up(nodes: list[FullNode], roles: Roles, notifier: Notifier) -> None:
    """Every running honest validator has committed what the furthest one has."""
    live = [nodes[i] for i in roles.live(len(nodes))]
    top = max(n.chain.head.height for n in live)
    try:
        await notifier.wait_for(lambda: all(n.chain.head.height >= top for n in live), 60)
    except TimeoutError:
        log.warning("validators still behind height %d after 60 s; reporting as is", top)


def run(cfg: SimConfig, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(simulate(cfg, console or Console()))


__all__ = ["ClientKind", "SimConfig", "run", "simulate", "write_outputs"]
