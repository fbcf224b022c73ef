"""A full node on real sockets under hostile or heavy input: no loop dies, no work before
authentication, a 10 000-transaction mempool stays responsive and blocks still get made."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import aiohttp
import pytest

import fedcoin.application.miner as miner_module
from fedcoin.application.bft_ledger import ChainLedger, StaleHeight
from fedcoin.application.chain_link import ChainLink
from fedcoin.application.mempool import Mempool
from fedcoin.application.miner import SharePools
from fedcoin.application.supervise import supervised
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.stake import randao_secret
from fedcoin.data.block import MAX_SHARES, Share
from fedcoin.data.keys import PrivateKey
from fedcoin.data.store import MemoryChainStore
from fedcoin.data.tx import ClientUpdate, ContentRef, SubmitRound, Transfer, make_tx
from fedcoin.errors import Reject
from fedcoin.network.messages import ShareMessage, TxMessage, encode_message
from tests.application.cluster import PUBLISHER_KEY, SERVER_KEY, Cluster
from tests.helpers import (
    ALICE,
    BOB,
    CHAIN_ID,
    CLIENTS,
    MINER,
    T0,
    VOTE_CHECK,
    ChainBuilder,
    TableVerifier,
    certify,
    key,
    make_genesis,
    make_transfer,
)  # fmt: skip
from tests.network.harness import handshake_as


async def test_supervised_loop_survives_any_error_and_logs_a_repeat_once(caplog) -> None:
    steps: list[int] = []
    wake = asyncio.Event()
    six_steps = asyncio.Event()

    async def step() -> None:
        steps.append(len(steps))
        if len(steps) >= 6:
            six_steps.set()
        if len(steps) <= 3:
            raise ValueError("broken input")
        if len(steps) == 4:
            raise KeyError("another")

    log = logging.getLogger("test.supervised")
    with caplog.at_level(logging.INFO, logger="test.supervised"):
        task = asyncio.create_task(supervised("step", step, wake, 0.001, log))
        async with asyncio.timeout(20):
            await six_steps.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # one traceback for the repeated ValueError, one for the KeyError: not one per step
    assert [r.exc_info[0] for r in errors if r.exc_info] == [ValueError, KeyError]


def fake_share(sv_task_id: bytes, miner: bytes) -> Share:
    return Share(sv_task_id, miner, 0, (), (), bytes(64))


def test_share_pools_keep_the_lowest_max_shares_keys() -> None:
    pools, sv = SharePools(), b"\x01" * 32
    keys = [bytes([i]) * 32 for i in range(MAX_SHARES + 8, 0, -1)]  # highest first
    for k in keys:
        pools.add(fake_share(sv, k), 0)
    kept = sorted(pools.pool(sv))
    assert kept == sorted(keys)[:MAX_SHARES]
    assert not pools.wants(sv, bytes([MAX_SHARES + 9]) * 32)
    assert not pools.wants(sv, kept[0])  # a miner's second share
    for i in range(100):  # pending SV tasks are bounded too
        pools.add(fake_share(i.to_bytes(32, "big"), keys[0]), 0)
    assert len(pools.pools) <= miner_module.MAX_POOLS


async def test_consensus_survives_an_unexpected_error_building_a_block(
    tmp_path, monkeypatch
) -> None:
    real, failures = Chain.propose, []

    def flaky(*args, **kwargs):
        if len(failures) < 3:
            failures.append(1)
            raise ValueError("numpy did not like that")
        return real(*args, **kwargs)

    monkeypatch.setattr(Chain, "propose", flaky)
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        tx = make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 1), 0)
        await node.submit_tx(tx)
        await cluster.wait_until(
            lambda: node.chain.head_state().account(SERVER_KEY.address).nonce == 1, timeout=60
        )
        assert len(failures) == 3 and len(node.mempool) == 0


def unsigned_round(bad: str) -> SubmitRound:
    ref = ContentRef(b"\x07" * 32, 10, "")
    task_id = b"\x05" * 32
    updates = tuple(ClientUpdate.create(c, task_id, 1, ref, 10) for c in CLIENTS[:2])
    if bad == "update":
        updates = (replace(updates[0], samples=11), updates[1])
    return SubmitRound(task_id, 1, updates, ref)


@pytest.mark.parametrize("bad", ["tx", "update"])
async def test_badly_signed_round_is_rejected_before_any_fetch(tmp_path, bad) -> None:
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        fetched: list[object] = []

        async def ensure(refs) -> None:
            fetched.append(list(refs))

        node.resolver.ensure = ensure  # type: ignore[method-assign]
        tx = make_tx(SERVER_KEY, CHAIN_ID, 0, unsigned_round(bad), 0)
        if bad == "tx":
            tx = replace(tx, signature=bytes(64))
        with pytest.raises(Reject):
            await node._on_tx(TxMessage(tx), None)
        assert fetched == [] and len(node.mempool) == 0


async def test_mempool_of_10_000_transactions_stays_responsive_and_drains(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        first = await cluster.start(0)
        second = await cluster.start(1)
        await cluster.wait_until(lambda: len(first.p2p.peers) >= 1 and len(second.p2p.peers) >= 1)
        senders = [SERVER_KEY, PUBLISHER_KEY]
        txs = [
            make_tx(s, CHAIN_ID, n, Transfer(PrivateKey.from_seed(bytes(32)).address, 1), 0)
            for n in range(5_000)
            for s in senders
        ]
        latencies: list[float] = []
        done = asyncio.Event()

        async def poll_status() -> None:
            async with aiohttp.ClientSession() as http:
                while not done.is_set():
                    start = time.perf_counter()
                    async with http.get(f"{second.url}/status") as resp:
                        assert resp.status == 200
                        await resp.json()
                    latencies.append(time.perf_counter() - start)
                    await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll_status())
        for tx in txs:
            await first.submit_tx(tx)
        await cluster.wait_until(
            lambda: all(n.chain.head_state().account(SERVER_KEY.address).nonce == 5_000
                        and n.chain.head_state().account(PUBLISHER_KEY.address).nonce == 5_000
                        for n in cluster.nodes),
            timeout=240,
        )  # fmt: skip
        done.set()
        await poller
        assert latencies and max(latencies) < 5.0, f"/status stalled {max(latencies):.1f} s"
        assert first.chain.head.height >= 2


async def test_a_block_that_breaks_the_checker_is_a_rejected_message_not_a_dead_node(
    tmp_path, monkeypatch
) -> None:
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        donor = ChainBuilder(cluster.genesis)
        block, _ = donor.make(
            [make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 1), 0)]
        )

        def broken(*args, **kwargs):
            raise ValueError("operands could not be broadcast together")

        certificate = certify(block, donor.state)
        monkeypatch.setattr(node.chain, "commit", broken)
        with pytest.raises(Reject, match="could not be checked"):
            await node.link.commit(block, certificate)
        monkeypatch.undo()
        await node.link.commit(block, certificate)  # the node still commits blocks
        assert node.chain.head.hash == block.hash


def ledger_of(chain: Chain, mempool: Mempool) -> ChainLedger:
    return ChainLedger(
        chain, ChainLink(chain), mempool, SharePools(), proposer=MINER.public,
        randao_secret=randao_secret(MINER),
    )  # fmt: skip


async def test_a_proposal_for_a_height_already_committed_drops_nothing_from_the_pool() -> None:
    """The pool follows the newest head; a proposal asked for the previous height must not
    call the pool's transactions bad (dropping one lost every later nonce of its sender)."""
    genesis = make_genesis()
    chain = Chain(MemoryChainStore(genesis), genesis, TableVerifier(), vote_check=VOTE_CHECK)
    mempool = Mempool(genesis, TableVerifier())
    txs = [make_transfer(ALICE, BOB, 1, n) for n in range(3)]
    for tx in txs:
        mempool.add(tx, chain.head_state(), 0, T0)
    # A block carrying the first transfer is committed; the pool moves on to it
    builder = ChainBuilder(genesis, chain=chain)
    builder.add([txs[0]])
    mempool.refresh(chain.head_state(), 1, T0, head=chain.head.hash)
    with pytest.raises(StaleHeight):
        ledger_of(chain, mempool).build(1, now_ms=T0 + 10_000, evidence=())
    assert mempool.select(10) == txs[1:]


async def test_no_transactions_proposed_while_the_pool_follows_another_head() -> None:
    """A commit moves the store's head in a worker thread before the pool hears of it (and the
    other way round): a proposer must not include txs where the pool's nonces don't start."""
    genesis = make_genesis()
    chain = Chain(MemoryChainStore(genesis), genesis, TableVerifier(), vote_check=VOTE_CHECK)
    head, state = chain.head, chain.head_state()
    mempool = Mempool(genesis, TableVerifier(), follows=head.hash)
    txs = [make_transfer(ALICE, BOB, 1, n) for n in range(3)]
    for tx in txs:
        mempool.add(tx, state, 0, T0)
    # The pool already follows a block with the first transfer; this chain has not stored it yet
    builder = ChainBuilder(genesis)
    builder.add([txs[0]])
    mempool.refresh(builder.state, 1, T0, head=builder.block.hash)
    block = ledger_of(chain, mempool).build(1, now_ms=T0 + 10_000, evidence=())
    assert block.txs == () and mempool.select(10) == txs[1:] and chain.head.hash == head.hash


async def test_a_share_flood_on_real_sockets_leaves_the_node_mining(tmp_path) -> None:
    """A peer floods shares signed by 500 fresh keys (for the head's SV-task id, which is not a
    pending round, and with tables of every size up to the frame bound): none reaches a pool,
    the node keeps answering and keeps making blocks."""
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        conn = await handshake_as(node.address, "flooder", cluster.genesis)
        head = node.chain.head.hash
        for i in range(500):
            table = tuple((mask, mask % 7) for mask in range(1 + i % 64))
            share = Share(head, bytes(32), 0, table, (i, -i), bytes(64)).signed(key(f"fresh-{i}"))
            await conn.send(encode_message(ShareMessage(share)))
        payment = make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 1), 0)
        await node.submit_tx(payment)
        await cluster.wait_until(
            lambda: node.chain.head_state().account(SERVER_KEY.address).nonce == 1, timeout=60
        )
        async with aiohttp.ClientSession() as http, http.get(f"{node.url}/status") as resp:
            assert resp.status == 200
        assert not any(node.shares.pool(sv_id) for sv_id in (head, bytes(32)))
        await conn.close()
