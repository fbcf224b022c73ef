"""PoSap v2 on the chain (DESIGN §5 "Valuation"): commits, reveals, the end-of-block settlement
no proposer can steer, retries and voids, fraud proofs, the limits on open SV tasks — and the
attacks of issue 11 against them. Four equally bonded validators make the committee."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from fedcoin.consensus.schedule import is_exact
from fedcoin.consensus.shapley import SV_SCALE
from fedcoin.consensus.table import table_estimate, table_root
from fedcoin.consensus.valuation import schedule_of
from fedcoin.contract.limits import MAX_COMMIT_BLOCKS, REF_MACS_PER_MS, miners_pool
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.state import State
from fedcoin.data.tx import DEFAULT_POSAP, FraudProof, ShareCommit, ShareReveal, Unbond
from fedcoin.errors import (
    AlreadyDisproven,
    BadTxInBlock,
    CommitFromNonMember,
    CommitmentMismatch,
    CommitWindowTooLong,
    DuplicateCommit,
    FraudPositionOutOfRange,
    NoCommitment,
    OutsideWindow,
    RoundPending,
    TableEntryOutOfRange,
    TableLengthMismatch,
    TooManyFraudProofs,
    TooManyOpenSv,
    UnknownSettledSv,
)
from tests.helpers import (
    ALICE,
    BOB,
    FC,
    SERVER,
    ChainBuilder,
    TableVerifier,
    commit_txs,
    honest_table,
    key,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
    open_sv,
    reveal_txs,
    salt_of,
    tx,
)

V1, V2, V3, V4 = (key(f"committee-{i}") for i in range(4))
COMMITTEE = [V1, V2, V3, V4]
PARAMS = replace(DEFAULT_PARAMS, max_open_sv=3)


def opened(n: int = 3, **spec: object) -> tuple[ChainBuilder, bytes, bytes]:
    """A chain with a published task and one submitted round: (chain, task id, sv task id)."""
    genesis = make_genesis(
        {ALICE: 1_000 * FC, BOB: 100 * FC, SERVER: 10 * FC}, PARAMS, validators=COMMITTEE
    )
    chain = ChainBuilder(genesis, verifier=TableVerifier(), proposer=V1)
    publish = make_publish(ALICE, 0, **spec)
    chain.add([publish])
    submit = make_submit(publish.id, 1, 0, n=n)
    chain.add([submit])
    return chain, publish.id, submit.id


def until_schedule(chain: ChainBuilder, sv_id: bytes) -> None:
    while open_sv(chain.state, sv_id).mix == bytes(32):
        chain.add()


def rejected(chain: ChainBuilder, txs: Sequence[object], error: type[Exception]) -> None:
    """The block with ``txs`` is refused for the named rule; the chain does not move."""
    height = chain.state
    with pytest.raises(BadTxInBlock) as err:
        chain.make(txs)  # type: ignore[arg-type]
    assert isinstance(err.value.__cause__, error), err.value
    assert chain.state is height


def conserved(state: State) -> None:
    assert state.supply == state.total_held()


def forged(table: Sequence[int], position: int, delta: int = 1) -> tuple[int, ...]:
    out = list(table)
    out[position] += delta
    return tuple(out)


# --- the life cycle ----------------------------------------------------------------------
def test_honest_round_settles_at_a_fixed_height_and_pays_by_power() -> None:
    chain, task_id, sv_id = opened()
    queued = chain.state.queue[0]
    assert queued.committee and {pk for pk, _ in queued.committee} == {k.public for k in COMMITTEE}
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    applied = chain.value(sv_id, dict.fromkeys(COMMITTEE, table))
    (payout,) = applied.payouts
    sv = open_sv(chain.states[-2], sv_id)
    spec = chain.state.tasks[task_id].spec
    assert payout.sv == table_estimate(3, schedule_of(sv, spec), table)
    assert payout.sv == tuple(256 * (i + 1) * SV_SCALE for i in range(3))  # linear game: exact
    pool = miners_pool(spec)
    assert sorted(a for _, a in payout.miners) == [pool // 4] * 4
    assert payout.proposer == pool - 4 * (pool // 4)
    assert not chain.state.queue and chain.state.settled[0].root == table_root(sv_id, table)
    conserved(chain.state)


def test_sampled_schedule_is_seeded_by_the_mix_and_settles() -> None:
    posap = replace(DEFAULT_POSAP, n_exact_max=4, budget=64)
    chain, task_id, sv_id = opened(n=8, posap=posap, max_clients=8)
    until_schedule(chain, sv_id)
    sv = open_sv(chain.state, sv_id)
    spec = chain.state.tasks[task_id].spec
    assert not is_exact(8, 64, 4)
    masks = schedule_of(sv, spec)
    assert len(masks) == 64 == len(set(masks))
    assert schedule_of(replace(sv, mix=bytes([1]) * 32), spec) != masks
    (payout,) = chain.value(sv_id).payouts
    assert len(payout.sv) == 8 and payout.sv[7] > payout.sv[0]
    conserved(chain.state)


def test_windows_close_early_and_settlement_needs_no_proposer_input() -> None:
    """Two proposers, two orders of the same reveals, reveals in one block or two: the same
    table wins and the same SV is paid (the proposer chooses nothing)."""
    results = []
    for order, split in ((COMMITTEE, False), (COMMITTEE[::-1], True)):
        chain, _, sv_id = opened()
        until_schedule(chain, sv_id)
        table = honest_table(chain.verifier, chain.state, sv_id)
        tables = {k: table for k in order}
        chain.add(commit_txs(chain.state, sv_id, tables))
        reveals = reveal_txs(chain.state, sv_id, tables)
        if split:
            chain.add(reveals[:2], proposer=V3)
            reveals = reveal_txs(chain.state, sv_id, dict(list(tables.items())[2:]))
        (payout,) = chain.add(reveals, proposer=V2).payouts
        results.append((payout.sv, sorted(payout.miners)))
    assert results[0] == results[1]


def test_a_member_that_does_not_reveal_is_not_paid_and_the_round_still_settles() -> None:
    chain, _, sv_id = opened()
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    chain.add(commit_txs(chain.state, sv_id, dict.fromkeys(COMMITTEE, table)))
    chain.add(reveal_txs(chain.state, sv_id, dict.fromkeys(COMMITTEE[:3], table)))
    while chain.state.queue:
        applied = chain.add()
    (payout,) = applied.payouts
    paid = {a for a, _ in payout.miners}
    assert V4.address not in paid and len(paid) == 3
    conserved(chain.state)


# --- the exploits --------------------------------------------------------------------
def test_tolerance_shift_by_one_member_is_a_wrong_minority_root_slashed() -> None:
    """U(S)+1 where client 0 is in S, U(S)−1 elsewhere: passed v1's tolerance, slashed here."""
    chain, _, sv_id = opened()
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    sv = open_sv(chain.state, sv_id)
    masks = schedule_of(sv, chain.state.tasks[sv.task_id].spec)
    shifted = tuple(u + 1 if m & 1 else max(u - 1, 0) for m, u in zip(masks, table, strict=True))
    bond = chain.state.bond_of(V4.public)
    tables = {V1: table, V2: table, V3: table, V4: shifted}
    (payout,) = chain.value(sv_id, tables).payouts
    assert payout.sv == table_estimate(3, masks, table)
    assert V4.address not in {a for a, _ in payout.miners}
    assert chain.state.bond_of(V4.public) == bond - bond * PARAMS.slash_fraud_bps // 10_000
    conserved(chain.state)


def test_more_than_a_third_forging_is_adjudicated_by_one_evaluation() -> None:
    chain, _, sv_id = opened()
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    wrong = forged(table, 7, 30)  # the grand coalition claimed far better
    chain.verifier.evaluated.clear()
    tables = {V1: table, V2: table, V3: wrong, V4: wrong}
    (payout,) = chain.value(sv_id, tables).payouts
    assert chain.verifier.evaluated == {(sv_id, 7)}  # one evaluation decides
    assert {a for a, _ in payout.miners} == {V1.address, V2.address}
    for k in (V3, V4):
        assert chain.state.bond_of(k.public) < chain.states[0].bond_of(k.public)
    conserved(chain.state)


def test_a_winning_table_wrong_where_a_minority_differs_is_disproven_then_retried() -> None:
    chain, _, sv_id = opened()
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    wrong = forged(table, 3)
    applied = chain.value(sv_id, {V1: table, V2: wrong, V3: wrong, V4: wrong})
    assert applied.payouts == ()
    sv = open_sv(chain.state, sv_id)
    assert sv.attempt == 1 and not sv.commits  # re-opened with fresh windows
    for k in (V2, V3, V4):
        assert chain.state.bond_of(k.public) < chain.states[0].bond_of(k.public)
    (payout,) = chain.value(sv_id, dict.fromkeys(COMMITTEE, table)).payouts
    assert payout.sv and not payout.voided
    conserved(chain.state)


def test_a_copied_commitment_cannot_be_revealed_under_another_key() -> None:
    chain, _, sv_id = opened()
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    honest = commit_txs(chain.state, sv_id, {V1: table})[0]
    assert isinstance(honest.body, ShareCommit)
    copy = tx(V2, 0, ShareCommit(sv_id, honest.body.commitment))
    others = commit_txs(chain.state, sv_id, {V3: table, V4: table})
    chain.add([honest, copy, *others])
    root = table_root(sv_id, table)
    for salt in (salt_of(V1, sv_id), salt_of(V2, sv_id)):  # V1's salt leaked, or V2's own
        steal = tx(V2, 1, ShareReveal(sv_id, salt, root, table))
        rejected(chain, [steal], CommitmentMismatch)


def test_too_few_reveals_retry_once_then_void_and_refund() -> None:
    chain, task_id, sv_id = opened()
    until_schedule(chain, sv_id)
    escrow = chain.state.tasks[task_id].escrow
    alice = chain.state.balance(ALICE.address)
    table = honest_table(chain.verifier, chain.state, sv_id)
    applied = chain.value(sv_id, {V1: table})  # 1/4 of the power: no candidate
    assert applied.payouts == () and open_sv(chain.state, sv_id).attempt == 1
    (payout,) = chain.value(sv_id, {V1: table}).payouts
    assert payout.voided and payout.refund == escrow // 3
    assert chain.state.balance(ALICE.address) == alice + escrow // 3
    assert not chain.state.queue
    conserved(chain.state)


# --- fraud proofs ----------------------------------------------------------------------------
def settled_forgery() -> tuple[ChainBuilder, bytes, tuple[int, ...], tuple[int, ...]]:
    """Every member colludes on one wrong entry: the table settles; only a fraud proof can
    catch it."""
    chain, _, sv_id = opened()
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    wrong = forged(table, 5, 100)
    chain.value(sv_id, dict.fromkeys(COMMITTEE, wrong))
    return chain, sv_id, table, wrong


def test_fraud_proof_slashes_every_revealer_and_rewards_the_prover() -> None:
    chain, sv_id, _, _ = settled_forgery()
    bob = chain.state.balance(BOB.address)
    bonds = {k: chain.state.bond_of(k.public) for k in COMMITTEE}
    supply = chain.state.supply
    chain.add([tx(BOB, 0, FraudProof(sv_id, 5))])
    taken = sum(b * PARAMS.slash_fraud_bps // 10_000 for b in bonds.values())
    reward = sum(b * PARAMS.slash_fraud_bps // 10_000 * 1_000 // 10_000 for b in bonds.values())
    assert chain.state.balance(BOB.address) == bob + reward  # deposit kept, reward paid
    assert chain.state.supply == supply - (taken - reward)
    assert chain.state.settled[0].disproven
    rejected(chain, [tx(BOB, 1, FraudProof(sv_id, 5))], AlreadyDisproven)
    conserved(chain.state)


def test_false_fraud_claim_burns_the_deposit() -> None:
    chain, sv_id, _, _ = settled_forgery()
    bob = chain.state.balance(BOB.address)
    chain.add([tx(BOB, 0, FraudProof(sv_id, 2))])  # position 2 is right
    assert chain.state.balance(BOB.address) == bob - PARAMS.fraud_deposit
    assert not chain.state.settled[0].disproven
    conserved(chain.state)


def test_fraud_proofs_are_bounded_per_block_by_position_and_by_window() -> None:
    chain, sv_id, _, _ = settled_forgery()
    rejected(chain, [tx(BOB, 0, FraudProof(sv_id, 8))], FraudPositionOutOfRange)
    many = [tx(BOB, i, FraudProof(sv_id, 0)) for i in range(PARAMS.max_fraud_proofs + 1)]
    with pytest.raises(TooManyFraudProofs):
        chain.make(many)
    for _ in range(PARAMS.fraud_blocks):
        chain.add()
    assert not chain.state.settled
    rejected(chain, [tx(BOB, 0, FraudProof(sv_id, 5))], UnknownSettledSv)


# --- transaction rules -----------------------------------------------------------------------
def test_commit_and_reveal_rules() -> None:
    chain, _, sv_id = opened()
    early = commit_txs(chain.state, sv_id, {V1: (0,) * 8})
    rejected(chain, early, OutsideWindow)  # block q+1: the schedule is not known yet
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    outsider = commit_txs(chain.state, sv_id, {ALICE: table})
    rejected(chain, outsider, CommitFromNonMember)
    twice = commit_txs(chain.state, sv_id, {V1: table})
    twice.append(tx(V1, 1, twice[0].body))
    rejected(chain, twice, DuplicateCommit)
    chain.add(commit_txs(chain.state, sv_id, {V1: table, V2: table}))
    rejected(chain, reveal_txs(chain.state, sv_id, {V1: table}), OutsideWindow)
    chain.add(commit_txs(chain.state, sv_id, {V3: table, V4: table}))  # window closes early
    rejected(chain, reveal_txs(chain.state, sv_id, {ALICE: table}), NoCommitment)
    short = tx(V1, 1, ShareReveal(sv_id, salt_of(V1, sv_id), table_root(sv_id, table[:7]),
                                  table[:7]))  # fmt: skip
    rejected(chain, [short], TableLengthMismatch)
    big = forged(table, 0, chain.verifier.max_entry + 1)
    huge = tx(V1, 1, ShareReveal(sv_id, salt_of(V1, sv_id), table_root(sv_id, big), big))
    rejected(chain, [huge], TableEntryOutOfRange)


def test_open_sv_tasks_are_bounded_per_task_and_on_the_chain() -> None:
    chain, task_id, _ = opened()
    chain.add([make_submit(task_id, 2, 1)])  # two open rounds of one task
    rejected(chain, [make_submit(task_id, 3, 2)], RoundPending)
    second = make_publish(ALICE, 1, name="other")
    chain.add([second])
    chain.add([tx(SERVER, 2, make_submit(second.id, 1, 2).body)])  # 3 open: max_open_sv
    rejected(chain, [tx(SERVER, 3, make_submit(second.id, 2, 3).body)], TooManyOpenSv)


def test_the_commit_window_stretches_to_fit_the_rounds_work() -> None:
    """DESIGN §5 step 6: commit_blocks · block_interval ≥ 2 · max_open_sv · T(work); a heavy
    task's window is longer than its spec asks, a light one's is the spec's."""
    for work_ms, expected in ((0, DEFAULT_POSAP.commit_blocks), (20_000, 120)):
        genesis = make_genesis({ALICE: 1_000 * FC, SERVER: 10 * FC}, PARAMS, validators=COMMITTEE)
        verifier = TableVerifier(round_work=work_ms * REF_MACS_PER_MS)
        chain = ChainBuilder(genesis, verifier=verifier, proposer=V1)
        publish = make_publish(ALICE, 0)
        chain.add([publish])
        assert chain.state.tasks[publish.id].round_work == work_ms * REF_MACS_PER_MS
        chain.add([make_submit(publish.id, 1, 0)])
        sv = chain.state.queue[0]
        # 2 · max_open_sv (3) · 20 s over 1 s blocks = 120 blocks
        assert sv.commit_end == chain.header.height + 1 + expected


def test_stake_unbonded_before_the_task_still_answers_for_a_wrong_table() -> None:
    """A member that unbonds all before q keeps its snapshotted power in the committee: its
    unbonding entry is slashed (it was created after the power snapshot) and is not released
    while the task can still slash it."""
    genesis = make_genesis({ALICE: 1_000 * FC, SERVER: 10 * FC}, PARAMS, validators=COMMITTEE)
    chain = ChainBuilder(genesis, verifier=TableVerifier(), proposer=V1)
    publish = make_publish(ALICE, 0)
    bond = chain.state.bond_of(V4.public)
    chain.add([publish, tx(V4, 0, Unbond(bond))])
    chain.add([make_submit(publish.id, 1, 0)])
    sv_id = chain.state.queue[0].sv_task_id
    assert dict(chain.state.queue[0].committee)[V4.public] == bond  # power from the snapshot
    until_schedule(chain, sv_id)
    table = honest_table(chain.verifier, chain.state, sv_id)
    chain.value(sv_id, {V1: table, V2: table, V3: table, V4: forged(table, 2)})
    (entry,) = [u for u in chain.state.unbonding if u.pubkey == V4.public]
    assert entry.amount == bond - bond * PARAMS.slash_fraud_bps // 10_000
    conserved(chain.state)


def test_unbonding_waits_while_posap_can_still_slash_it() -> None:
    params = replace(PARAMS, unbonding_blocks=30, epoch_blocks=25)  # no boundary before q
    genesis = make_genesis({ALICE: 1_000 * FC, SERVER: 10 * FC}, params, validators=COMMITTEE)
    chain = ChainBuilder(genesis, verifier=TableVerifier(), proposer=V1)
    publish = make_publish(ALICE, 0)
    chain.add([publish, tx(V4, 0, Unbond(chain.state.bond_of(V4.public) // 2))])
    release = chain.state.unbonding[0].release
    chain.add([make_submit(publish.id, 1, 0)])
    sv_id = chain.state.queue[0].sv_task_id
    while chain.header.height < release + 1:
        chain.add()
    assert chain.state.unbonding and chain.state.queue  # V4 sits on an open task's committee
    chain.value(sv_id)
    for _ in range(params.fraud_blocks):
        assert chain.state.unbonding  # a revealer of the settled table, fraud window open
        chain.add()
    assert not chain.state.settled
    chain.add()  # the stake step of the next block sees nothing left that can slash it
    assert not chain.state.unbonding
    conserved(chain.state)


def test_a_task_whose_round_cannot_fit_the_longest_window_is_refused() -> None:
    genesis = make_genesis({ALICE: 1_000 * FC, SERVER: 10 * FC}, PARAMS, validators=COMMITTEE)
    heavy = (MAX_COMMIT_BLOCKS + 1) * 1_000 * REF_MACS_PER_MS // (2 * PARAMS.max_open_sv)
    chain = ChainBuilder(genesis, verifier=TableVerifier(round_work=heavy), proposer=V1)
    rejected(chain, [make_publish(ALICE, 0)], CommitWindowTooLong)


def test_a_committees_commits_and_reveals_may_be_free() -> None:
    """DESIGN §7: committee members' ShareCommit/Share may carry zero fee (a validator holding
    only its bond can still value rounds); any other transaction pays min_fee."""
    params = replace(PARAMS, min_fee=1_000)
    genesis = make_genesis({ALICE: 1_000 * FC, SERVER: 10 * FC}, params, validators=COMMITTEE)
    chain = ChainBuilder(genesis, verifier=TableVerifier(), proposer=V1)
    publish = tx(ALICE, 0, make_publish(ALICE, 0).body, fee=1_000)
    chain.add([publish])
    chain.add([tx(SERVER, 0, make_submit(publish.id, 1, 0).body, fee=1_000)])
    sv_id = chain.state.queue[0].sv_task_id
    assert chain.state.balance(V4.address) == 0
    (payout,) = chain.value(sv_id).payouts  # every commit and reveal at fee 0
    assert V4.address in {a for a, _ in payout.miners}
    with pytest.raises(BadTxInBlock) as err:
        chain.make([make_transfer(ALICE, BOB, 1, 1, fee=0)])
    assert err.value.details["rule"] == "FeeTooLow"
