"""Fork choice and reorganisation through ``Chain.import_block`` on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcoin.consensus.chain import Chain, Imported
from fedcoin.consensus.forkchoice import heavier
from fedcoin.data.block import PosapSection
from fedcoin.data.store import MemoryChainStore
from fedcoin.errors import BadTxInBlock, UnknownParent
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    MINER2,
    MINER3,
    ChainBuilder,
    TableVerifier,
    make_genesis,
    make_publish,
    make_share,
    make_store,
    make_submit,
    make_transfer,
)


@pytest.fixture(params=["memory", "sqlite"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chain]:
    genesis = make_genesis()
    store = make_store(request.param, tmp_path, genesis)
    yield Chain(store, genesis, TableVerifier())
    store.close()


def branch(start: ChainBuilder, length: int, to, amount: int, nonce: int) -> list:
    blocks = []
    for i in range(length):
        start.add([make_transfer(ALICE, to, amount, nonce + i)])
        blocks.append(start.block)
    return blocks


def test_extending_the_head(chain: Chain) -> None:
    builder = ChainBuilder(chain.genesis)
    for block in branch(builder, 3, BOB, 5, 0):
        assert chain.import_block(block).outcome is Imported.HEAD
    assert chain.head.hash == builder.block.hash
    assert chain.head_state() == builder.state
    assert chain.import_block(builder.block).outcome is Imported.KNOWN


def test_unknown_parent_is_reported(chain: Chain) -> None:
    builder = ChainBuilder(chain.genesis)
    blocks = branch(builder, 2, BOB, 5, 0)
    with pytest.raises(UnknownParent):
        chain.import_block(blocks[1])
    assert chain.head.height == 0


def test_invalid_block_changes_nothing(chain: Chain) -> None:
    builder = ChainBuilder(chain.genesis)
    good = branch(builder, 1, BOB, 5, 0)[0]
    chain.import_block(good)
    bad_builder = ChainBuilder(chain.genesis)
    bad_builder.block, bad_builder.state, bad_builder.now = good, builder.state, builder.now
    with pytest.raises(BadTxInBlock):
        bad_builder.make([make_transfer(ALICE, BOB, 5, 0)])  # replayed nonce
    assert chain.head.hash == good.hash


def test_reorg_to_heavier_branch_restores_its_state(chain: Chain) -> None:
    a = ChainBuilder(chain.genesis)
    b = ChainBuilder(chain.genesis)
    b.now += 1  # different timestamps: different blocks
    branch_a = branch(a, 2, BOB, 5, 0)
    branch_b = branch(b, 3, CAROL, 7, 0)
    for block in branch_a:
        chain.import_block(block)
    results = [chain.import_block(block) for block in branch_b]
    # Equal weights at height 2 tie-break on the block hash, so the switch happens at the second
    # or the third block of branch b; either way two blocks of branch a leave the chain
    assert results[0].outcome is Imported.SIDE and results[-1].outcome is Imported.HEAD
    switch = next(r for r in results if r.reorg_depth)
    assert switch.reorg_depth == 2
    # the blocks that left the canonical chain are named, tip first (their txs go back)
    assert [b.hash for b in switch.left] == [branch_a[1].hash, branch_a[0].hash]
    assert chain.head.hash == b.block.hash
    state = chain.head_state()
    assert state == b.state
    assert state.balance(CAROL.address) == 21 and state.balance(BOB.address) == 1_000_000_000
    # and back, when the first branch grows heavier
    for block in branch(a, 2, BOB, 5, 2):
        chain.import_block(block)
    assert chain.head.hash == a.block.hash and chain.head_state() == a.state


def test_equal_weight_tie_goes_to_lower_hash(chain: Chain) -> None:
    a, b = ChainBuilder(chain.genesis), ChainBuilder(chain.genesis)
    b.now += 1
    (block_a,) = branch(a, 1, BOB, 5, 0)
    (block_b,) = branch(b, 1, CAROL, 5, 0)
    chain.import_block(block_a)
    chain.import_block(block_b)
    expected = min(block_a.hash, block_b.hash)
    assert chain.head.hash == expected
    assert heavier(block_b.header, block_a.header) == (block_b.hash < block_a.hash)


def test_posap_block_outweighs_a_longer_transaction_chain(chain: Chain) -> None:
    base = ChainBuilder(chain.genesis, verifier=chain.verifier)  # type: ignore[arg-type]
    publish = make_publish(ALICE, 0)
    base.add([publish])
    submit = make_submit(publish.id, 1, 0)
    base.add([submit])
    for block in base.blocks[1:]:
        chain.import_block(block)
    chain.verifier.true_sv[submit.id] = (3, 2, 1)  # type: ignore[attr-defined]
    shares = tuple(make_share(m, submit.id, (3, 2, 1)) for m in (MINER2, MINER3))
    base.add(posap=PosapSection(submit.id, shares))
    result = chain.import_block(base.block)
    assert result.outcome is Imported.HEAD
    assert chain.head.weight == 2 + 3
    payout = chain.payout_of(base.block.hash)
    assert payout is not None and payout.sv == (3, 2, 1)


def test_genesis_mismatch_is_refused() -> None:
    with pytest.raises(ValueError):
        Chain(MemoryChainStore(make_genesis()), make_genesis({BOB: 1}), TableVerifier())
