"""The committed chain through ``Chain`` on both stores: propose, check, commit; no reorgs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fedcoin.consensus.chain import Chain, Imported
from fedcoin.consensus.proposer import next_height_set, proposer_for_round
from fedcoin.consensus.stake import NO_TIP
from fedcoin.data.block import tx_root
from fedcoin.data.store import MemoryChainStore
from fedcoin.data.tx import Bond, SubmitRound
from fedcoin.errors import (
    BadTxInBlock,
    ConflictingCommit,
    InsufficientPower,
    StoreError,
    TimestampInFuture,
    TxRootMismatch,
    UnknownParent,
)
from tests.helpers import (
    ALICE,
    BOB,
    FC,
    KEYS,
    MINER,
    MINER2,
    VOTE_CHECK,
    ChainBuilder,
    TableVerifier,
    certify,
    commit_next,
    key,
    make_genesis,
    make_publish,
    make_store,
    make_submit,
    make_transfer,
    reveal_of,
    tx,
    value_on_chain,
)


@pytest.fixture(params=["memory", "sqlite"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chain]:
    genesis = make_genesis()
    store = make_store(request.param, tmp_path, genesis)
    yield Chain(store, genesis, TableVerifier(), vote_check=VOTE_CHECK)
    store.close()


def propose(chain: Chain, *txs, proposer=MINER, gap: int = 1_000):
    return chain.propose(
        proposer.public,
        reveal_of(proposer, chain.head_state()),
        timestamp_ms=chain.head.timestamp_ms + gap,
        txs=txs,
    )


def test_commit_extends_the_head_and_is_idempotent(chain: Chain) -> None:
    for nonce in range(3):
        block, result = commit_next(chain, MINER, [make_transfer(ALICE, BOB, 5, nonce)])
        assert result.outcome is Imported.HEAD and chain.head.hash == block.hash
    assert chain.head.height == 3
    assert chain.head_state().balance(BOB.address) == 1_000 * 10**6 + 15
    certificate = chain.certificate(3)
    assert certificate is not None and certificate.block_id == chain.head.hash
    assert chain.commit(block, certificate).outcome is Imported.KNOWN
    assert chain.head.height == 3


def test_a_proposal_carries_the_heads_certificate(chain: Chain) -> None:
    first, _ = commit_next(chain)
    second, _ = propose(chain)
    assert first.last_commit is None
    assert second.last_commit == chain.certificate(1)
    assert chain.check_proposal(second, now_ms=None).state.root() == second.header.state_root


def test_committed_serves_blocks_with_their_certificates(chain: Chain) -> None:
    blocks = [commit_next(chain)[0] for _ in range(5)]
    got = chain.committed(1, 3)
    assert [b for b, _ in got] == blocks[1:4]
    assert [c for _, c in got] == [chain.certificate(h) for h in (2, 3, 4)]
    # Block h+1 carries a certificate for block h too: a syncing node checks either
    assert all(b.last_commit is not None and b.last_commit.block_id == p.hash
               for p, b in zip(blocks, blocks[1:], strict=False))  # fmt: skip


def test_validator_sets_advance_one_step_per_height(chain: Chain) -> None:
    first = chain.validator_set(1)
    assert chain.validator_set() == first
    proposer = KEYS[proposer_for_round(first, 0)]
    block, _ = commit_next(chain, proposer)
    assert chain.validator_set(1) == first  # a past height's set, from the store
    assert chain.validator_set() == chain.validator_set(2) == next_height_set(first)
    assert block.header.validators_hash == first.hash
    assert block.header.next_validators_hash == chain.validator_set(2).hash
    with pytest.raises(StoreError):
        chain.validator_set(4)


def test_a_committed_height_never_commits_another_block(chain: Chain) -> None:
    """No reorganisation: even a well-certified second block at a height is refused."""
    state = chain.head_state()
    block, _ = propose(chain, make_transfer(ALICE, BOB, 500 * 10**6, 0))
    other, _ = propose(chain, make_transfer(ALICE, MINER2, 1, 0), gap=2_000)
    chain.commit(block, certify(block, state))
    with pytest.raises(ConflictingCommit):
        chain.commit(other, certify(other, state))
    assert chain.head.hash == block.hash
    assert chain.head_state().balance(BOB.address) == 1_500 * 10**6


def test_a_block_that_does_not_extend_the_head_waits_for_sync(chain: Chain) -> None:
    first, _ = propose(chain)
    state = chain.head_state()
    chain.commit(first, certify(first, state))
    second, _ = propose(chain)
    later_state = chain.check_proposal(second, now_ms=None).state
    fresh = Chain(MemoryChainStore(chain.genesis), chain.genesis, TableVerifier())
    with pytest.raises(UnknownParent):
        fresh.commit(second, certify(second, later_state))
    assert fresh.head.height == 0


def test_commit_requires_two_thirds_of_the_heights_power(chain: Chain) -> None:
    block, _ = propose(chain)
    members = sorted(pk for pk, _, _ in chain.head_state().validators)
    weak = certify(block, chain.head_state(), signers=[KEYS[pk] for pk in members[:5]])
    with pytest.raises(InsufficientPower):
        chain.commit(block, weak)
    assert chain.head.height == 0 and chain.certificate(1) is None


def test_check_proposal_refuses_a_far_future_timestamp(chain: Chain) -> None:
    tolerance = chain.genesis.params.future_tolerance_ms
    block, _ = propose(chain, gap=14_000 + tolerance)
    now = chain.head.timestamp_ms + 1_000
    with pytest.raises(TimestampInFuture):
        chain.check_proposal(block, now_ms=now)
    # The cached execution does not skip the clock rule
    chain.check_proposal(block, now_ms=None)
    with pytest.raises(TimestampInFuture):
        chain.check_proposal(block, now_ms=now)
    assert chain.check_proposal(block, now_ms=block.header.timestamp_ms - tolerance)


def test_an_invalid_proposal_changes_nothing(chain: Chain) -> None:
    block, _ = propose(chain, make_transfer(ALICE, BOB, 5, 0))
    txs = (make_transfer(ALICE, BOB, 5, 1),)
    replayed = replace(block, txs=txs, header=replace(block.header, tx_root=tx_root(txs)))
    before = chain.head_state()
    with pytest.raises(BadTxInBlock):
        chain.check_proposal(replayed, now_ms=None)
    # The same header with another body does not hit the cache of the valid block
    with pytest.raises(TxRootMismatch):
        chain.check_proposal(replace(block, txs=txs), now_ms=None)
    with pytest.raises(TxRootMismatch):
        chain.commit(replace(block, txs=txs), certify(block, before))
    assert chain.head.height == 0 and chain.head_state() == before


@dataclass
class CountingVerifier(TableVerifier):
    rounds_checked: int = 0

    def check_round(self, task, round_: SubmitRound) -> None:  # type: ignore[no-untyped-def]
        self.rounds_checked += 1
        super().check_round(task, round_)


def test_commit_reuses_the_execution_check_proposal_cached() -> None:
    genesis = make_genesis()
    verifier = CountingVerifier()
    chain = Chain(MemoryChainStore(genesis), genesis, verifier, vote_check=VOTE_CHECK)
    publish = make_publish(ALICE, 0)
    commit_next(chain, MINER, [publish])
    verifier.rounds_checked = 0
    block, _ = propose(chain, make_submit(publish.id, 1, 0))
    chain.check_proposal(block, now_ms=block.header.timestamp_ms)
    assert verifier.rounds_checked == 1
    chain.commit(block, certify(block, chain.head_state()))
    assert verifier.rounds_checked == 1 and chain.head.hash == block.hash


def test_genesis_mismatch_is_refused() -> None:
    with pytest.raises(ValueError):
        Chain(MemoryChainStore(make_genesis()), make_genesis({BOB: 1}), TableVerifier())


def test_a_late_node_syncs_committed_blocks_checking_each_certificate(tmp_path: Path) -> None:
    genesis = make_genesis()
    source = Chain(MemoryChainStore(genesis), genesis, TableVerifier(), vote_check=VOTE_CHECK)
    builder = ChainBuilder(genesis, chain=source)
    builder.add([tx(ALICE, 0, Bond(50 * FC, NO_TIP))])  # ALICE's power changes at height 10
    while builder.header.height < 2 * genesis.params.epoch_blocks + 3:
        builder.add([])
    assert source.validator_set().hash != source.validator_set(1).hash
    late = Chain(make_store("sqlite", tmp_path, genesis), genesis, TableVerifier())
    batches = 0
    while True:
        batch = source.committed(late.head.height, 7)
        if not batch:
            break
        batches += 1
        for block, certificate in batch:
            if block.height == 12:
                # A certificate from the wrong set (here: one signer short) is refused on the way
                short = replace(certificate, signatures=certificate.signatures[:1])
                with pytest.raises(InsufficientPower):
                    late.commit(block, short)
            late.commit(block, certificate)
    assert batches == 4 and late.head.hash == source.head.hash
    assert late.head_state() == source.head_state()
    assert late.certificate(late.head.height) == source.certificate(source.head.height)
    late.store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_settling_block_keeps_its_rounds_payouts_across_a_restart(
    kind: str, tmp_path: Path
) -> None:
    """``payouts_of`` answers from the stored receipt: the rounds the block's end-of-block step
    settled, nothing for the blocks that only carried commits and reveals."""
    genesis = make_genesis(validators=[MINER, MINER2, key("validator-0")])
    store = make_store(kind, tmp_path, genesis)
    chain = Chain(store, genesis, TableVerifier(), vote_check=VOTE_CHECK)
    publish = make_publish(ALICE, 0)
    commit_next(chain, MINER, [publish])
    submit = make_submit(publish.id, 1, 0)
    commit_next(chain, MINER, [submit])
    applied = value_on_chain(chain, submit.id)
    (payout,) = applied.payouts
    assert payout.task_id == publish.id and payout.round == 1 and not payout.voided
    settling = chain.head
    assert chain.payouts_of(settling.hash) == (payout,)
    for height in range(1, settling.height):
        block = chain.store.block_at(height)
        assert block is not None and chain.payouts_of(block.hash) == ()
    heights = [h for h, _ in chain.store.task_blocks(publish.id)]
    assert heights == [1, 2, settling.height]
    if kind == "sqlite":
        store.close()
        store = make_store(kind, tmp_path, genesis)
        chain = Chain(store, genesis, TableVerifier(), vote_check=VOTE_CHECK)
        assert chain.payouts_of(settling.hash) == (payout,)
    store.close()
