"""The mempool: contiguous nonces, fee priority across senders, bounded, refreshed on new heads."""

from __future__ import annotations

from dataclasses import replace

import pytest

import fedcoin.application.mempool as mempool_module
from fedcoin.application.mempool import Mempool, MempoolFull, SenderQueueFull
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.tx import FraudProof
from fedcoin.errors import InsufficientBalance, NonceMismatch
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    FC,
    SERVER,
    ChainBuilder,
    TableVerifier,
    key,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
)
from tests.helpers import tx as signed


def pool(capacity: int = 100) -> tuple[Mempool, ChainBuilder]:
    genesis = make_genesis()
    return Mempool(genesis, TableVerifier(), capacity), ChainBuilder(genesis)


def test_admits_contiguous_nonces_only() -> None:
    mp, chain = pool()
    mp.add(make_transfer(ALICE, BOB, 1, 0), chain.state, 0, 0)
    mp.add(make_transfer(ALICE, BOB, 1, 1), chain.state, 0, 0)
    with pytest.raises(NonceMismatch):
        mp.add(make_transfer(ALICE, BOB, 1, 3), chain.state, 0, 0)
    assert len(mp) == 2


def test_refuses_what_the_pending_run_cannot_pay() -> None:
    mp, chain = pool()
    mp.add(make_transfer(ALICE, BOB, 999 * FC, 0), chain.state, 0, 0)
    with pytest.raises(InsufficientBalance):
        mp.add(make_transfer(ALICE, BOB, 2 * FC, 1), chain.state, 0, 0)
    assert len(mp) == 1


def test_select_keeps_nonce_order_and_prefers_fees() -> None:
    mp, chain = pool()
    a0, a1 = make_transfer(ALICE, CAROL, 1, 0, fee=1), make_transfer(ALICE, CAROL, 1, 1, fee=50)
    b0 = make_transfer(BOB, CAROL, 1, 0, fee=10)
    for tx in (a0, a1, b0):
        mp.add(tx, chain.state, 0, 0)
    chosen = mp.select(10)
    assert chosen.index(a0) < chosen.index(a1)
    assert chosen[0] == b0  # the richer fee goes first; Alice's run then follows in order
    assert mp.select(1) == [b0]


def test_is_bounded() -> None:
    mp, chain = pool(capacity=2)
    mp.add(make_transfer(ALICE, BOB, 1, 0), chain.state, 0, 0)
    mp.add(make_transfer(BOB, ALICE, 1, 0), chain.state, 0, 0)
    with pytest.raises(MempoolFull):
        mp.add(make_transfer(ALICE, BOB, 1, 1), chain.state, 0, 0)


def test_refresh_drops_what_a_block_included_or_invalidated() -> None:
    mp, chain = pool()
    included = make_transfer(ALICE, BOB, 1, 0)
    follower = make_transfer(ALICE, BOB, 1, 1)
    bob = make_transfer(BOB, CAROL, 5, 0)
    for tx in (included, follower, bob):
        mp.add(tx, chain.state, 0, 0)
    # a block includes Alice's first transfer and a competing spend of all of Bob's coins
    spend_all = make_transfer(BOB, ALICE, 1_000 * FC, 0)
    chain.add([included, spend_all])
    mp.refresh(chain.state, 1, 0)
    assert included.id not in mp and bob.id not in mp
    assert follower.id in mp and mp.select(10) == [follower]


def test_drop_removes_a_transaction_and_its_successors() -> None:
    mp, chain = pool()
    txs = [make_transfer(ALICE, BOB, 1, n) for n in range(3)]
    for tx in txs:
        mp.add(tx, chain.state, 0, 0)
    mp.drop(txs[1].id)
    assert mp.select(10) == [txs[0]] and len(mp) == 1


def test_a_full_pool_takes_a_richer_fee_by_evicting_the_cheapest() -> None:
    mp, chain = pool(capacity=3)
    cheap = [make_transfer(ALICE, BOB, 1, n) for n in range(3)]
    for tx in cheap:
        mp.add(tx, chain.state, 0, 0)
    rich = make_transfer(BOB, CAROL, 1, 0, fee=10 * FC)
    mp.add(rich, chain.state, 0, 0)
    # Alice's last transaction made room; her run stays contiguous
    assert rich.id in mp and cheap[2].id not in mp and len(mp) == 3
    assert mp.select(10) == [rich, cheap[0], cheap[1]]
    with pytest.raises(MempoolFull):  # paying no more than the cheapest does not evict
        mp.add(make_transfer(BOB, ALICE, 1, 1), chain.state, 0, 0)


def test_caps_pending_transactions_per_sender() -> None:
    genesis = make_genesis()
    mp, chain = Mempool(genesis, TableVerifier(), 100, per_sender=2), ChainBuilder(genesis)
    mp.add(make_transfer(ALICE, BOB, 1, 0), chain.state, 0, 0)
    mp.add(make_transfer(ALICE, BOB, 1, 1), chain.state, 0, 0)
    with pytest.raises(SenderQueueFull):
        mp.add(make_transfer(ALICE, BOB, 1, 2), chain.state, 0, 0)
    mp.add(make_transfer(BOB, ALICE, 1, 0), chain.state, 0, 0)
    assert len(mp) == 3


def test_admission_is_linear_in_the_senders_run() -> None:
    """Admitting the k-th transaction of one sender applies one transaction, not the k-1
    pending before it again (today's admission replays the run: quadratic)."""
    genesis = make_genesis()
    mp, chain = Mempool(genesis, TableVerifier(), 10_000), ChainBuilder(genesis)
    txs = [make_transfer(ALICE, BOB, 1, n) for n in range(2_000)]
    for tx in txs:
        _ = tx.id  # hash outside the timing
    applied = 0
    calls: list[int] = []
    real = mempool_module.apply_transaction

    def counting(*args: object, **kwargs: object) -> None:
        nonlocal applied
        applied += 1
        real(*args, **kwargs)  # type: ignore[arg-type]

    mempool_module.apply_transaction = counting  # type: ignore[assignment]
    try:
        for tx in txs:
            before = applied
            mp.add(tx, chain.state, 0, 0, signature_checked=True)
            calls.append(applied - before)
    finally:
        mempool_module.apply_transaction = real
    assert len(mp) == 2_000 and set(calls) == {1}


def test_a_reorg_returns_the_dropped_blocks_transactions_to_the_pool() -> None:
    genesis = make_genesis()
    mp, chain = Mempool(genesis, TableVerifier()), ChainBuilder(genesis)
    fork = ChainBuilder(genesis)
    txs = [make_transfer(ALICE, BOB, 1, n) for n in range(3)]
    for tx in txs:
        mp.add(tx, chain.state, 0, 0)
    chain.add(txs[:2])
    mp.refresh(chain.state, 1, 0)
    assert mp.select(10) == [txs[2]]
    # another branch wins without Alice's transfers: the chain returns the block that left
    # the canonical chain, and none of the three may be lost
    other = make_transfer(BOB, CAROL, 1, 0)
    fork.add([other])
    mp.refresh(fork.state, 1, 0, returned=txs[:2])
    assert mp.select(10) == txs


def test_fraud_proofs_beyond_what_a_fraud_window_can_include_are_refused_unevaluated() -> None:
    """Each admitted FraudProof costs an exact evaluation; the pool holds at most
    max_fraud_proofs · fraud_blocks of them, so a flood of claims that would expire unincluded
    (deposits never burned) is refused before it is evaluated."""
    params = replace(DEFAULT_PARAMS, max_fraud_proofs=1, fraud_blocks=2)
    senders = [key(f"prover-{i}") for i in range(3)]
    genesis = make_genesis(
        {ALICE: 1_000 * FC, SERVER: 10 * FC, **dict.fromkeys(senders, 10 * FC)},
        params,
        validators=[ALICE],
    )
    chain = ChainBuilder(genesis, proposer=ALICE)
    publish = make_publish(ALICE, 0)
    chain.add([publish])
    chain.add([make_submit(publish.id, 1, 0)])
    chain.value(chain.state.queue[0].sv_task_id)
    sv_id = chain.state.settled[0].sv.sv_task_id
    verifier = TableVerifier()
    mp = Mempool(genesis, verifier)
    for position, sender in enumerate(senders[:2]):
        claim = signed(sender, 0, FraudProof(sv_id, position))
        mp.add(claim, chain.state, chain.header.height, 0)
    assert mp.fraud_proofs() == 2 and len(verifier.evaluated) == 2
    with pytest.raises(MempoolFull):
        mp.add(signed(senders[2], 0, FraudProof(sv_id, 2)), chain.state, chain.header.height, 0)
    assert len(verifier.evaluated) == 2  # refused before any evaluation
