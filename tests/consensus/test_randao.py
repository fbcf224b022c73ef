"""The randomness beacon: reveals along the registered hash chain, and the mix."""

from __future__ import annotations

import time

import pytest

from fedcoin.consensus.randao import RandaoChain, next_mix, randao_reveal_for, reveal_ok
from fedcoin.consensus.stake import RANDAO_LENGTH, randao_secret, randao_tip
from fedcoin.data.encoding import sha256
from fedcoin.errors import RandaoExhausted
from tests.helpers import ChainBuilder, key, make_genesis


def test_reveals_walk_down_the_chain_one_preimage_at_a_time() -> None:
    secret = sha256(b"walk")
    tip = randao_tip(secret, 50)
    for _ in range(49):
        reveal = randao_reveal_for(secret, tip, 50)
        assert reveal_ok(reveal, tip)
        tip = reveal
    assert tip == sha256(secret)
    assert randao_reveal_for(secret, tip, 50) == secret
    with pytest.raises(RandaoExhausted):  # the secret itself has no preimage on the chain
        randao_reveal_for(secret, secret, 50)
    with pytest.raises(RandaoExhausted):  # nor has a tip that is not on it
        randao_reveal_for(secret, sha256(b"elsewhere"), 50)


def test_a_full_length_chain_answers_within_the_budget_of_one_height() -> None:
    k = key("randao-speed")
    secret = randao_secret(k)
    tip = randao_tip(secret)
    started = time.perf_counter()
    first = randao_reveal_for(secret, tip)
    second = randao_reveal_for(secret, first)  # the next height: a walk one step shorter
    elapsed = time.perf_counter() - started
    assert sha256(first) == tip and sha256(second) == first
    assert first == randao_tip(secret, RANDAO_LENGTH - 1)
    assert elapsed < 2.0  # 20 000 sha256; seconds only on a very loaded machine


def test_the_mix_folds_every_reveal_in_order() -> None:
    builder = ChainBuilder(make_genesis())
    mix = builder.state.mix
    assert mix == builder.genesis.config_hash
    for _ in range(3):
        builder.add([])
        reveal = builder.header.randao_reveal
        mix = sha256(b"fedcoin/mix/v1" + mix + reveal)
        assert builder.state.mix == mix == next_mix(builder.states[-2].mix, reveal)


def test_a_checkpointed_chain_gives_the_same_reveals_as_the_walk() -> None:
    secret = sha256(b"checkpoints")
    walker = RandaoChain(secret, 250, every=16)
    assert walker.tip == randao_tip(secret, 250)
    tip = walker.tip
    for _ in range(60):
        reveal = walker.reveal_for(tip)
        assert reveal == randao_reveal_for(secret, tip, 250) and sha256(reveal) == tip
        tip = reveal
    # After a restart the state's tip is mid-chain: found again by one walk
    again = RandaoChain(secret, 250, every=16)
    assert again.reveal_for(tip) == randao_reveal_for(secret, tip, 250)
    with pytest.raises(RandaoExhausted):
        again.reveal_for(secret)
