"""Issue 10's attacks at the chain level, and the slashing that evidence in a block causes.

Each attack here worked against the weight-based chain (main before issue 10): a private chain
of blocks signed by fresh keys reorganised a 60-block chain and reversed a 500 FC payment; 32
re-signed copies of one share re-settled a round; a key stamping blocks 14 s ahead kept honest
miners from proposing. Against the BFT chain none commits, and committed payments stay. (Under
PoSap v2 the copied share is a commitment copied under fresh keys.)
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.consensus.chain import Chain
from fedcoin.consensus.stake import NO_TIP
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.state import State
from fedcoin.data.store import MemoryChainStore
from fedcoin.data.tx import Bond, Unbond
from fedcoin.data.vote import CommitCertificate, CommitSig
from fedcoin.errors import (
    BadEvidence,
    BadTxInBlock,
    BadVoteSignature,
    CertificateNotCanonical,
    CommitFromNonMember,
    ConflictingCommit,
    EvidenceAlreadyPunished,
    InsufficientPower,
    NotAValidator,
    TimestampInFuture,
    UnknownValidator,
)
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    FC,
    MINER,
    MINER2,
    MINER3,
    VOTE_CHECK,
    ChainBuilder,
    TableVerifier,
    certify,
    commit_next,
    commit_txs,
    equivocation,
    honest_table,
    key,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
    precommit,
    reveal_of,
    tx,
    value_on_chain,
)

VALIDATORS = [MINER, MINER2, MINER3, key("validator-0")]
PARAMS = replace(
    DEFAULT_PARAMS,
    epoch_blocks=4,
    unbonding_blocks=20,
    jail_blocks=6,
    evidence_max_age=5,
    slash_bps=1_000,
    slash_reward_bps=2_500,
)


def four_validators() -> Chain:
    """A chain of four equal validators (10 FC each); ALICE and BOB hold 1 000 FC."""
    genesis = make_genesis({ALICE: 1_000 * FC, BOB: 1_000 * FC}, PARAMS, validators=VALIDATORS)
    genesis = replace(
        genesis, validators=tuple(replace(v, bond=10 * FC) for v in genesis.validators)
    )
    return Chain(MemoryChainStore(genesis), genesis, TableVerifier(), vote_check=VOTE_CHECK)


def conserved(state: State) -> bool:
    return state.supply == state.total_held()


# --- Certificates: only > 2/3 of the height's power commits -------------------------------
def test_a_private_chain_of_fresh_keys_cannot_commit_or_reverse_a_payment() -> None:
    chain = four_validators()
    parent_state = chain.head_state()
    payment, _ = chain.propose(
        MINER.public,
        reveal_of(MINER, parent_state),
        timestamp_ms=chain.head.timestamp_ms + 1_000,
        txs=[make_transfer(ALICE, CAROL, 500 * FC, 0)],
    )
    # The attacker's block spends the same coins elsewhere; its creator is a fresh key
    fresh = [key(f"fresh-{i}") for i in range(40)]
    with pytest.raises(NotAValidator):
        chain.propose(
            fresh[0].public,
            bytes(32),
            timestamp_ms=chain.head.timestamp_ms + 1_000,
            txs=[make_transfer(ALICE, BOB, 500 * FC, 0)],
        )
    # Forty fresh keys' precommits are no certificate, nor is one real validator's
    with pytest.raises(UnknownValidator):
        chain.commit(payment, certify(payment, parent_state, signers=fresh))
    with pytest.raises(InsufficientPower):
        chain.commit(payment, certify(payment, parent_state, signers=[MINER, MINER2]))
    assert chain.head.height == 0
    # Three of four (> 2/3) commit it, and nothing replaces it afterwards
    chain.commit(payment, certify(payment, parent_state, signers=[MINER, MINER2, MINER3]))
    rival = ChainBuilder(chain.genesis)
    for _ in range(3):  # a longer private chain by a real validator, fully certified
        rival.add([])
    with pytest.raises(ConflictingCommit):
        chain.commit(rival.blocks[1], rival.certificates[1])
    assert chain.head.hash == payment.hash
    assert chain.head_state().balance(CAROL.address) == 500 * FC


def test_a_certificate_with_duplicate_signers_mixed_rounds_or_nil_votes_is_refused() -> None:
    chain = four_validators()
    state = chain.head_state()
    block, _ = chain.propose(
        MINER.public, reveal_of(MINER, state), timestamp_ms=chain.head.timestamp_ms + 1_000
    )
    good = certify(block, state, signers=[MINER, MINER2, MINER3])
    sigs = good.signatures
    # One validator counted twice to reach 2/3
    duplicated = replace(good, signatures=tuple(sorted((sigs[0], sigs[0], sigs[1]), key=_by)))
    with pytest.raises(CertificateNotCanonical):
        chain.commit(block, duplicated)
    # Precommits of two rounds in one certificate: each signs its own round
    late = precommit(MINER3, 1, 1, block.hash)
    mixed = replace(good, signatures=tuple(
        s if s.validator != MINER3.public else CommitSig(MINER3.public, late.signature)
        for s in good.signatures
    ))  # fmt: skip
    with pytest.raises(BadVoteSignature):
        chain.commit(block, mixed)
    # Nil precommits do not commit a block
    nil = [precommit(k, 1, 0, None) for k in (MINER, MINER2, MINER3)]
    nil_cert = CommitCertificate(
        1, 0, block.hash, tuple(sorted((CommitSig(v.validator, v.signature) for v in nil), key=_by))
    )
    with pytest.raises(BadVoteSignature):
        chain.commit(block, nil_cert)
    assert chain.head.height == 0
    chain.commit(block, good)
    assert chain.head.hash == block.hash


def _by(sig: CommitSig) -> bytes:
    return sig.validator


# --- PoSap: copies of one commitment cannot settle; a settled round cannot be re-settled ---
def test_copies_of_one_commitment_cannot_settle_and_a_settled_round_cannot_be_resettled() -> None:
    chain = four_validators()
    publish = make_publish(ALICE, 0)
    commit_next(chain, MINER, [publish])
    submit = make_submit(publish.id, 1, 0)
    commit_next(chain, MINER, [submit])
    commit_next(chain, MINER)  # block q+1 draws the schedule
    state = chain.head_state()
    table = honest_table(chain.verifier, state, submit.id)
    (honest,) = commit_txs(state, submit.id, {MINER2: table})
    copies = [tx(k, 0, honest.body) for k in (key(f"copy-{i}") for i in range(32))]
    # A block of the commitment copied under 32 fresh keys is refused where every validator
    # checks it
    with pytest.raises(BadTxInBlock) as err:
        chain.propose(
            MINER.public,
            reveal_of(MINER, state),
            timestamp_ms=chain.head.timestamp_ms + PARAMS.min_block_interval_ms,
            txs=[honest, *copies],
        )
    assert isinstance(err.value.__cause__, CommitFromNonMember)
    applied = value_on_chain(chain, submit.id)
    settled = chain.head
    (payout,) = applied.payouts
    paid = chain.head_state().balance(MINER2.address)
    assert paid > 0 and chain.head_state().queue == ()
    assert chain.payouts_of(settled.hash) == (payout,)
    # A rival block at the settled height (the same committee re-settling with a forged
    # table) never commits
    rival = ChainBuilder(chain.genesis, chain.verifier)  # type: ignore[arg-type]
    rival.add([publish])
    rival.add([submit])
    forged = (table[0] + 1, *table[1:])
    rival.value(submit.id, dict.fromkeys(VALIDATORS, forged))
    assert rival.header.height == settled.height
    with pytest.raises(ConflictingCommit):
        chain.commit(rival.block, rival.certificates[rival.header.height])
    assert chain.head.hash == settled.hash
    assert chain.head_state().balance(MINER2.address) == paid


# --- Time: a far-future block is not prevoted -----------------------------------------------
def test_a_block_stamped_14_s_ahead_is_refused_before_prevote() -> None:
    chain = four_validators()
    now = chain.head.timestamp_ms + 1_000
    state = chain.head_state()
    ahead, _ = chain.propose(
        MINER.public,
        reveal_of(MINER, state),
        timestamp_ms=now + PARAMS.future_tolerance_ms + 14_000,
    )
    with pytest.raises(TimestampInFuture):
        chain.check_proposal(ahead, now_ms=now)
    # An honest proposal at the local clock is fine, whatever the far-future one did
    honest, _ = chain.propose(MINER2.public, reveal_of(MINER2, state), timestamp_ms=now)
    assert chain.check_proposal(honest, now_ms=now).state.root() == honest.header.state_root


# --- Evidence: slashing conserves coins -----------------------------------------------------
def slash_setup() -> tuple[ChainBuilder, dict[str, int]]:
    """MINER2 equivocates at height 2; it unbonded 2 FC at height 1 and 4 FC at height 3. The
    head is at height 4, so the next block (5) is not an epoch's last."""
    genesis = make_genesis({ALICE: 1_000 * FC}, PARAMS, validators=VALIDATORS)
    genesis = replace(
        genesis, validators=tuple(replace(v, bond=10 * FC) for v in genesis.validators)
    )
    chain = ChainBuilder(genesis)
    chain.add([tx(MINER2, 0, Unbond(2 * FC))])
    chain.add([])
    chain.add([tx(MINER2, 1, Unbond(4 * FC))])
    chain.add([make_transfer(ALICE, MINER2, 5 * FC, 0)])
    return chain, {"bond": 4 * FC, "before_h": 2 * FC, "after_h": 4 * FC}


def test_evidence_slashes_bond_and_later_unbonding_burns_part_and_pays_the_creator() -> None:
    chain, amounts = slash_setup()
    before = chain.state
    creator_before = before.balance(MINER.address)
    applied = chain.add(evidence=[equivocation(MINER2, 2)], proposer=MINER)
    after = chain.state
    # 10 % of the bond and of the entry created after h = 2; the entry of height 1 is spared
    taken = amounts["bond"] * 1_000 // 10_000 + amounts["after_h"] * 1_000 // 10_000
    assert after.bond_of(MINER2.public) == amounts["bond"] - amounts["bond"] // 10
    assert sorted(u.amount for u in after.unbonding) == sorted(
        [amounts["before_h"], amounts["after_h"] - amounts["after_h"] // 10]
    )
    reward = taken * 2_500 // 10_000
    assert applied.slashes[0].amount == taken and applied.slashes[0].reward == reward
    assert after.balance(MINER.address) == creator_before + reward
    assert after.supply == before.supply - (taken - reward)
    assert conserved(before) and conserved(after)
    # Jailed: still in this epoch's set, gone at the boundary, and cannot bond back early
    assert after.stakes[MINER2.public].jailed_until == 5 + PARAMS.jail_blocks
    assert after.is_validator(MINER2.public)
    while chain.header.height < 2 * PARAMS.epoch_blocks - 1:
        chain.add([])
        assert chain.state.is_validator(MINER2.public)
    chain.add([])  # the epoch's last block leaves the jailed key out of the next set
    assert not chain.state.is_validator(MINER2.public)
    assert conserved(chain.state)


def test_an_equivocation_is_punished_once_and_only_while_recent() -> None:
    chain, _ = slash_setup()
    chain.add(evidence=[equivocation(MINER2, 2)])
    with pytest.raises(EvidenceAlreadyPunished):
        chain.make(evidence=[equivocation(MINER2, 2, round_=0)])
    chain.now -= PARAMS.min_block_interval_ms
    with pytest.raises(EvidenceAlreadyPunished):  # twice in one block neither
        chain.make(evidence=[equivocation(MINER3, 3), equivocation(MINER3, 3)])
    chain.now -= PARAMS.min_block_interval_ms
    # Another round of the same height is the same infraction (validator, height)
    with pytest.raises(EvidenceAlreadyPunished):
        chain.make(evidence=[equivocation(MINER2, 2, round_=3)])
    chain.now -= PARAMS.min_block_interval_ms
    while chain.header.height < 3 + PARAMS.evidence_max_age:
        chain.add([])
    with pytest.raises(BadEvidence):  # height 3 is now more than evidence_max_age old
        chain.make(evidence=[equivocation(MINER3, 3)])


def test_evidence_against_a_non_member_or_with_a_bad_signature_is_refused() -> None:
    chain, _ = slash_setup()
    with pytest.raises(BadEvidence):
        chain.make(evidence=[equivocation(ALICE, 2)])
    chain.now -= PARAMS.min_block_interval_ms
    forged = equivocation(MINER3, 2)
    forged = replace(forged, vote_b=replace(forged.vote_b, signature=bytes(64)))
    with pytest.raises(BadEvidence):
        chain.make(evidence=[forged])


def test_a_slashed_validator_bonds_back_only_after_jail_blocks() -> None:
    chain, _ = slash_setup()
    chain.add(evidence=[equivocation(MINER2, 2)])
    jailed_until = chain.state.stakes[MINER2.public].jailed_until
    while chain.header.height < jailed_until - 2:
        chain.add([])
    with pytest.raises(BadTxInBlock, match="ValidatorJailed"):
        chain.make([tx(MINER2, 2, Bond(FC, NO_TIP))])
    chain.now -= PARAMS.min_block_interval_ms
    chain.add([])
    chain.add([tx(MINER2, 2, Bond(FC, NO_TIP))])
    assert chain.state.stakes[MINER2.public].jailed_until == 0


def test_sets_of_recent_heights_are_kept_for_evidence_and_pruned() -> None:
    chain, _ = slash_setup()
    chain.add(evidence=[equivocation(MINER2, 2)])
    assert chain.state.punished == ((MINER2.public, 2),)
    for _ in range(2 * PARAMS.epoch_blocks):
        chain.add([])
    state, head = chain.state, chain.header.height
    oldest = head + 1 - PARAMS.evidence_max_age
    # The set that decided the oldest height evidence may name is kept, and no older one
    firsts = [first for first, _ in state.recent_sets]
    assert firsts[0] <= oldest and all(first > oldest for first in firsts[1:])
    assert state.powers_at(head + 1) == tuple((pk, power) for pk, power, _ in state.validators)
    assert MINER2.public not in dict(state.powers_at(head + 1) or ())
    assert state.punished == ()  # aged out with the heights evidence may name


def test_the_chain_tells_an_evidence_pool_what_the_next_block_may_carry() -> None:
    chain = four_validators()
    for _ in range(3):
        commit_next(chain, MINER)
    fresh = equivocation(MINER2, 2)
    chain.check_evidence(fresh)
    with pytest.raises(BadEvidence):
        chain.check_evidence(equivocation(ALICE, 2))
    # What a proposer may carry together: a second proof of the same offence (another round)
    # and an invalid item are left out, the rest kept in order
    same_offence, other = equivocation(MINER2, 2, round_=1), equivocation(MINER3, 2)
    chain.check_evidence(same_offence)
    picked = chain.punishable([fresh, equivocation(ALICE, 2), same_offence, other])
    assert picked == (fresh, other)
    _, result = commit_next(chain, MINER, evidence=[fresh])
    assert result.applied is not None and result.applied.slashes[0].validator == MINER2.public
    with pytest.raises(EvidenceAlreadyPunished):
        chain.check_evidence(fresh)
    assert chain.head_state().punished == ((MINER2.public, 2),)
    assert conserved(chain.head_state())


def test_exactly_the_signer_sets_above_two_thirds_of_the_power_commit() -> None:
    """Unequal powers 1, 2, 3, 4 FC (total 10): a certificate commits iff 3·power > 20."""
    powers = {k.public: p for k, p in zip(VALIDATORS, (1, 2, 3, 4), strict=True)}
    genesis = make_genesis({ALICE: 1_000 * FC}, PARAMS, validators=VALIDATORS)
    genesis = replace(
        genesis,
        validators=tuple(replace(v, bond=powers[v.pubkey] * FC) for v in genesis.validators),
    )
    committed = []
    for mask in range(1, 16):
        signers = [k for i, k in enumerate(VALIDATORS) if mask >> i & 1]
        chain = Chain(MemoryChainStore(genesis), genesis, TableVerifier(), vote_check=VOTE_CHECK)
        state = chain.head_state()
        block, _ = chain.propose(
            MINER.public, reveal_of(MINER, state), timestamp_ms=chain.head.timestamp_ms + 1_000
        )
        certificate = certify(block, state, signers=signers)
        power = sum(powers[k.public] for k in signers)
        if 3 * power > 2 * 10:
            chain.commit(block, certificate)
            committed.append(power)
        else:
            with pytest.raises(InsufficientPower):
                chain.commit(block, certificate)
            assert chain.head.height == 0
    assert sorted(committed) == [7, 7, 8, 9, 10]
