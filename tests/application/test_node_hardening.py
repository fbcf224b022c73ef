"""A full node on real sockets under hostile or heavy input: no loop dies, no work before
authentication, a 10 000-transaction mempool stays responsive and blocks still get made."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import aiohttp
import pytest

from fedcoin.application.bft_ledger import ChainLedger, StaleHeight
from fedcoin.application.chain_link import ChainLink
from fedcoin.application.mempool import Mempool
from fedcoin.application.miner import TableCache
from fedcoin.application.supervise import supervised
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.stake import randao_secret
from fedcoin.data.keys import PrivateKey
from fedcoin.data.store import MemoryChainStore
from fedcoin.data.tx import (
    ClientUpdate,
    ContentRef,
    ShareCommit,
    ShareReveal,
    SubmitRound,
    Transfer,
    make_tx,
)
from fedcoin.errors import Reject, ShareContentUnavailable
from fedcoin.network.messages import TxMessage, encode_message
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


async def test_table_cache_computes_a_table_once_and_stays_bounded() -> None:
    cache, calls = TableCache(capacity=3), []

    async def compute(value: int) -> list[int]:
        calls.append(value)
        await asyncio.sleep(0)  # let the other askers arrive while it computes
        return [value, value + 1]

    # Eight validators of one process ask for the same table at once: it is computed once
    asked = [cache.get(b"t" * 32, lambda: compute(7)) for _ in range(8)]
    assert await asyncio.gather(*asked) == [(7, 8)] * 8
    assert calls == [7] and cache.computed == 1

    # A failure is not cached: the next ask computes again
    async def broken() -> list[int]:
        raise ShareContentUnavailable(reason="undecodable")

    with pytest.raises(ShareContentUnavailable):
        await cache.get(b"f" * 32, broken)
    assert await cache.get(b"f" * 32, lambda: compute(1)) == (1, 2)
    # Bounded: the oldest tables are forgotten
    for i in range(10):
        await cache.get(bytes([i]) * 32, lambda i=i: compute(100 + i))
    assert len(cache._tables) == 3


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
        chain, ChainLink(chain), mempool, proposer=MINER.public,
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
    """A peer floods ShareCommit and ShareReveal transactions signed by 500 fresh keys (for the
    head's hash, which is no open SV task, with tables of every size): none reaches the mempool,
    the node keeps answering and keeps making blocks."""
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        conn = await handshake_as(node.address, "flooder", cluster.genesis)
        head = node.chain.head.hash
        for i in range(500):
            table = tuple(mask % 7 for mask in range(1 + 8 * i))
            body = (
                ShareReveal(head, bytes(32), bytes(32), table) if i % 2 else ShareCommit(head, head)
            )
            tx = make_tx(key(f"fresh-{i}"), CHAIN_ID, 0, body)
            await conn.send(encode_message(TxMessage(tx)))
        payment = make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 1), 0)
        await node.submit_tx(payment)
        await cluster.wait_until(
            lambda: node.chain.head_state().account(SERVER_KEY.address).nonce == 1, timeout=60
        )
        async with aiohttp.ClientSession() as http, http.get(f"{node.url}/status") as resp:
            assert resp.status == 200
        included = [
            t for h in range(1, node.chain.head.height + 1) for t in node.store.block_at(h).txs
        ]
        assert not any(isinstance(t.body, ShareCommit | ShareReveal) for t in included)
        await conn.close()
