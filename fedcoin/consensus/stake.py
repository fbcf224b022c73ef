"""Stake rules (DESIGN §5): Bond and Unbond bodies, and the stake steps at the end of a block.

``Bond`` moves balance into the sender key's bond; ``Unbond`` moves bond into an unbonding
entry that is released to the key's address at the end of block ``created + unbonding_blocks``
(slashable until then). At the end of an epoch's last block (height a multiple of
``epoch_blocks``) the next epoch's set is snapshotted by ``select_validators``: later bond
changes do not change power before the next boundary. No coin is created or destroyed here.

After every block the proposer priorities advance one step (CometBFT: a set change is applied
first, with ``proposer.apply_changes``, then ``proposer.next_height_set``), so the state after
block h holds the set, priorities included, that decides height h+1. The state also keeps the
membership of every set that decided one of the last ``evidence_max_age`` heights, and forgets
punished equivocations once they are too old to be evidenced again.
"""

from __future__ import annotations

from collections.abc import Collection

from fedcoin.consensus.proposer import apply_changes, next_height_set
from fedcoin.consensus.validators import Validator, ValidatorSet, select_validators
from fedcoin.data.encoding import sha256
from fedcoin.data.genesis import ChainParams
from fedcoin.data.keys import PrivateKey, address_of
from fedcoin.data.state import Account, Draft, Members, Stake, Unbonding, powers_of
from fedcoin.data.tx import Bond, Unbond
from fedcoin.errors import (
    InsufficientBalance,
    InsufficientBond,
    InvalidAmount,
    MissingRandaoTip,
    ValidatorJailed,
)

NO_TIP = bytes(32)
"""A Bond's randao_tip when it keeps the key's registered tip."""

RANDAO_LENGTH = 10_000
"""K: how many reveals one registered hash chain allows."""

TAG_RANDAO = b"fedcoin/randao-secret/v1"


def randao_secret(key: PrivateKey) -> bytes:
    """The key's randao secret: only the key can make it (Ed25519 signatures are deterministic),
    so a validator re-derives it after a restart and nothing else has to be kept secret."""
    return sha256(key.sign(TAG_RANDAO, bytes(32)))


def randao_tip(secret: bytes, length: int = RANDAO_LENGTH) -> bytes:
    """H^length(secret): the tip registered with a bond (DESIGN §5 randomness beacon)."""
    value = secret
    for _ in range(length):
        value = sha256(value)
    return value


def randao_tip_of(key: PrivateKey) -> bytes:
    return randao_tip(randao_secret(key))


def apply_bond(draft: Draft, pubkey: bytes, body: Bond, height: int) -> None:
    """Lock ``body.amount`` of the key's balance as its bond (the fee is already paid)."""
    # The amount is positive
    if body.amount <= 0:
        raise InvalidAmount(amount=body.amount)
    address = address_of(pubkey)
    account = draft.account(address)
    # The balance covers the amount
    if account.balance < body.amount:
        raise InsufficientBalance(balance=account.balance, needed=body.amount)
    stake = draft.stake(pubkey)
    # A key's first bond registers its randao tip
    if (stake is None or stake.randao_tip == NO_TIP) and body.randao_tip == NO_TIP:
        raise MissingRandaoTip(validator=pubkey)
    jailed_until = 0 if stake is None else stake.jailed_until
    # A jailed key may bond again only after jail_blocks
    if jailed_until and height < jailed_until:
        raise ValidatorJailed(validator=pubkey, until=jailed_until, height=height)
    bond = 0 if stake is None else stake.bond
    tip = body.randao_tip if stake is None or body.randao_tip != NO_TIP else stake.randao_tip
    draft.set_account(address, Account(account.balance - body.amount, account.nonce))
    draft.set_stake(pubkey, Stake(bond + body.amount, tip, 0))


def apply_unbond(
    draft: Draft, pubkey: bytes, body: Unbond, height: int, params: ChainParams
) -> None:
    """Move ``body.amount`` of the key's bond into an unbonding entry."""
    # The amount is positive
    if body.amount <= 0:
        raise InvalidAmount(amount=body.amount)
    stake = draft.stake(pubkey)
    bond = 0 if stake is None else stake.bond
    # The bond covers the amount
    if stake is None or bond < body.amount:
        raise InsufficientBond(bond=bond, needed=body.amount)
    draft.set_stake(pubkey, Stake(bond - body.amount, stake.randao_tip, stake.jailed_until))
    draft.unbonding.append(Unbonding(pubkey, body.amount, height, height + params.unbonding_blocks))


def end_block_stake(
    draft: Draft, height: int, params: ChainParams, liable: Collection[bytes] = ()
) -> None:
    """Release matured unbonding entries, except those of ``liable`` keys (PoSap may still
    slash them: ``valuation.liable``); at an epoch's last block, snapshot the next set."""
    if any(u.release <= height for u in draft.unbonding):
        kept: list[Unbonding] = []
        for entry in draft.unbonding:
            if entry.release <= height and entry.pubkey not in liable:
                draft.credit(address_of(entry.pubkey), entry.amount)
            else:
                kept.append(entry)
        draft.unbonding = kept
    current = validator_set(draft.validators)
    if height % params.epoch_blocks == 0:
        stakes = draft.bonds()
        selected = select_validators(
            {pk: st.bond for pk, st in stakes.items()},
            [pk for pk, st in stakes.items() if st.jailed_until],
            max_validators=params.max_validators,
            min_bond=params.min_bond,
        )
        # An empty selection keeps the set: a chain without validators could never move again
        if selected:
            current = apply_changes(current, selected)
    draft.validators = members_of(next_height_set(current))
    powers = powers_of(draft.validators)
    recent = draft.recent_sets
    if not recent or recent[-1][1] != powers:
        recent = (*recent, (height + 1, powers))
    # Keep the sets of the heights the next block's evidence may name (and its LastCommit's)
    oldest = height + 1 - params.evidence_max_age
    while len(recent) > 1 and recent[1][0] <= oldest:
        recent = recent[1:]
    draft.recent_sets = recent
    draft.punished = tuple(p for p in draft.punished if p[1] >= oldest)


def validator_set(members: Members) -> ValidatorSet:
    """The state's form of a set → a ``ValidatorSet`` with its priorities."""
    return ValidatorSet(tuple(Validator(pk, power, priority) for pk, power, priority in members))


def members_of(validators: ValidatorSet) -> Members:
    return tuple((v.pubkey, v.power, v.priority) for v in validators.members)
