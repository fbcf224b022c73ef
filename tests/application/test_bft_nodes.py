"""Tendermint on real full nodes (SQLite files, sockets on 127.0.0.1, port 0).

Four validators of equal bond; consensus timeouts and the heartbeat are short so that heights
follow each other quickly. Every wait is on a fact (a height reached on every node) with a
generous timeout; the one absence check (no commit while half the power is down) watches a
window several round timeouts long.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import pytest

from fedcoin.application.consensus_ports import Faults
from fedcoin.application.full_node import FullNode, FullNodeConfig
from fedcoin.application.node_consensus import ConsensusConfig
from fedcoin.consensus.tendermint_io import Timeouts
from fedcoin.consensus.validators import SignatureCache, verify_commit
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import PrivateKey
from fedcoin.data.tx import Transfer, make_tx
from fedcoin.network.node import Notifier
from tests.application.cluster import MINER_KEYS, PUBLISHER_KEY, SERVER_KEY, cluster_genesis
from tests.helpers import CHAIN_ID, FC, key

FAST = ConsensusConfig(
    timeouts=Timeouts(
        propose_ms=1500, propose_delta_ms=300, prevote_ms=500, prevote_delta_ms=200,
        precommit_ms=500, precommit_delta_ms=200,
    ),
    heartbeat_ms=300,
)  # fmt: skip
WAIT = 120.0
FOLLOWER = key("follower")


class Net:
    """Full nodes in one process; each can be stopped and started again on its data dir."""

    def __init__(self, root: Path, genesis: Genesis | None = None) -> None:
        self.root = root
        self.genesis = genesis or cluster_genesis(MINER_KEYS)
        self.notifier = Notifier()
        self.cache = SignatureCache()
        self.nodes: dict[int, FullNode] = {}
        self.addresses: dict[int, str] = {}

    async def start(self, i: int, k: PrivateKey | None = None, **overrides: object) -> FullNode:
        bootstrap = tuple(a for j, a in self.addresses.items() if j != i)
        config = FullNodeConfig(
            data_dir=self.root / f"node{i}", genesis=self.genesis, key=k or MINER_KEYS[i],
            bootstrap=bootstrap, notifier=self.notifier, consensus=FAST, vote_check=self.cache,
        )  # fmt: skip
        node = FullNode(replace(config, **overrides))  # type: ignore[arg-type]
        await node.__aenter__()
        self.nodes[i] = node
        self.addresses[i] = node.address
        return node

    async def stop(self, i: int) -> None:
        node = self.nodes.pop(i)
        await node.__aexit__(None, None, None)

    async def close(self) -> None:
        for i in list(self.nodes):
            await self.stop(i)

    def heights(self) -> list[int]:
        return [n.chain.head.height for n in self.nodes.values()]

    async def wait_height(self, height: int, timeout: float = WAIT) -> None:
        await self.notifier.wait_for(lambda: min(self.heights()) >= height, timeout)

    def agree(self) -> int:
        """Every running node has the same block at every height they all committed, and each
        block's certificate verifies under the validator set of its height."""
        nodes = list(self.nodes.values())
        top = min(self.heights())
        for h in range(1, top + 1):
            hashes = {n.chain.store.canonical_hash(h) for n in nodes}
            assert len(hashes) == 1, f"fork at height {h}: {hashes}"
            for n in nodes:
                cert = n.chain.certificate(h)
                assert cert is not None
                block_id = n.chain.store.canonical_hash(h)
                assert block_id is not None
                verify_commit(n.chain.validator_set(h), CHAIN_ID, h, block_id, cert)
        return top


@contextlib.asynccontextmanager
async def network(root: Path, genesis: Genesis | None = None):  # type: ignore[no-untyped-def]
    net = Net(root, genesis)
    try:
        yield net
    finally:
        await net.close()


def transfer(node: FullNode, amount: int) -> bytes:
    nonce = node.chain.head_state().account(SERVER_KEY.address).nonce
    tx = make_tx(SERVER_KEY, CHAIN_ID, nonce, Transfer(PUBLISHER_KEY.address, amount))
    return tx.id, tx  # type: ignore[return-value]


def included(node: FullNode, tx_id: bytes) -> bool:
    for h in range(1, node.chain.head.height + 1):
        block_hash = node.chain.store.canonical_hash(h)
        block = node.chain.store.get_block(block_hash) if block_hash else None
        if block is not None and any(t.id == tx_id for t in block.txs):
            return True
    return False


@pytest.mark.slow
async def test_four_validators_commit_and_a_transfer_is_final_on_every_node(tmp_path) -> None:
    async with network(tmp_path) as net:
        for i in range(4):
            await net.start(i)
        await net.wait_height(2)
        tx_id, tx = transfer(net.nodes[1], 7 * FC)
        await net.nodes[1].submit_tx(tx)
        await net.notifier.wait_for(
            lambda: all(included(n, tx_id) for n in net.nodes.values()), WAIT
        )
        await net.wait_height(4)
        assert net.agree() >= 4
        for node in net.nodes.values():
            assert node.chain.head_state().balance(PUBLISHER_KEY.address) == 1_000 * FC + 7 * FC


@pytest.mark.slow
async def test_one_crashed_validator_of_four_does_not_stop_commits(tmp_path) -> None:
    async with network(tmp_path) as net:
        crash = replace(FAST, faults=Faults(crash_at=(3, 0)))
        for i in range(4):
            await net.start(i, consensus=crash if i == 3 else FAST)
        await net.notifier.wait_for(
            lambda: all(net.nodes[i].chain.head.height >= 7 for i in range(3)), WAIT
        )
        assert net.nodes[3].consensus is not None and net.nodes[3].consensus.driver.crashed
        heights = net.heights()
        assert min(heights[:3]) >= 7
        # The crashed validator still follows by sync (it serves the API), and agrees
        await net.wait_height(5)
        assert net.agree() >= 5


@pytest.mark.slow
async def test_two_of_four_down_stops_commits_and_they_resume_without_fork(tmp_path) -> None:
    async with network(tmp_path) as net:
        for i in range(4):
            await net.start(i)
        await net.wait_height(3)
        await net.stop(2)
        await net.stop(3)
        # Half the power is gone: at most the height in flight commits, then nothing
        stalled = max(net.heights()) + 1
        await asyncio.sleep(6.0)  # several round timeouts: the absence of commits is the fact
        assert max(net.heights()) <= stalled
        await net.start(2)
        await net.start(3)
        await net.wait_height(stalled + 3)
        assert net.agree() >= stalled + 3


@pytest.mark.slow
async def test_a_late_node_syncs_committed_blocks_and_verifies_their_certificates(
    tmp_path,
) -> None:
    async with network(tmp_path) as net:
        for i in range(4):
            await net.start(i)
        await net.wait_height(8)
        late = await net.start(9, FOLLOWER, mine=False)
        await net.notifier.wait_for(lambda: late.chain.head.height >= 8, WAIT)
        assert late.consensus is not None and late.consensus.signer is None
        assert net.agree() >= 8


@pytest.mark.slow
async def test_an_equivocating_validator_cannot_fork_and_is_slashed(tmp_path) -> None:
    async with network(tmp_path) as net:
        byzantine = MINER_KEYS[0]
        for i in range(4):
            faults = Faults(equivocate=True, raw_key=byzantine) if i == 0 else Faults()
            await net.start(i, consensus=replace(FAST, faults=faults))
        honest = [net.nodes[i] for i in (1, 2, 3)]
        bond = honest[0].chain.head_state().stakes[byzantine.public].bond

        def punished() -> bool:
            return all(n.chain.head_state().stakes[byzantine.public].bond < bond for n in honest)

        await net.notifier.wait_for(punished, WAIT)
        await net.wait_height(6)
        assert net.agree() >= 6
        evidence = [
            e
            for h in range(1, honest[0].chain.head.height + 1)
            for e in honest[0].chain.store.block_at(h).evidence  # type: ignore[union-attr]
        ]
        assert evidence and {e.validator for e in evidence} == {byzantine.public}
