"""Rules every transaction passes: chain id, signature, nonce, fee, balance; transfers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.tx import Transfer, make_tx
from fedcoin.errors import (
    BadSignature,
    FeeTooLow,
    InsufficientBalance,
    InvalidAmount,
    NonceMismatch,
    WrongChain,
)
from tests.helpers import ALICE, BOB, CAROL, FC, MINER, apply_tx, make_genesis, make_transfer


@pytest.fixture
def state():
    return make_genesis().state()


def test_transfer_moves_amount_and_pays_fee_to_proposer(state) -> None:
    after = apply_tx(state, make_transfer(ALICE, BOB, 5 * FC, 0, fee=7))
    assert after.balance(ALICE.address) == 995 * FC - 7
    assert after.balance(BOB.address) == 1005 * FC
    assert after.balance(MINER.address) == 7
    assert after.account(ALICE.address).nonce == 1
    assert after.total_held() == state.total_held()


def test_chain_id_must_match(state) -> None:
    foreign = make_tx(ALICE, "other-chain", 0, Transfer(BOB.address, 1))
    with pytest.raises(WrongChain):
        apply_tx(state, foreign)


def test_signature_must_verify(state) -> None:
    forged = replace(make_transfer(ALICE, BOB, 1, 0), signature=CAROL.sign(b"x", bytes(32)))
    with pytest.raises(BadSignature):
        apply_tx(state, forged)


def test_body_tampering_breaks_signature(state) -> None:
    tx = make_transfer(ALICE, BOB, 1, 0)
    tampered = replace(tx, body=Transfer(CAROL.address, 1))
    with pytest.raises(BadSignature):
        apply_tx(state, tampered)


@pytest.mark.parametrize("nonce", [1, 5])
def test_nonce_must_be_next(state, nonce: int) -> None:
    with pytest.raises(NonceMismatch) as err:
        apply_tx(state, make_transfer(ALICE, BOB, 1, nonce))
    assert err.value.details == {"expected": 0, "got": nonce}


def test_replayed_transaction_is_refused(state) -> None:
    tx = make_transfer(ALICE, BOB, 1, 0)
    after = apply_tx(state, tx)
    with pytest.raises(NonceMismatch):
        apply_tx(after, tx)


def test_fee_must_reach_minimum(state) -> None:
    params = replace(DEFAULT_PARAMS, min_fee=10)
    with pytest.raises(FeeTooLow):
        apply_tx(state, make_transfer(ALICE, BOB, 1, 0, fee=9), params=params)
    apply_tx(state, make_transfer(ALICE, BOB, 1, 0, fee=10), params=params)


def test_balance_must_cover_fee(state) -> None:
    with pytest.raises(InsufficientBalance):
        apply_tx(state, make_transfer(CAROL, BOB, 1, 0, fee=1))


def test_balance_must_cover_amount_plus_fee(state) -> None:
    with pytest.raises(InsufficientBalance):
        apply_tx(state, make_transfer(ALICE, BOB, 1_000 * FC, 0, fee=1))
    apply_tx(state, make_transfer(ALICE, BOB, 1_000 * FC - 1, 0, fee=1))


def test_amount_must_be_positive(state) -> None:
    with pytest.raises(InvalidAmount):
        apply_tx(state, make_transfer(ALICE, BOB, 0, 0))


def test_failed_transaction_leaves_state_unchanged(state) -> None:
    before = state.encode()
    with pytest.raises(InsufficientBalance):
        apply_tx(state, make_transfer(ALICE, BOB, 10**15, 0))
    assert state.encode() == before
