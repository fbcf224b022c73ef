"""Block rules: one test per rule, valid and invalid; an invalid block changes nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.consensus.rules import apply_block
from fedcoin.data.block import Block, PosapSection
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.errors import (
    BadBlockSignature,
    BadShareSignature,
    BadTxInBlock,
    BadVersion,
    BlockTooSoon,
    DuplicateMiner,
    EmptyBlock,
    EstimateMismatch,
    PosapRootMismatch,
    SettlementMissing,
    SettlementUnexpected,
    StateRootMismatch,
    TimestampInFuture,
    TimestampNotIncreasing,
    TooManyTxs,
    TxRootMismatch,
    UnknownParent,
    VoidTooEarly,
    WeightMismatch,
    WrongEstimateLength,
    WrongHeight,
    WrongShareTask,
    WrongSvTask,
)
from tests.helpers import (
    ALICE,
    BOB,
    CLIENTS,
    FC,
    MINER,
    MINER2,
    MINER3,
    SERVER,
    ChainBuilder,
    make_genesis,
    make_publish,
    make_share,
    make_submit,
    make_transfer,
)

SV = (400_000, 250_000, 100_000)


def with_pending_round() -> tuple[ChainBuilder, bytes]:
    """A chain whose head queued round 1 of a task; the verifier knows its true SV."""
    chain = ChainBuilder(make_genesis())
    publish = make_publish(ALICE, 0)
    chain.add([publish])
    submit = make_submit(publish.id, 1, 0)
    chain.add([submit])
    chain.verifier.true_sv[submit.id] = SV
    return chain, submit.id


def check(chain: ChainBuilder, block: Block, now_ms: int | None = None):
    return apply_block(
        chain.state, block, chain.header, chain.genesis, chain.verifier, now_ms=now_ms
    )


def resign(block: Block, **header_changes: object) -> Block:
    header = replace(block.header, **header_changes).signed(MINER)  # type: ignore[arg-type]
    return replace(block, header=header)


def test_valid_block_applies_and_matches_builder() -> None:
    chain = ChainBuilder(make_genesis())
    block, built = chain.make([make_transfer(ALICE, BOB, 3, 0)])
    assert check(chain, block).state == built.state


# --- header -------------------------------------------------------------------------------
def tx_block() -> tuple[ChainBuilder, Block]:
    chain = ChainBuilder(make_genesis())
    block, _ = chain.make([make_transfer(ALICE, BOB, 3, 0)])
    return chain, block


def test_version_must_be_supported() -> None:
    chain, block = tx_block()
    with pytest.raises(BadVersion):
        check(chain, resign(block, version=2))


def test_parent_must_be_the_named_block() -> None:
    chain, block = tx_block()
    with pytest.raises(UnknownParent):
        check(chain, resign(block, parent=b"\x05" * 32))


def test_height_is_parent_plus_one() -> None:
    chain, block = tx_block()
    with pytest.raises(WrongHeight):
        check(chain, resign(block, height=2))


def test_timestamp_increases() -> None:
    chain, block = tx_block()
    with pytest.raises(TimestampNotIncreasing):
        check(chain, resign(block, timestamp_ms=chain.header.timestamp_ms))


def test_timestamp_not_too_far_in_future() -> None:
    chain, block = tx_block()
    ts = block.header.timestamp_ms
    tolerance = DEFAULT_PARAMS.future_tolerance_ms
    check(chain, block, now_ms=ts - tolerance)
    with pytest.raises(TimestampInFuture):
        check(chain, block, now_ms=ts - tolerance - 1)


def test_proposer_signature_must_verify() -> None:
    chain, block = tx_block()
    forged = replace(block, header=replace(block.header, signature=bytes(64)))
    with pytest.raises(BadBlockSignature):
        check(chain, forged)


def test_tx_root_commits_to_transactions() -> None:
    chain, block = tx_block()
    swapped = replace(block, txs=(make_transfer(ALICE, BOB, 4, 0),))
    with pytest.raises(TxRootMismatch):
        check(chain, swapped)


def test_posap_root_commits_to_section() -> None:
    chain, sv_id = with_pending_round()
    block, _ = chain.make(posap=PosapSection(sv_id, (make_share(MINER2, sv_id, SV),)))
    other = PosapSection(sv_id, (make_share(MINER3, sv_id, SV),))
    with pytest.raises(PosapRootMismatch):
        check(chain, replace(block, posap=other))


def test_state_root_commits_to_post_state() -> None:
    chain, block = tx_block()
    with pytest.raises(StateRootMismatch):
        check(chain, resign(block, state_root=b"\x01" * 32))


def test_weight_is_cumulative() -> None:
    chain, block = tx_block()
    with pytest.raises(WeightMismatch):
        check(chain, resign(block, weight=block.header.weight + 1))


# --- body ---------------------------------------------------------------------------------
def test_transaction_only_block_waits_min_interval() -> None:
    chain = ChainBuilder(make_genesis())
    with pytest.raises(BlockTooSoon):
        chain.make([make_transfer(ALICE, BOB, 3, 0)], gap=DEFAULT_PARAMS.min_block_interval_ms - 1)


def test_empty_block_is_refused() -> None:
    chain = ChainBuilder(make_genesis())
    with pytest.raises(EmptyBlock):
        chain.make([])


def test_too_many_transactions() -> None:
    params = replace(DEFAULT_PARAMS, max_block_txs=2)
    chain = ChainBuilder(make_genesis(params=params))
    with pytest.raises(TooManyTxs):
        chain.make([make_transfer(ALICE, BOB, 1, n) for n in range(3)])


def test_invalid_transaction_names_its_rule_and_index() -> None:
    chain = ChainBuilder(make_genesis())
    with pytest.raises(BadTxInBlock) as err:
        chain.make([make_transfer(ALICE, BOB, 1, 0), make_transfer(ALICE, BOB, 1, 0)])
    assert err.value.details["index"] == 1 and err.value.details["rule"] == "NonceMismatch"


def test_invalid_block_leaves_state_unchanged() -> None:
    chain, block = tx_block()
    before = chain.state.encode()
    with pytest.raises(StateRootMismatch):
        check(chain, resign(block, state_root=b"\x01" * 32))
    assert chain.state.encode() == before


# --- PoSap section --------------------------------------------------------------------------
def test_settling_block_pays_by_median_sv() -> None:
    chain, sv_id = with_pending_round()
    low = (SV[0] - 10, SV[1], SV[2])
    chain.verifier.true_sv[sv_id] = SV
    shares = (make_share(MINER2, sv_id, SV), make_share(MINER3, sv_id, SV))
    applied = chain.add(posap=PosapSection(sv_id, shares))
    assert applied.payout is not None and applied.payout.sv == SV
    assert chain.state.queue == ()
    assert chain.header.weight == 2 + 1 + len(shares)
    clients_pool = 10 * FC * 7000 // 10_000
    paid = dict(applied.payout.clients)
    assert paid[CLIENTS[0].address] == clients_pool * SV[0] // sum(SV)
    assert chain.state.balance(MINER2.address) == 10 * FC * 2000 // 10_000 // 2
    assert chain.state.balance(SERVER.address) == 100 * FC + 10 * FC * 1000 // 10_000
    assert chain.state.supply == chain.state.total_held()
    assert low != SV


def test_pending_round_must_be_settled() -> None:
    chain, _ = with_pending_round()
    with pytest.raises(SettlementMissing):
        chain.make([make_transfer(ALICE, BOB, 1, 1)])


def test_section_must_settle_the_oldest_task() -> None:
    chain, sv_id = with_pending_round()
    other = b"\x08" * 32
    with pytest.raises(WrongSvTask):
        chain.make(posap=PosapSection(other, (make_share(MINER2, other, SV),)))


def test_section_needs_a_pending_task() -> None:
    chain = ChainBuilder(make_genesis())
    with pytest.raises(SettlementUnexpected):
        chain.make(posap=PosapSection(b"\x01" * 32, ()))


def test_void_only_after_timeout() -> None:
    chain, sv_id = with_pending_round()
    timeout = chain.state.tasks[chain.state.queue[0].task_id].spec.posap.posap_timeout_ms
    with pytest.raises(VoidTooEarly):
        chain.make(posap=PosapSection(sv_id, ()), gap=timeout - 1)
    chain.now -= timeout - 1
    before = chain.state.balance(ALICE.address)
    applied = chain.add(posap=PosapSection(sv_id, ()), gap=timeout)
    assert applied.payout is not None and applied.payout.voided
    assert chain.state.balance(ALICE.address) == before + 10 * FC
    assert chain.state.queue == ()


def test_share_for_another_task_is_refused() -> None:
    chain, sv_id = with_pending_round()
    wrong = make_share(MINER2, b"\x02" * 32, SV)
    with pytest.raises(WrongShareTask):
        chain.make(posap=PosapSection(sv_id, (wrong,)))


def test_one_share_per_miner() -> None:
    chain, sv_id = with_pending_round()
    share = make_share(MINER2, sv_id, SV)
    with pytest.raises(DuplicateMiner):
        chain.make(posap=PosapSection(sv_id, (share, share)))


def test_share_estimate_has_one_value_per_client() -> None:
    chain, sv_id = with_pending_round()
    with pytest.raises(WrongEstimateLength):
        chain.make(posap=PosapSection(sv_id, (make_share(MINER2, sv_id, SV[:2]),)))


def test_share_signature_must_verify() -> None:
    chain, sv_id = with_pending_round()
    share = replace(make_share(MINER2, sv_id, SV), signature=bytes(64))
    with pytest.raises(BadShareSignature):
        chain.make(posap=PosapSection(sv_id, (share,)))


def test_share_work_is_checked_by_the_verifier() -> None:
    chain, sv_id = with_pending_round()
    lying = make_share(MINER2, sv_id, (SV[0] * 2, SV[1], SV[2]))
    with pytest.raises(EstimateMismatch):
        chain.make(posap=PosapSection(sv_id, (lying,)))


def test_settling_block_carries_next_round_too() -> None:
    chain, sv_id = with_pending_round()
    task_id = chain.state.queue[0].task_id
    nxt = make_submit(task_id, 2, 1)
    chain.add([nxt], posap=PosapSection(sv_id, (make_share(MINER2, sv_id, SV),)))
    assert [sv.round for sv in chain.state.queue] == [2]
