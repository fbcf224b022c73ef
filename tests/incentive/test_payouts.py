"""Payout arithmetic (DESIGN §6): integer splits, the dust rule, refunds, conservation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcoin.data.state import Draft, SvTask
from fedcoin.errors import StoreError
from fedcoin.incentive.payouts import client_shares, settle_round, split_price, void_round
from tests.helpers import ALICE, MINER, MINER2, MINER3, apply_tx, make_genesis, make_publish
from tests.helpers import make_submit as _submit

bps = st.integers(0, 10_000).flatmap(
    lambda c: st.integers(0, 10_000 - c).map(lambda s: (c, s, 10_000 - c - s))
)


@given(st.integers(1, 10**15), bps)
def test_split_sums_to_price(price: int, split: tuple[int, int, int]) -> None:
    clients, server, miners = split_price(price, split)
    assert clients + server + miners == price
    assert min(clients, server, miners) >= 0


def test_default_split_of_the_paper() -> None:
    assert split_price(1_000_000, (7000, 1000, 2000)) == (700_000, 100_000, 200_000)


def test_clients_paid_by_positive_sv_with_dust_back() -> None:
    pays, leftover = client_shares(100, (1, 1, 1, -5))
    assert pays == [33, 33, 33, 0] and leftover == 1


def test_no_positive_value_refunds_the_whole_pool() -> None:
    assert client_shares(100, (0, -3)) == ([0, 0], 100)


@given(st.integers(0, 10**12), st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=12))
def test_client_pool_is_conserved(pool: int, sv: list[int]) -> None:
    pays, leftover = client_shares(pool, tuple(sv))
    assert sum(pays) + leftover == pool
    assert all(p >= 0 for p in pays) and leftover >= 0
    for value, pay in zip(sv, pays, strict=True):
        if value <= 0:
            assert pay == 0


def queued() -> tuple[Draft, SvTask]:
    publish = make_publish(ALICE, 0, price_per_round=1_000_003)
    state = apply_tx(make_genesis().state(), publish, height=1)
    state = apply_tx(state, _submit(publish.id, 1, 0), height=2)
    return Draft(state), state.queue[0]


def test_settle_pays_everyone_and_conserves() -> None:
    draft, sv_task = queued()
    before = draft.freeze()
    miners = [(MINER2.address, 100_000), (MINER3.address, 50_000)]  # by power, as settled
    payout = settle_round(draft, sv_task, (3, 1, 0), miners, MINER.address)
    after = draft.freeze()
    assert payout.total == sv_task.price
    assert [p for _, p in payout.clients] == [525_001, 175_000, 0]
    assert payout.miners == tuple(miners)
    assert payout.proposer == 200_001 - 150_000
    assert (
        after.tasks[sv_task.task_id].escrow == before.tasks[sv_task.task_id].escrow - sv_task.price
    )
    assert after.total_held() == after.supply


def test_void_refunds_the_price() -> None:
    draft, sv_task = queued()
    before = draft.account(ALICE.address).balance
    payout = void_round(draft, sv_task)
    assert payout.voided and payout.refund == sv_task.price
    assert draft.account(ALICE.address).balance == before + sv_task.price
    assert draft.freeze().total_held() == draft.freeze().supply


def test_miners_cannot_be_paid_more_than_their_pool() -> None:
    draft, sv_task = queued()
    with pytest.raises(StoreError):
        settle_round(draft, sv_task, (3, 1, 0), [(MINER2.address, 200_002)], MINER.address)
