"""Stake (DESIGN §5, issue 10 step 1): Bond, Unbond, epochs, and who may propose and write shares.

Every rule has a valid and an invalid case. The two attacks of issue 10 this step defeats — a
private chain signed by fresh keys, and 32 copies of one honest PoSap commitment under fresh
keys — are rejected because fresh keys are not validators (nor members of an SV task's
committee) and a member commits and reveals once, only what it committed to itself.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcoin.consensus.proposer import apply_changes, next_height_set
from fedcoin.consensus.rules import apply_block
from fedcoin.consensus.stake import NO_TIP, randao_secret, randao_tip_of, validator_set
from fedcoin.consensus.stake import randao_tip as randao_chain_tip
from fedcoin.consensus.table import table_root
from fedcoin.data.genesis import DEFAULT_PARAMS, ChainParams
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import Stake, State
from fedcoin.data.tx import Bond, ShareCommit, ShareReveal, Transaction, Unbond
from fedcoin.errors import (
    BadTxInBlock,
    CommitFromNonMember,
    CommitmentMismatch,
    DuplicateCommit,
    InsufficientBalance,
    InsufficientBond,
    InvalidAmount,
    MissingRandaoTip,
    NotAValidator,
    ValidatorJailed,
)
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    FC,
    MINER,
    MINER2,
    MINER3,
    ChainBuilder,
    apply_tx,
    commit_txs,
    honest_table,
    key,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
    randao_tip,
    salt_of,
    tx,
)

PARAMS = replace(
    DEFAULT_PARAMS,
    epoch_blocks=4,
    unbonding_blocks=6,
    jail_blocks=3,
    max_validators=3,
    fraud_blocks=5,  # below unbonding_blocks: a settled table stays slashable
)
TIP = randao_chain_tip(b"s" * 32, 3)


def staked_chain(params: ChainParams = PARAMS) -> ChainBuilder:
    """Validators MINER and MINER2 bond 1 FC each; ALICE and BOB hold coins, CAROL nothing."""
    genesis = make_genesis({ALICE: 1_000 * FC, BOB: 1_000 * FC}, params, validators=[MINER, MINER2])
    return ChainBuilder(genesis)


class Ticker:
    """Advances a chain by one block each call with a 1-unit transfer BOB → CAROL."""

    def __init__(self, chain: ChainBuilder) -> None:
        self.chain, self.nonce = chain, 0

    def __call__(self, *extra: Transaction) -> None:
        self.chain.add([make_transfer(BOB, CAROL, 1, self.nonce), *extra])
        self.nonce += 1

    def until(self, height: int) -> None:
        while self.chain.header.height < height:
            self()


def bond(sender: PrivateKey, nonce: int, amount: int, tip: bytes | None = None) -> Transaction:
    return tx(sender, nonce, Bond(amount, randao_tip(sender) if tip is None else tip))


# --- Bond -----------------------------------------------------------------------------------
def test_bond_locks_balance_as_stake_and_conserves_coins() -> None:
    state = make_genesis({ALICE: 10 * FC}, validators=[MINER]).state()
    after = apply_tx(state, bond(ALICE, 0, 4 * FC, TIP))
    assert after.balance(ALICE.address) == 6 * FC
    assert after.stakes[ALICE.public] == Stake(4 * FC, TIP, 0)
    assert after.supply == state.supply == after.total_held()
    again = apply_tx(after, tx(ALICE, 1, Bond(FC, NO_TIP)))  # a zero tip keeps the registered one
    assert again.stakes[ALICE.public] == Stake(5 * FC, TIP, 0)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (Bond(0, TIP), InvalidAmount),
        (Bond(11 * FC, TIP), InsufficientBalance),
        (Bond(FC, NO_TIP), MissingRandaoTip),
    ],
    ids=["zero", "more-than-balance", "first-bond-without-tip"],
)
def test_invalid_bond_is_rejected(body: Bond, error: type[Exception]) -> None:
    state = make_genesis({ALICE: 10 * FC}, validators=[MINER]).state()
    with pytest.raises(error):
        apply_tx(state, tx(ALICE, 0, body))


def test_a_jailed_key_bonds_again_only_after_jail_blocks() -> None:
    base = make_genesis({ALICE: 10 * FC}, validators=[MINER]).state()
    jailed = replace(base, stakes={**base.stakes, ALICE.public: Stake(FC, TIP, 8)})
    with pytest.raises(ValidatorJailed):
        apply_tx(jailed, bond(ALICE, 0, FC), height=7)
    freed = apply_tx(jailed, bond(ALICE, 0, FC), height=8)
    assert freed.stakes[ALICE.public].jailed_until == 0 and freed.bond_of(ALICE.public) == 2 * FC


def test_the_randao_tip_is_the_kth_hash_of_a_secret_only_the_key_makes() -> None:
    secret = randao_secret(ALICE)
    assert secret == randao_secret(ALICE) != randao_secret(BOB)
    assert (
        randao_chain_tip(secret, 2)
        == randao_chain_tip(randao_chain_tip(secret, 1), 1)
        != randao_chain_tip(secret, 1)
    )


# --- Unbond ---------------------------------------------------------------------------------
def test_unbond_creates_an_entry_and_refuses_more_than_the_bond() -> None:
    state = make_genesis({ALICE: 10 * FC}, validators=[MINER]).state()
    bonded = apply_tx(state, bond(ALICE, 0, 4 * FC), height=5)
    after = apply_tx(bonded, tx(ALICE, 1, Unbond(3 * FC)), height=5, params=PARAMS)
    assert after.bond_of(ALICE.public) == FC
    entry = after.unbonding[-1]
    assert (entry.pubkey, entry.amount, entry.created, entry.release) == (
        ALICE.public,
        3 * FC,
        5,
        5 + PARAMS.unbonding_blocks,
    )
    assert after.balance(ALICE.address) == 6 * FC  # not released yet
    assert after.total_held() == after.supply
    for body, error in ((Unbond(2 * FC), InsufficientBond), (Unbond(0), InvalidAmount)):
        with pytest.raises(error):
            apply_tx(after, tx(ALICE, 2, body), params=PARAMS)
    with pytest.raises(InsufficientBond):
        apply_tx(state, tx(ALICE, 0, Unbond(1)))  # never bonded


def test_unbonding_is_released_at_the_end_of_block_created_plus_unbonding_blocks() -> None:
    chain = staked_chain()
    tick = Ticker(chain)
    tick(tx(MINER2, 0, Unbond(FC // 2)))
    created = chain.header.height
    release = created + PARAMS.unbonding_blocks
    before = chain.state.balance(MINER2.address)
    tick.until(release - 1)
    assert chain.state.balance(MINER2.address) == before and len(chain.state.unbonding) == 1
    tick()
    assert chain.header.height == release
    assert chain.state.balance(MINER2.address) == before + FC // 2
    assert chain.state.unbonding == ()
    assert chain.state.supply == chain.state.total_held()


# --- Epochs and the validator set -----------------------------------------------------------
def powers(state: State) -> dict[bytes, int]:
    return {pk: power for pk, power, _ in state.validators}


def test_a_bond_makes_a_validator_only_from_the_next_epoch_boundary() -> None:
    chain = staked_chain()
    tick = Ticker(chain)
    tick(bond(ALICE, 0, 5 * FC))
    assert not chain.state.is_validator(ALICE.public)
    tick.until(PARAMS.epoch_blocks - 1)
    assert not chain.state.is_validator(ALICE.public)
    tick()  # the last block of epoch 0 snapshots the set of epoch 1
    assert powers(chain.state)[ALICE.public] == 5 * FC
    chain.add([make_transfer(ALICE, CAROL, 1, 1)], proposer=ALICE)  # ALICE now proposes


def test_power_is_snapshotted_at_the_boundary_and_leaves_with_the_bond() -> None:
    chain = staked_chain()
    tick = Ticker(chain)
    tick(tx(MINER2, 0, Unbond(FC)))  # MINER2 leaves entirely ...
    assert powers(chain.state)[MINER2.public] == FC  # ... but keeps its power this epoch
    chain.add([make_transfer(BOB, CAROL, 1, tick.nonce)], proposer=MINER2)
    tick.nonce += 1
    tick.until(PARAMS.epoch_blocks)
    assert not chain.state.is_validator(MINER2.public)
    with pytest.raises(NotAValidator):
        chain.make([make_transfer(BOB, CAROL, 1, tick.nonce)], proposer=MINER2)


def test_the_next_set_is_the_top_bonds_above_min_bond_not_jailed() -> None:
    params = replace(PARAMS, min_bond=2 * FC)
    people = [ALICE, BOB, CAROL, MINER2, MINER3]
    genesis = make_genesis({k: 100 * FC for k in people}, params, validators=[MINER])
    chain = ChainBuilder(genesis)
    amounts = {ALICE: 9 * FC, BOB: 3 * FC, CAROL: FC, MINER2: 5 * FC, MINER3: 5 * FC}
    chain.add([bond(k, 0, amount) for k, amount in amounts.items()])
    jailed = chain.state.stakes[BOB.public]
    chain.state = replace(
        chain.state, stakes={**chain.state.stakes, BOB.public: replace(jailed, jailed_until=99)}
    )
    nonce = 1
    while chain.header.height < params.epoch_blocks:
        chain.add([make_transfer(ALICE, CAROL, 1, nonce)])
        nonce += 1
    # max_validators = 3: ALICE 9, MINER2 5, MINER3 5 (ties to the lower key); MINER (2) drops
    # out, BOB (3) is jailed, CAROL (1) is below min_bond
    assert powers(chain.state) == {
        ALICE.public: 9 * FC,
        MINER2.public: 5 * FC,
        MINER3.public: 5 * FC,
    }


# --- Who may propose and write shares -------------------------------------------------------
def test_only_a_member_proposes() -> None:
    chain = staked_chain()
    block, _ = chain.make([make_transfer(BOB, CAROL, 1, 0)])
    assert apply_block(chain.state, block, chain.header, chain.genesis, chain.verifier)
    with pytest.raises(NotAValidator):
        chain.make([make_transfer(BOB, CAROL, 1, 0)], proposer=ALICE)


def test_a_private_chain_signed_by_many_fresh_keys_is_rejected() -> None:
    """Issue 10's first attack: keys are free, but a fresh key is not a validator."""
    chain = staked_chain()
    attacker = ChainBuilder(chain.genesis)
    fresh = [key(f"fresh-{i}") for i in range(3)]
    block = None
    with pytest.raises(NotAValidator):
        block, _ = attacker.make([make_transfer(BOB, CAROL, 1, 0)], proposer=fresh[0])
    assert block is None
    # Even a block built around the rules by hand fails where every node checks it
    honest, _ = chain.make([make_transfer(BOB, CAROL, 1, 0)])
    forged = replace(honest.header, proposer_pubkey=fresh[1].public)
    with pytest.raises(NotAValidator):
        apply_block(
            chain.state, replace(honest, header=forged), chain.header, chain.genesis, chain.verifier
        )


def pending_round(chain: ChainBuilder) -> bytes:
    """Publish a task and submit round 1; return its SV task once its schedule is drawn."""
    publish = make_publish(ALICE, 0)
    chain.add([publish])
    submit = make_submit(publish.id, 1, 0)
    chain.add([submit])
    chain.add()  # block q+1 draws the schedule: commits are accepted from the next block
    return submit.id


def two_member_chain() -> ChainBuilder:
    genesis = make_genesis(
        {ALICE: 1_000 * FC, BOB: 1_000 * FC, key("server"): 100 * FC},
        PARAMS,
        validators=[MINER, MINER2],
    )
    return ChainBuilder(genesis)


def refused(chain: ChainBuilder, txs: list[Transaction], error: type[Exception]) -> None:
    with pytest.raises(BadTxInBlock) as err:
        chain.make(txs)
    assert isinstance(err.value.__cause__, error), err.value


def test_commits_only_from_members_and_one_per_member() -> None:
    chain = two_member_chain()
    sv_id = pending_round(chain)
    table = honest_table(chain.verifier, chain.state, sv_id)
    good = commit_txs(chain.state, sv_id, {MINER: table, MINER2: table})
    chain.make(good)  # valid
    chain.now -= PARAMS.min_block_interval_ms
    outsider = commit_txs(chain.state, sv_id, {MINER3: table})
    refused(chain, [*good, *outsider], CommitFromNonMember)
    refused(chain, [good[0], tx(MINER, 1, good[0].body)], DuplicateCommit)
    # The members' commits and reveals settle the round and pay the two of them only
    (payout,) = chain.value(sv_id, {MINER: table, MINER2: table}).payouts
    assert {a for a, _ in payout.miners} == {MINER.address, MINER2.address}


def test_32_copies_of_one_honest_commitment_under_fresh_keys_are_rejected() -> None:
    """Issue 10's second attack, on PoSap v2: 32 fresh keys copy one member's commitment (or a
    member copies it under its own key) to take the miners' pool; none of them is paid."""
    chain = two_member_chain()
    sv_id = pending_round(chain)
    table = honest_table(chain.verifier, chain.state, sv_id)
    (honest,) = commit_txs(chain.state, sv_id, {MINER: table})
    assert isinstance(honest.body, ShareCommit)
    fresh = [key(f"copy-{i}") for i in range(32)]
    copies = [tx(k, 0, honest.body) for k in fresh]
    # Any one copy makes the block invalid: fresh keys are not in the SV task's committee
    for copy in (copies[0], copies[-1]):
        refused(chain, [honest, copy], CommitFromNonMember)
    refused(chain, [honest, *copies], CommitFromNonMember)
    # The one member cannot commit twice either
    refused(chain, [honest, tx(MINER, 1, honest.body)], DuplicateCommit)
    # A member that copied the commitment cannot reveal the table under its own key
    chain.add([honest, tx(MINER2, 0, honest.body)])
    root = table_root(sv_id, table)
    for salt in (salt_of(MINER, sv_id), salt_of(MINER2, sv_id)):
        refused(chain, [tx(MINER2, 1, ShareReveal(sv_id, salt, root, table))], CommitmentMismatch)


# --- Conservation ---------------------------------------------------------------------------
ACTORS = [ALICE, BOB, MINER2]  # MINER, the proposer, keeps its bond so the chain goes on


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bond", "unbond", "transfer"]),
            st.integers(0, len(ACTORS) - 1),
            st.integers(1, 3 * FC),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_supply_equals_balances_bonds_unbonding_and_escrows_after_every_block(actions) -> None:
    chain = staked_chain(replace(PARAMS, max_validators=10))
    start = chain.state.supply
    nonces = {k.address: 0 for k in ACTORS}
    for kind, who, amount in actions:
        k = ACTORS[who]
        nonce = nonces[k.address]
        if kind == "bond":
            body: Bond | Unbond | None = Bond(amount, randao_tip_of(k))
        elif kind == "unbond":
            body = Unbond(amount)
        else:
            body = None
        t = tx(k, nonce, body) if body else make_transfer(k, ALICE, amount, nonce)
        try:
            chain.add([t])
        except BadTxInBlock:
            chain.now -= PARAMS.min_block_interval_ms
            continue
        nonces[k.address] += 1
        state: State = chain.state
        assert state.supply == start == state.total_held()
        # Matured entries are gone: released to balances at the end of their block
        assert all(u.release > chain.header.height for u in state.unbonding)
        assert state.is_validator(MINER.public)


# --- Proposer priorities in state -----------------------------------------------------------
def test_priorities_advance_one_step_per_height_and_an_epoch_change_applies_first() -> None:
    chain = staked_chain()
    tick = Ticker(chain)
    tick(bond(ALICE, 0, 5 * FC))
    sets = [validator_set(s.validators) for s in chain.states]
    # One increment per height, whatever the block held
    for before, after in zip(sets[:-1], sets[1:], strict=True):
        assert after == next_height_set(before)
    tick.until(PARAMS.epoch_blocks - 1)
    before = validator_set(chain.state.validators)
    tick()  # the epoch's last block: the change first, CometBFT's way, then one increment
    members = sorted([(MINER.public, FC), (MINER2.public, FC), (ALICE.public, 5 * FC)])
    assert validator_set(chain.state.validators) == next_height_set(apply_changes(before, members))
    after = validator_set(chain.state.validators)
    assert ALICE.public in after and after.power_of(ALICE.public) == 5 * FC
    assert chain.header.next_validators_hash == after.hash != chain.header.validators_hash
