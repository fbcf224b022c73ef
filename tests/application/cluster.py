"""Full nodes in one process on 127.0.0.1 with real SQLite files, for application tests."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from fedcoin.application.full_node import FullNode, FullNodeConfig
from fedcoin.application.node_consensus import ConsensusConfig
from fedcoin.consensus.tendermint_io import Timeouts
from fedcoin.data.block import Block
from fedcoin.data.genesis import DEFAULT_PARAMS, Genesis
from fedcoin.data.keys import PrivateKey
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.incentive.payouts import RoundPayout
from fedcoin.network.node import Notifier
from tests.helpers import CHAIN_ID, FC, MINER, key, validators_of

FAST_PARAMS = replace(DEFAULT_PARAMS, min_block_interval_ms=200)
#: Short local consensus timeouts (a round without its proposer costs about a second).
FAST_CONSENSUS = ConsensusConfig(timeouts=Timeouts(800, 200, 400, 100, 400, 100), heartbeat_ms=5000)
#: Short PoSap windows: the cluster's genesis lists validators that never run (``MINER``), so
#: the commit window runs to its end; the reveal window closes once every committer revealed.
FAST_POSAP = replace(DEFAULT_POSAP, commit_blocks=10, reveal_blocks=10)
SERVER_KEY = key("fl-server")
PUBLISHER_KEY = key("publisher")
MINER_KEYS = [key(f"miner-{i}") for i in range(4)]
CLIENT_KEYS = [key(f"fl-client-{i}") for i in range(8)]


def cluster_genesis(validators: list[PrivateKey] | None = None) -> Genesis:
    """The cluster's network; its miners (``MINER_KEYS``, and ``ChainBuilder``'s default
    proposer ``MINER`` for tests that craft blocks) are the validators by default. Node 0 then
    bonds ten times the others: more than 2/3 of the power, so that a cluster of node 0 alone
    commits blocks (BFT finality) and the others, when started, vote beside it."""
    alloc = {SERVER_KEY: 1_000 * FC, PUBLISHER_KEY: 1_000 * FC}
    rows = tuple(sorted((k.address, v) for k, v in alloc.items()))
    bond = FAST_PARAMS.min_bond
    if validators is None:
        chosen = validators_of(MINER_KEYS[1:] + [MINER], bond)
        heavy = validators_of(MINER_KEYS[:1], 10 * bond)
        chosen = tuple(sorted((*chosen, *heavy), key=lambda v: v.pubkey))
    else:
        chosen = validators_of(validators, bond)
    return Genesis(CHAIN_ID, 1_700_000_000_000, rows, FAST_PARAMS, chosen)


class Cluster:
    def __init__(self, root: Path, genesis: Genesis | None = None) -> None:
        self.root = root
        self.genesis = genesis or cluster_genesis()
        self.notifier = Notifier()
        self.nodes: list[FullNode] = []
        self.stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Cluster:
        await self.stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.__aexit__(None, None, None)

    def config(self, index: int, key: PrivateKey | None = None) -> FullNodeConfig:
        bootstrap = (self.nodes[0].address,) if self.nodes and index != 0 else ()
        return FullNodeConfig(
            data_dir=self.root / f"node{index}",
            genesis=self.genesis,
            key=key or MINER_KEYS[index],
            bootstrap=bootstrap,
            notifier=self.notifier,
            consensus=FAST_CONSENSUS,
        )

    async def start(self, index: int, key: PrivateKey | None = None, **overrides) -> FullNode:
        node = FullNode(replace(self.config(index, key), **overrides))
        await self.stack.enter_async_context(node)
        self.nodes.append(node)
        return node

    async def wait_until(self, predicate, timeout: float = 60.0) -> None:
        await self.notifier.wait_for(predicate, timeout)

    def same_head(self) -> bool:
        heads = {n.chain.head.hash for n in self.nodes}
        return len(heads) == 1


def settled_rounds(node: FullNode) -> list[tuple[Block, RoundPayout]]:
    """Every round the node's chain settled or voided: (settling block, payout), in order."""
    found = []
    for height in range(1, node.chain.head.height + 1):
        block = node.store.block_at(height)
        assert block is not None
        found += [(block, payout) for payout in node.chain.payouts_of(block.hash)]
    return found
