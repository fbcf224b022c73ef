"""Consensus benchmark: Tendermint on N full nodes in one process, real sockets on 127.0.0.1.

For each N in ``--validators`` (default 4, 16, 32) and each emulated link delay D in
``--link-delay-ms`` (default 0), N equally bonded validators (SQLite files, one process-wide
vote-signature cache, as in ``simulate``):

- **link delay**: with D > 0 every frame a validator receives from a peer is handed to it D ms
  after it arrived (``transport.DelayedLink``, a benchmark-only hook): a hop costs what a hop
  between machines costs, while all N validators still share one process and two cores;
- **one hop**: Ping → Pong between two connected validators over the same transport, halved
  (median of ``--pings``), measured twice in the same run: on the idle network before any
  height, and while heights are being decided (loaded);
- **time to finality**: for ``--heights`` heights, each started by one transfer (the heartbeat
  is out of the way), from the block's timestamp (its proposer's clock when it built the
  proposal) to each validator's commit, the median over validators per height; p50 and p95
  over the heights, and their ratio to the idle and to the loaded one-hop latency (target at
  16: p50 ≤ 8×);
- **cost per height**: the process's CPU time (all threads) and the frames all nodes received
  (each frame of a bundle counted) over the timed heights, per height;
- **floor**: what any implementation must do per height in one process, from primitives timed
  in the same run: 2N fsyncs of a signing state (in series: one disk) and 2N signatures made
  and checked — against which "≤ 8× one hop" can be judged at D = 0;
- at ``--tps-at`` validators (16), with the first D: **committed transactions per second**
  — ``--txs`` signed transfers from 100 senders submitted to validator 0 (senders
  concurrently, each in nonce order), until every validator has committed all of them —
  against bare ``Ed25519PublicKey.verify`` on the same signatures in the same run.

All nodes share one event loop and two cores: every vote and proposal is handled N times in
one process, so the figures are an upper bound on what a network of separate machines sees.

    python bench/consensus.py [--validators 4 16 32] [--link-delay-ms 0 5 20] [--heights 20]
                              [--txs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: E402

from fedcoin.application.chain_link import wall_clock_ms  # noqa: E402
from fedcoin.application.full_node import FullNode, FullNodeConfig  # noqa: E402
from fedcoin.application.node_consensus import ConsensusConfig  # noqa: E402
from fedcoin.application.sim_consensus import (  # noqa: E402
    CommitClock,
    committed_height,
    height_records,
    percentile,
)
from fedcoin.consensus.stake import randao_tip_of  # noqa: E402
from fedcoin.consensus.validators import SignatureCache  # noqa: E402
from fedcoin.data.genesis import DEFAULT_PARAMS, UNIT, Genesis, GenesisValidator  # noqa: E402
from fedcoin.data.keys import TAG_TX, PrivateKey  # noqa: E402
from fedcoin.data.tx import Transaction, Transfer, make_tx  # noqa: E402
from fedcoin.network.messages import Ping  # noqa: E402
from fedcoin.network.node import Notifier  # noqa: E402

CHAIN_ID = "fedcoin-bench"
SENDERS = 100
IDLE_HEARTBEAT_MS = 3_600_000  # heights start only when a transaction waits
BLOCK_INTERVAL_MS = 50


def seeded(role: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(f"fedcoin/bench/{role}".encode()).digest())


@dataclass
class Net:
    nodes: list[FullNode]
    clocks: list[CommitClock]
    notifier: Notifier
    senders: list[PrivateKey]
    views: list[Callable[[], int]]

    def heights(self) -> list[int]:
        """Committed heights, from the drivers' in-memory view (no store read per wake-up)."""
        return [height() for height in self.views]

    async def wait_all(self, height: int, seconds: float = 300.0) -> None:
        await self.notifier.wait_for(lambda: min(self.heights()) >= height, seconds)


@contextlib.asynccontextmanager
async def network(n: int, root: Path, delay_ms: float = 0.0) -> AsyncIterator[Net]:
    keys = [seeded(f"validator-{i}") for i in range(n)]
    senders = [seeded(f"sender-{i}") for i in range(SENDERS)]
    params = replace(DEFAULT_PARAMS, min_block_interval_ms=BLOCK_INTERVAL_MS)
    validators = tuple(
        sorted(
            (GenesisValidator(k.public, params.min_bond, randao_tip_of(k)) for k in keys),
            key=lambda v: v.pubkey,
        )
    )
    genesis = Genesis(
        CHAIN_ID, 0, tuple((s.address, 1_000 * UNIT) for s in senders), params, validators
    )
    notifier = Notifier()
    cache = SignatureCache()
    clocks = [CommitClock(notifier, wall_clock_ms) for _ in keys]
    consensus = ConsensusConfig(heartbeat_ms=IDLE_HEARTBEAT_MS)
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[FullNode] = []
        for i, key in enumerate(keys):
            config = FullNodeConfig(
                data_dir=root / f"v{i}", genesis=genesis, key=key, notifier=clocks[i],
                bootstrap=(nodes[(i - 1) // 2].address,) if nodes else (),
                consensus=consensus, vote_check=cache, link_delay_ms=delay_ms,
            )  # fmt: skip
            nodes.append(await stack.enter_async_context(FullNode(config)))
            clocks[i].watch(committed_height(nodes[-1]))
        net = Net(nodes, clocks, notifier, senders, [committed_height(x) for x in nodes])
        # Connected: every node has a peer, and gossip reaches everyone (a first height)
        await notifier.wait_for(lambda: all(len(x.p2p.peers) >= 1 for x in nodes), 120)
        yield net


async def one_hop_ms(net: Net, count: int) -> float:
    """Median of Ping → Pong between validator 0 and its first peer, halved (ms)."""
    node = net.nodes[0]
    peer = next(iter(node.p2p.peers.values()))
    samples = []
    for nonce in range(count):
        before = peer.pongs
        start = time.perf_counter()
        peer.enqueue(Ping(nonce))
        await net.notifier.wait_for(lambda before=before: peer.pongs > before, 30)
        samples.append((time.perf_counter() - start) * 1000 / 2)
    return statistics.median(samples)


@dataclass
class Span:
    """What the timed heights cost the process: CPU (all threads) and frames received by all
    nodes (each frame of a bundle counted), per height."""

    cpu_ms: float
    frames: float


async def finality(net: Net, heights: int, pings: int) -> tuple[list[int], float, Span]:
    """Per-height median finality (ms) of ``heights`` heights, each started by one transfer;
    the one-hop latency measured while some of them were being decided; and their cost."""
    first = net.nodes[0].chain.head.height + 1
    cpu, frames = time.process_time(), sum(x.p2p.pipeline.received for x in net.nodes)
    hops = []
    for h in range(heights):
        sender = net.senders[h % SENDERS]
        nonce = net.nodes[0].chain.head_state().account(sender.address).nonce
        tx = make_tx(sender, CHAIN_ID, nonce, Transfer(net.senders[-1].address, 1), fee=0)
        target = max(net.heights()) + 1
        await net.nodes[0].submit_tx(tx)
        if h % 5 == 4:  # a few pings while the height is being decided
            hop, _ = await asyncio.gather(one_hop_ms(net, 5), net.wait_all(target))
            hops.append(hop)
        else:
            await net.wait_all(target)
    span = Span(
        (time.process_time() - cpu) * 1000 / heights,
        (sum(x.p2p.pipeline.received for x in net.nodes) - frames) / heights,
    )
    records = height_records(net.nodes[0].chain, net.clocks, since=first)
    waits = [r.finality_ms for r in records if r.finality_ms is not None]
    return waits, statistics.median(hops) if hops else float("nan"), span


def floor_ms(n: int, root: Path) -> tuple[float, float, float]:
    """What any implementation must do per height at ``n`` validators in one process, from
    primitives timed here: each validator fsyncs its signing state and signs twice (prevote,
    precommit), and each of the 2n votes has its signature checked at least once. Returns
    (fsync ms, sign + verify ms, the floor in ms); fsyncs to one disk are counted in series."""
    key = seeded("floor")
    path = root / "floor-state"
    fsyncs, crypto = [], []
    for i in range(50):
        start = time.perf_counter()
        with open(path, "wb") as f:
            f.write(bytes(200))
            f.flush()
            os.fsync(f.fileno())
        fsyncs.append(time.perf_counter() - start)
        message = i.to_bytes(8, "big") * 16
        start = time.perf_counter()
        signature = key.sign(TAG_TX, message)
        Ed25519PublicKey.from_public_bytes(key.public).verify(signature, TAG_TX + message)
        crypto.append(time.perf_counter() - start)
    fsync_ms, crypto_ms = statistics.median(fsyncs) * 1000, statistics.median(crypto) * 1000
    return fsync_ms, crypto_ms, 2 * n * (fsync_ms + crypto_ms)


def raw_verify_rate(txs: list[Transaction]) -> float:
    triples = [(tx.sender_pubkey, TAG_TX + tx.id, tx.signature) for tx in txs]
    start = time.perf_counter()
    for pub, msg, sig in triples:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    return len(triples) / (time.perf_counter() - start)


async def throughput(net: Net, count: int) -> tuple[float, float, int]:
    """(committed tx/s, raw verify/s, heights it took) for ``count`` transfers."""
    state = net.nodes[0].chain.head_state()
    nonces = {s.address: state.account(s.address).nonce for s in net.senders}
    txs = []
    for i in range(count):
        sender = net.senders[i % SENDERS]
        body = Transfer(seeded("to").address, 1)
        txs.append(make_tx(sender, CHAIN_ID, nonces[sender.address], body))
        nonces[sender.address] += 1
    verify = raw_verify_rate(txs)
    start_height = net.nodes[0].chain.head.height
    start = time.perf_counter()

    async def submit(sender: int) -> None:  # in nonce order per sender, senders concurrently
        for tx in txs[sender::SENDERS]:
            await net.nodes[0].submit_tx(tx)

    await asyncio.gather(*(submit(i) for i in range(SENDERS)))
    submitted = time.perf_counter() - start

    def all_in() -> bool:
        for node in net.nodes:
            accounts = node.chain.head_state()
            if any(accounts.account(a).nonce < n for a, n in nonces.items()):
                return False
        return True

    await net.notifier.wait_for(all_in, 600)
    elapsed = time.perf_counter() - start
    chain = net.nodes[0].chain
    sizes = [len(b.txs) for b in map(chain.store.block_at, range(start_height + 1,
             chain.head.height + 1)) if b is not None]  # fmt: skip
    print(
        f"   ({count} submitted to validator 0 in {submitted:.1f} s; transactions per block: "
        f"median {statistics.median(sizes):g}, max {max(sizes)})",
        flush=True,
    )
    return count / elapsed, verify, chain.head.height - start_height


async def run(args: argparse.Namespace) -> None:
    for name in ("fedcoin", "aiohttp"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for n in args.validators:
        for delay in args.link_delay_ms:
            await one_setting(args, n, delay)


async def one_setting(args: argparse.Namespace, n: int, delay: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        async with network(n, Path(tmp), delay) as net:
            up = time.perf_counter() - started
            idle_hop = await one_hop_ms(net, args.pings)
            waits, busy_hop, span = await finality(net, args.heights, args.pings)
            p50, p95 = percentile(waits, 0.5), percentile(waits, 0.95)
            assert p50 is not None and p95 is not None
            fsync_ms, crypto_ms, floor = floor_ms(n, Path(tmp))
            print(
                f"{n:>2} validators, link delay {delay:g} ms (up in {up:.1f} s): one hop "
                f"{idle_hop:.3f} ms idle, {busy_hop:.3f} ms loaded; finality over {len(waits)} "
                f"heights p50 {p50} ms = {p50 / idle_hop:.1f}× idle hop "
                f"({p50 / busy_hop:.1f}× loaded), p95 {p95} ms = {p95 / idle_hop:.1f}× idle hop; "
                f"floor {floor:.1f} ms = {floor / idle_hop:.1f}× idle hop (2·{n} × (fsync "
                f"{fsync_ms:.3f} + sign and verify {crypto_ms:.3f} ms)); per height CPU "
                f"{span.cpu_ms:.0f} ms, frames received {span.frames:,.0f}",
                flush=True,
            )
            if n == args.tps_at and delay == args.link_delay_ms[0]:
                tps, verify, heights = await throughput(net, args.txs)
                print(
                    f"{n:>2} validators: {args.txs} transfers committed on every node at "
                    f"{tps:,.0f} tx/s over {heights} heights; raw Ed25519 verify "
                    f"{verify:,.0f}/s; ratio {tps / verify:.3f}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validators", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--heights", type=int, default=20, help="heights timed per N")
    parser.add_argument("--pings", type=int, default=40, help="pings for the idle one hop")
    parser.add_argument("--txs", type=int, default=2000, help="transfers for the tx/s figure")
    parser.add_argument("--tps-at", type=int, default=16, help="N at which tx/s is measured")
    parser.add_argument(
        "--link-delay-ms", type=float, nargs="+", default=[0.0],
        help="emulated latency added to every frame between validators (one run per value)",
    )  # fmt: skip
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
