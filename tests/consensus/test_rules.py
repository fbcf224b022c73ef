"""Block rules: one test per rule, valid and invalid; an invalid block changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from fedcoin.consensus.rules import apply_block
from fedcoin.consensus.shapley import SV_SCALE
from fedcoin.consensus.stake import validator_set
from fedcoin.consensus.table import table_root
from fedcoin.data.block import Block
from fedcoin.data.encoding import sha256
from fedcoin.data.genesis import DEFAULT_PARAMS, Genesis
from fedcoin.data.keys import TAG_TX, PrivateKey
from fedcoin.data.tx import ShareCommit, ShareReveal, Transaction
from fedcoin.data.vote import CommitCertificate
from fedcoin.errors import (
    BadRandaoReveal,
    BadSignature,
    BadTxInBlock,
    BadVersion,
    BadVoteSignature,
    BlockTooSoon,
    CertificateMismatch,
    DuplicateReveal,
    EvidenceRootMismatch,
    InsufficientPower,
    LastCommitHashMismatch,
    LastCommitMissing,
    NoCommitment,
    NotAValidator,
    StateRootMismatch,
    TimestampInFuture,
    TooManyTxs,
    TxRootMismatch,
    UnknownParent,
    UnknownSvTask,
    UnknownValidator,
    ValidatorsHashMismatch,
    WrongHeight,
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
    commit_txs,
    equivocation,
    honest_table,
    key,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
    reveal_txs,
    salt_of,
    tx,
)

#: A small committee keeps a round's valuation cheap: one commit and one reveal each.
COMMITTEE = [MINER, MINER2, MINER3, key("validator-0")]


def small_genesis() -> Genesis:
    return make_genesis(validators=COMMITTEE)


def with_pending_round() -> tuple[ChainBuilder, bytes]:
    """A chain whose head queued round 1 of a task (its SV task is open)."""
    chain = ChainBuilder(small_genesis())
    publish = make_publish(ALICE, 0)
    chain.add([publish])
    submit = make_submit(publish.id, 1, 0)
    chain.add([submit])
    return chain, submit.id


def honest_tables(chain: ChainBuilder, sv_id: bytes) -> dict[PrivateKey, tuple[int, ...]]:
    return dict.fromkeys(COMMITTEE, honest_table(chain.verifier, chain.state, sv_id))


def revealing_round(*, commit: bool = True) -> tuple[ChainBuilder, bytes]:
    """A pending round whose schedule is drawn and, with ``commit``, whose every member
    committed to the honest table: the next block may carry the reveals."""
    chain, sv_id = with_pending_round()
    chain.add()
    if commit:
        chain.add(commit_txs(chain.state, sv_id, honest_tables(chain, sv_id)))
    return chain, sv_id


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
    chain, sv_id = revealing_round()
    earliest = chain.header.timestamp_ms + DEFAULT_PARAMS.min_block_interval_ms
    # No exemption: a settling block waits too, and so does an empty one
    settling, applied = chain.make(reveal_txs(chain.state, sv_id, honest_tables(chain, sv_id)))
    assert applied.payouts
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


def test_tx_root_commits_to_the_posap_transactions() -> None:
    """PoSap v2 has no section of its own: its commits and reveals are transactions."""
    chain, sv_id = revealing_round()
    tables = honest_tables(chain, sv_id)
    block, _ = chain.make(reveal_txs(chain.state, sv_id, tables))
    (first, *rest) = block.txs
    assert isinstance(first.body, ShareReveal)
    other = replace(first.body, table=(first.body.table[0] + 1, *first.body.table[1:]))
    swapped = replace(block, txs=(tx(KEYS[first.sender_pubkey], first.nonce, other), *rest))
    with pytest.raises(TxRootMismatch):
        check(chain, swapped)


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


# --- PoSap v2: commits, reveals and the end-of-block settlement ------------------------------
def refused(chain: ChainBuilder, txs: Sequence[Transaction], error: type[Exception]) -> None:
    before = chain.state
    with pytest.raises(BadTxInBlock) as err:
        chain.make(txs)
    assert isinstance(err.value.__cause__, error), err.value
    chain.now -= DEFAULT_PARAMS.min_block_interval_ms
    assert chain.state is before


def test_settling_block_pays_by_the_tables_shapley_values() -> None:
    chain, sv_id = with_pending_round()
    applied = chain.value(sv_id)
    (payout,) = applied.payouts
    # The linear game: client i adds 256·(i + 1) to every coalition, so SV_i = 256·(i + 1)
    assert payout.sv == tuple(256 * (i + 1) * SV_SCALE for i in range(3))
    assert chain.state.queue == ()
    clients_pool = 10 * FC * 7000 // 10_000
    paid = dict(payout.clients)
    assert paid[CLIENTS[0].address] == clients_pool * 1 // 6
    # The miners' pool goes to the revealers by power (equal here), the rest to the proposer
    pool = 10 * FC * 2000 // 10_000
    assert sorted(payout.miners) == sorted((k.address, pool // 4) for k in COMMITTEE)
    assert payout.proposer == pool - 4 * (pool // 4)
    assert chain.state.balance(SERVER.address) == 100 * FC + 10 * FC * 1000 // 10_000
    assert chain.state.supply == chain.state.total_held()


def test_a_round_settles_only_at_the_end_of_its_reveal_window() -> None:
    """Blocks in between may carry anything; the SV task stays open until every committer
    revealed (or the reveal window ends)."""
    chain, sv_id = with_pending_round()
    chain.add([make_transfer(ALICE, BOB, 1, 1)])  # block q+1: the schedule is drawn
    tables = honest_tables(chain, sv_id)
    assert chain.add(commit_txs(chain.state, sv_id, tables)).payouts == ()
    first, second = dict(list(tables.items())[:2]), dict(list(tables.items())[2:])
    assert chain.add(reveal_txs(chain.state, sv_id, first)).payouts == ()
    assert [sv.sv_task_id for sv in chain.state.queue] == [sv_id]
    (payout,) = chain.add(reveal_txs(chain.state, sv_id, second)).payouts
    assert not payout.voided and chain.state.queue == ()


def test_commits_and_reveals_must_name_an_open_sv_task() -> None:
    chain, sv_id = revealing_round()
    other = b"\x08" * 32
    refused(chain, [tx(MINER, 1, ShareCommit(other, bytes(32)))], UnknownSvTask)
    tables = honest_tables(chain, sv_id)
    (reveal, *_) = reveal_txs(chain.state, sv_id, tables)
    assert isinstance(reveal.body, ShareReveal)
    moved = replace(reveal.body, sv_task_id=other)
    refused(chain, [tx(MINER, reveal.nonce, moved)], UnknownSvTask)
    # With no SV task open at all, neither is accepted
    empty = ChainBuilder(small_genesis())
    with pytest.raises(BadTxInBlock) as err:
        empty.make([tx(MINER, 0, ShareCommit(sv_id, bytes(32)))])
    assert isinstance(err.value.__cause__, UnknownSvTask)


def test_void_only_after_a_retry_runs_out() -> None:
    """One member commits and never reveals: the reveal window runs its whole length, then the
    SV task re-opens once with fresh windows. Nobody commits in the retry: the (empty) reveal
    window closes at once and the round is voided, its price refunded."""
    chain, sv_id = revealing_round(commit=False)
    sv = chain.state.queue[0]
    posap = chain.state.tasks[sv.task_id].spec.posap
    before = chain.state.balance(ALICE.address)
    chain.add(commit_txs(chain.state, sv_id, {MINER: honest_tables(chain, sv_id)[MINER]}))
    while chain.header.height < sv.reveal_end - 1:
        assert chain.add().payouts == ()
    assert chain.state.queue[0].attempt == 0
    assert chain.add().payouts == ()  # the reveal window's last block: a retry, not a void
    retried = chain.state.queue[0]
    assert retried.attempt == 1 and not retried.commits
    assert retried.commit_end == chain.header.height + posap.commit_blocks
    assert retried.reveal_end == retried.commit_end + posap.reveal_blocks
    while chain.header.height < retried.commit_end:
        assert chain.add().payouts == ()
    (payout,) = chain.add().payouts
    assert payout.voided and chain.header.height == retried.commit_end + 1
    assert chain.state.balance(ALICE.address) == before + 10 * FC
    assert chain.state.queue == ()


def test_a_reveal_needs_the_members_own_commitment_to_that_sv_task() -> None:
    """A reveal for another SV task than the one committed to is refused (v1: a share for
    another task)."""
    chain, first = revealing_round(commit=False)
    task_id = chain.state.queue[0].task_id
    chain.add([make_submit(task_id, 2, 1)])  # a second open SV task of the same task
    chain.add()
    second = chain.state.queue[1].sv_task_id
    table = honest_tables(chain, first)[MINER]
    chain.add(commit_txs(chain.state, first, honest_tables(chain, first)))
    # MINER's commitment is to ``first``: a reveal naming ``second`` has nothing to open
    salt = salt_of(MINER, first)
    root = table_root(second, table)
    refused(chain, [tx(MINER, 1, ShareReveal(second, salt, root, table))], NoCommitment)


def test_one_reveal_per_member() -> None:
    chain, sv_id = revealing_round()
    tables = honest_tables(chain, sv_id)
    (reveal, *_) = reveal_txs(chain.state, sv_id, {MINER: tables[MINER]})
    refused(chain, [reveal, tx(MINER, reveal.nonce + 1, reveal.body)], DuplicateReveal)


def test_a_reveal_is_signed_by_its_member() -> None:
    chain, sv_id = revealing_round()
    tables = honest_tables(chain, sv_id)
    (reveal, *_) = reveal_txs(chain.state, sv_id, {MINER: tables[MINER]})
    refused(chain, [replace(reveal, signature=bytes(64))], BadSignature)
    # Another member's signature over the same reveal does not do either
    forged = replace(reveal, signature=MINER2.sign(TAG_TX, reveal.id))
    refused(chain, [forged], BadSignature)


def test_settling_block_carries_next_round_too() -> None:
    chain, sv_id = revealing_round()
    task_id = chain.state.queue[0].task_id
    nxt = make_submit(task_id, 2, 1)
    reveals = reveal_txs(chain.state, sv_id, honest_tables(chain, sv_id))
    (payout,) = chain.add([*reveals, nxt]).payouts
    assert payout.round == 1
    assert [sv.round for sv in chain.state.queue] == [2]
