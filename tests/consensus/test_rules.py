"""Block rules: one test per rule, valid and invalid; an invalid block changes nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.consensus.rules import apply_block
from fedcoin.consensus.stake import validator_set
from fedcoin.data.block import Block, PosapSection
from fedcoin.data.encoding import sha256
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.vote import CommitCertificate
from fedcoin.errors import (
    BadRandaoReveal,
    BadShareSignature,
    BadTxInBlock,
    BadVersion,
    BadVoteSignature,
    BlockTooSoon,
    CertificateMismatch,
    DuplicateMiner,
    EstimateMismatch,
    EvidenceRootMismatch,
    InsufficientPower,
    LastCommitHashMismatch,
    LastCommitMissing,
    NotAValidator,
    PosapRootMismatch,
    SettlementUnexpected,
    StateRootMismatch,
    TimestampInFuture,
    TooManyTxs,
    TxRootMismatch,
    UnknownParent,
    UnknownValidator,
    ValidatorsHashMismatch,
    VoidTooEarly,
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
    KEYS,
    MINER,
    MINER2,
    MINER3,
    SERVER,
    ChainBuilder,
    certify,
    equivocation,
    key,
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


def rehash(block: Block, **header_changes: object) -> Block:
    """The block with header fields changed (nothing is signed: the hash just changes)."""
    return replace(block, header=replace(block.header, **header_changes))  # type: ignore[arg-type]


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
        check(chain, rehash(block, version=2))


def test_parent_must_be_the_named_block() -> None:
    chain, block = tx_block()
    with pytest.raises(UnknownParent):
        check(chain, rehash(block, parent=b"\x05" * 32))


def test_height_is_parent_plus_one() -> None:
    chain, block = tx_block()
    with pytest.raises(WrongHeight):
        check(chain, rehash(block, height=2))


def test_every_block_waits_min_interval_after_its_parent() -> None:
    chain, sv_id = with_pending_round()
    earliest = chain.header.timestamp_ms + DEFAULT_PARAMS.min_block_interval_ms
    # No exemption: a settling block waits too, and so does an empty one
    settling, _ = chain.make(posap=PosapSection(sv_id, (make_share(MINER2, sv_id, SV),)))
    chain.now -= DEFAULT_PARAMS.min_block_interval_ms
    empty, _ = chain.make([])
    for block in (settling, empty):
        assert block.header.timestamp_ms == earliest
        check(chain, block)
        with pytest.raises(BlockTooSoon):
            check(chain, rehash(block, timestamp_ms=earliest - 1))


def test_timestamp_not_too_far_in_future() -> None:
    chain, block = tx_block()
    ts = block.header.timestamp_ms
    tolerance = DEFAULT_PARAMS.future_tolerance_ms
    check(chain, block, now_ms=ts - tolerance)
    with pytest.raises(TimestampInFuture):
        check(chain, block, now_ms=ts - tolerance - 1)


def test_creator_must_be_a_member_of_the_set() -> None:
    chain, block = tx_block()
    outsider = key("outsider")
    with pytest.raises(NotAValidator):
        check(chain, rehash(block, proposer_pubkey=outsider.public))


def test_randao_reveal_must_hash_to_the_creators_tip() -> None:
    chain, block = tx_block()
    with pytest.raises(BadRandaoReveal):
        check(chain, rehash(block, randao_reveal=bytes(32)))
    # Another member's reveal does not do either
    with pytest.raises(BadRandaoReveal):
        check(chain, rehash(block, proposer_pubkey=MINER2.public))


def test_the_reveal_becomes_the_tip_and_moves_the_mix() -> None:
    chain, block = tx_block()
    reveal = block.header.randao_reveal
    state = check(chain, block).state
    assert sha256(reveal) == chain.state.stakes[MINER.public].randao_tip
    assert state.stakes[MINER.public].randao_tip == reveal
    assert state.mix == sha256(b"fedcoin/mix/v1" + chain.state.mix + reveal)
    # A reveal cannot be used twice: the next one must hash to it
    chain.commit(block, check(chain, block))
    again, _ = chain.make([make_transfer(ALICE, BOB, 3, 1)])
    with pytest.raises(BadRandaoReveal):
        check(chain, rehash(again, randao_reveal=reveal))


def test_validators_hashes_name_this_and_the_next_set() -> None:
    chain, block = tx_block()
    with pytest.raises(ValidatorsHashMismatch):
        check(chain, rehash(block, validators_hash=bytes(32)))
    with pytest.raises(ValidatorsHashMismatch):
        check(chain, rehash(block, next_validators_hash=bytes(32)))
    assert block.header.validators_hash == validator_set(chain.state.validators).hash


def test_height_one_carries_no_certificate_and_later_blocks_their_parents() -> None:
    chain, block = tx_block()
    forged = chain.make([make_transfer(ALICE, BOB, 3, 0)])[0]
    chain.now -= DEFAULT_PARAMS.min_block_interval_ms
    some = certify(forged, chain.state)
    with pytest.raises(LastCommitMissing):
        check(
            chain, rehash(replace(block, last_commit=some), last_commit_hash=sha256(some.encode()))
        )
    chain.commit(block, check(chain, block))
    second, _ = chain.make([make_transfer(ALICE, BOB, 3, 1)])
    assert second.last_commit == chain.certificates[1]
    with pytest.raises(LastCommitMissing):
        check(chain, rehash(replace(second, last_commit=None), last_commit_hash=bytes(32)))
    with pytest.raises(LastCommitHashMismatch):
        check(chain, rehash(second, last_commit_hash=bytes(32)))


def test_last_commit_needs_two_thirds_of_the_parents_set() -> None:
    chain, block = tx_block()
    before = chain.state
    chain.commit(block, check(chain, block))
    second, _ = chain.make([make_transfer(ALICE, BOB, 3, 1)])
    members = sorted(pk for pk, _, _ in before.validators)
    third = len(members) * 2 // 3  # exactly 2/3 or less: not enough
    weak = certify(block, before, signers=[KEYS[pk] for pk in members[:third]])
    with pytest.raises(InsufficientPower):
        check(chain, with_last_commit(second, weak))
    # Fresh keys outside the set add nothing
    fresh = certify(block, before, signers=[key(f"fresh-{i}") for i in range(40)])
    with pytest.raises(UnknownValidator):
        check(chain, with_last_commit(second, fresh))
    # A certificate of another block, or for another round's signatures, is refused
    other = certify(second, chain.state)
    with pytest.raises(CertificateMismatch):
        check(chain, with_last_commit(second, other))
    good = chain.certificates[1]
    mixed = replace(good, round=1)
    with pytest.raises(BadVoteSignature):
        check(chain, with_last_commit(second, mixed))


def with_last_commit(block: Block, certificate: CommitCertificate) -> Block:
    changed = replace(block, last_commit=certificate)
    return rehash(changed, last_commit_hash=sha256(certificate.encode()))


def test_evidence_root_commits_to_the_evidence() -> None:
    chain, block = tx_block()
    with pytest.raises(EvidenceRootMismatch):
        check(chain, replace(block, evidence=(equivocation(MINER2, 1),)))


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
        check(chain, rehash(block, state_root=b"\x01" * 32))


# --- body ---------------------------------------------------------------------------------
def test_empty_block_is_valid() -> None:
    chain = ChainBuilder(make_genesis())
    block, applied = chain.make([])
    assert check(chain, block).state == applied.state
    assert applied.state.accounts == chain.state.accounts


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
        check(chain, rehash(block, state_root=b"\x01" * 32))
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
    clients_pool = 10 * FC * 7000 // 10_000
    paid = dict(applied.payout.clients)
    assert paid[CLIENTS[0].address] == clients_pool * SV[0] // sum(SV)
    assert chain.state.balance(MINER2.address) == 10 * FC * 2000 // 10_000 // 2
    assert chain.state.balance(SERVER.address) == 100 * FC + 10 * FC * 1000 // 10_000
    assert chain.state.supply == chain.state.total_held()
    assert low != SV


def test_a_block_may_leave_a_pending_round_for_a_later_one() -> None:
    chain, sv_id = with_pending_round()
    chain.add([make_transfer(ALICE, BOB, 1, 1)])
    chain.add([])
    assert [sv.sv_task_id for sv in chain.state.queue] == [sv_id]
    chain.add(posap=PosapSection(sv_id, (make_share(MINER2, sv_id, SV),)))
    assert chain.state.queue == ()


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
