"""What the simulation and the consensus benchmark record about Tendermint, per height.

- ``CommitClock`` is a node's ``Notifier`` that also notes the moment each height became
  committed *at that node* (the node notifies on every commit), then wakes the waiters of the
  process-wide notifier. It is the only hook the simulation adds to a node.
- ``height_records`` reads, from a reference node's committed chain, for each height: the round
  its certificate is from, the time to finality as the honest nodes saw it (from the block's
  timestamp — its proposer's clock when it built the proposal; all nodes share one clock in
  one process — to each honest node's commit: median and maximum), the evidence the block
  included and the stake it slashed (the named validators' bond plus unbonding entries before
  the block, minus after).
- ``agreement`` compares the committed block hashes of the honest nodes height by height.

Simplification: a height committed through sync is timed when the node noticed it, so a node
that fell behind reports a longer finality for those heights, as a user of it would see.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedcoin.application.node_consensus import NodeConsensus
from fedcoin.consensus.chain import Chain
from fedcoin.data.keys import address_of, format_address
from fedcoin.data.state import State
from fedcoin.network.node import Notifier


class CommitClock(Notifier):
    """Notes when each height committed at one node; forwards every notification to ``shared``."""

    def __init__(self, shared: Notifier, clock_ms: Callable[[], int]) -> None:
        super().__init__()
        self.shared = shared
        self.clock_ms = clock_ms
        self.committed_at: dict[int, int] = {}
        """Height → local clock (ms) when this node first showed it committed."""
        self._height: Callable[[], int] | None = None
        self._seen = 0

    def watch(self, height: Callable[[], int]) -> None:
        """Start timing: ``height()`` is the node's committed height (heights up to now are
        not timed)."""
        self._height = height
        self._seen = height()

    def notify(self) -> None:
        if self._height is not None:
            now, height = self.clock_ms(), self._height()
            while self._seen < height:
                self._seen += 1
                self.committed_at[self._seen] = now
        super().notify()
        self.shared.notify()


class HasChain(Protocol):
    @property
    def chain(self) -> Chain: ...


@dataclass
class HeightRecord:
    height: int
    round: int | None
    """The round of the certificate the reference node committed the block with."""
    finality_ms: int | None
    """Median over the honest nodes that timed it: block timestamp → commit."""
    finality_max_ms: int | None
    """The slowest honest node."""
    evidence: list[str] = field(default_factory=list)
    """Addresses of the validators whose equivocation the block included."""
    slashed: int = 0
    """Base units of stake the block slashed."""
    txs: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "height": self.height, "round": self.round, "finality_ms": self.finality_ms,
            "finality_max_ms": self.finality_max_ms, "evidence": self.evidence,
            "slashed": self.slashed, "txs": self.txs,
        }  # fmt: skip


class HasConsensus(HasChain, Protocol):
    @property
    def consensus(self) -> NodeConsensus | None: ...


def committed_height(node: HasConsensus) -> Callable[[], int]:
    """``node``'s committed height, as ``CommitClock.watch`` reads it: from its consensus
    driver's view of the head (kept in memory, up to date the moment a commit is stored) when it
    runs consensus — the clock is read on every gossip message of every node, and a chain-store
    read each time was a large part of a benchmark's load — else from its chain."""
    if node.consensus is not None:
        return node.consensus.driver.ledger.committed_height
    return lambda: node.chain.head.height


def staked(state: State, pubkey: bytes) -> int:
    """A validator's slashable stake: its bond plus its unbonding entries."""
    stake = state.stakes.get(pubkey)
    bond = stake.bond if stake is not None else 0
    return bond + sum(u.amount for u in state.unbonding if u.pubkey == pubkey)


def state_at(chain: Chain, height: int) -> State | None:
    """The state after committed block ``height`` (None if the store lacks it)."""
    block_hash = chain.store.canonical_hash(height)
    return None if block_hash is None else chain.store.get_state(block_hash)


def height_records(
    chain: Chain, clocks: Sequence[CommitClock], *, since: int = 1
) -> list[HeightRecord]:
    """One record per height committed on ``chain``, timed by the honest nodes' ``clocks``."""
    records = []
    for height in range(since, chain.head.height + 1):
        block = chain.store.block_at(height)
        if block is None:
            break
        waits = sorted(
            c.committed_at[height] - block.header.timestamp_ms
            for c in clocks
            if height in c.committed_at
        )
        certificate = chain.certificate(height)
        record = HeightRecord(
            height, certificate.round if certificate is not None else None,
            int(statistics.median(waits)) if waits else None, waits[-1] if waits else None,
            txs=len(block.txs),
        )  # fmt: skip
        if block.evidence:
            before, after = state_at(chain, height - 1), state_at(chain, height)
            for item in block.evidence:
                record.evidence.append(format_address(address_of(item.validator)))
                if before is not None and after is not None:
                    record.slashed += staked(before, item.validator) - staked(after, item.validator)
        records.append(record)
    return records


def percentile(values: Sequence[int], q: float) -> int | None:
    """The ``q``-quantile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


def summary(records: Sequence[HeightRecord]) -> dict[str, object]:
    """Heights, p50/p95 finality, the highest round, evidence and stake slashed in all."""
    finality = [r.finality_ms for r in records if r.finality_ms is not None]
    rounds = [r.round for r in records if r.round is not None]
    return {
        "heights": len(records),
        "finality_p50_ms": percentile(finality, 0.5),
        "finality_p95_ms": percentile(finality, 0.95),
        "max_round": max(rounds, default=None),
        "heights_after_round_0": sum(1 for r in rounds if r > 0),
        "evidence": sum(len(r.evidence) for r in records),
        "slashed": sum(r.slashed for r in records),
    }


def agreement(chains: Sequence[Callable[[int], bytes | None]], top: int) -> list[int]:
    """Heights 1..``top`` at which two of the chains committed different blocks (a chain that
    has not reached a height is not compared there); empty when they all agree."""
    split = []
    for height in range(1, top + 1):
        hashes = {h for h in (chain(height) for chain in chains) if h is not None}
        if len(hashes) > 1:
            split.append(height)
    return split


@dataclass(frozen=True)
class Roles:
    """Which simulated validators misbehave (indices into the node list)."""

    byzantine: frozenset[int] = frozenset()
    crashed: frozenset[int] = frozenset()
    crash_at_height: int | None = None

    def honest(self, n: int) -> list[int]:
        """Every validator that never equivocates (crashed ones included: they stop, they do
        not lie)."""
        return [i for i in range(n) if i not in self.byzantine]

    def live(self, n: int) -> list[int]:
        """The honest validators that keep running to the end."""
        return [i for i in self.honest(n) if i not in self.crashed]

    def role(self, i: int) -> str:
        if i in self.byzantine:
            return "byzantine"
        return "crashed" if i in self.crashed else "honest"


def consensus_report(
    chains: Sequence[Chain], clocks: Sequence[CommitClock], roles: Roles
) -> dict[str, object]:
    """Per-height records from the first live honest node, timed by the live honest nodes; the
    comparison of every honest node's committed chain height by height."""
    n = len(chains)
    live, honest = roles.live(n), roles.honest(n)
    reference = chains[live[0]]
    records = height_records(reference, [clocks[i] for i in live])
    top = max(chains[i].head.height for i in honest)
    split = agreement([chains[i].store.canonical_hash for i in honest], top)
    return {
        "roles": [roles.role(i) for i in range(n)],
        "crash_at_height": roles.crash_at_height,
        "heights": [r.to_json() for r in records],
        "summary": summary(records),
        "committed_heights": [chain.head.height for chain in chains],
        "split_heights": split,
        "same_chain": not split,
    }
