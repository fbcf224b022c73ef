"""Stake on real nodes (SQLite, sockets): a full node without a bond follows the chain but a
block it creates is invalid; ``Bond`` and an epoch boundary make it a validator that proposes;
``Unbond`` releases the coins after ``unbonding_blocks``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

import pytest

from fedcoin.consensus.stake import randao_tip_of
from fedcoin.data.tx import Bond, Transfer, Unbond, make_tx
from fedcoin.errors import NotAValidator
from tests.application.cluster import (
    FAST_PARAMS,
    MINER_KEYS,
    PUBLISHER_KEY,
    SERVER_KEY,
    Cluster,
    cluster_genesis,
)
from tests.helpers import CHAIN_ID, FC

PARAMS = replace(FAST_PARAMS, epoch_blocks=3, unbonding_blocks=4)
VALIDATOR, NEWCOMER = MINER_KEYS[0], MINER_KEYS[1]


def stake_genesis():
    genesis = cluster_genesis([VALIDATOR])
    rows = tuple(sorted([*genesis.allocations, (NEWCOMER.address, 100 * FC)]))
    return replace(genesis, allocations=rows, params=PARAMS)


async def feed_transfers(cluster: Cluster) -> None:
    """Keep one transfer pending, so validators keep proposing blocks (no empty blocks yet)."""
    node = cluster.nodes[0]
    while True:
        if not len(node.mempool):
            nonce = node.chain.head_state().account(SERVER_KEY.address).nonce
            transfer = Transfer(PUBLISHER_KEY.address, 1)
            with contextlib.suppress(Exception):  # a nonce just used by the next block: retry
                await node.submit_tx(make_tx(SERVER_KEY, CHAIN_ID, nonce, transfer))
        await asyncio.sleep(0.05)  # a driver's pace, not a wait for a fact


@pytest.mark.slow
async def test_bond_makes_a_validator_at_the_epoch_boundary_and_unbond_releases(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="fedcoin")
    async with Cluster(tmp_path, stake_genesis()) as cluster:
        old = await cluster.start(0, VALIDATOR)
        new = await cluster.start(1, NEWCOMER)
        await cluster.wait_until(lambda: len(new.p2p.peers) >= 1)
        feeder = asyncio.create_task(feed_transfers(cluster))
        try:
            await cluster.wait_until(lambda: new.chain.head.height >= 2, timeout=120)
            # The newcomer follows the chain but has not proposed, and says why once
            proposers = {old.store.block_at(h).header.proposer_pubkey for h in (1, 2)}
            assert proposers == {VALIDATOR.public}
            assert caplog.text.count(f"key {NEWCOMER.public.hex()[:16]} is not a validator") == 1

            # A block it creates is invalid on every node (here: the validator's)
            head = old.chain.head
            with pytest.raises(NotAValidator):
                old.chain.propose(
                    NEWCOMER.public, bytes(32), timestamp_ms=head.timestamp_ms + 10_000
                )
            assert old.chain.head.hash == head.hash

            # Bond, then the epoch boundary: it is a validator and proposes
            bond = make_tx(NEWCOMER, CHAIN_ID, 0, Bond(10 * FC, randao_tip_of(NEWCOMER)))
            await new.submit_tx(bond)
            await cluster.wait_until(
                lambda: new.chain.head_state().bond_of(NEWCOMER.public) == 10 * FC, timeout=120
            )
            await cluster.wait_until(
                lambda: new.chain.head_state().is_validator(NEWCOMER.public), timeout=120
            )
            assert caplog.text.count(f"key {NEWCOMER.public.hex()[:16]} is a validator") <= 1

            def proposed_by_newcomer() -> bool:
                top = old.chain.head.height
                return any(
                    old.store.block_at(h).header.proposer_pubkey == NEWCOMER.public
                    for h in range(1, top + 1)
                )

            await cluster.wait_until(proposed_by_newcomer, timeout=180)

            # Unbond: the coins come back at the end of block created + unbonding_blocks
            balance = new.chain.head_state().balance(NEWCOMER.address)
            await new.submit_tx(make_tx(NEWCOMER, CHAIN_ID, 1, Unbond(4 * FC)))
            await cluster.wait_until(lambda: bool(old.chain.head_state().unbonding), timeout=120)
            entry = old.chain.head_state().unbonding[0]
            assert entry.release == entry.created + PARAMS.unbonding_blocks
            await cluster.wait_until(lambda: old.chain.head.height >= entry.release, timeout=180)
            released = old.store.get_state(old.store.canonical_hash(entry.release))
            before = old.store.get_state(old.store.canonical_hash(entry.release - 1))
            assert before.unbonding and not released.unbonding
            assert released.balance(NEWCOMER.address) == balance + 4 * FC
            assert released.supply == released.total_held()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
