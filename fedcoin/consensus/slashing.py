"""Evidence in a block body, and the slash it causes (DESIGN §5).

Each item must prove an equivocation (``evidence.verify_evidence``) by a member of the set of
its height (the state keeps the sets of the last ``evidence_max_age`` heights), be at most
``evidence_max_age`` blocks old, and not name a (validator, height) already punished.

The slash for an infraction at height h: ``floor(bond · slash_bps / 10⁴)`` of the bond, plus
the same fraction of every unbonding entry of the key created after h (each entry rounded down
on its own). Of the total, ``floor(total · slash_reward_bps / 10⁴)`` goes to the balance of the
block's creator and the rest is burned (the supply falls by it): coins are conserved. The key
is jailed until ``height + jail_blocks``: it leaves the set at the next epoch boundary and may
bond again from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedcoin.consensus.evidence import verify_evidence
from fedcoin.consensus.validators import ValidatorSet, VoteVerifier
from fedcoin.data.block import MAX_EVIDENCE
from fedcoin.data.genesis import ChainParams
from fedcoin.data.keys import address_of
from fedcoin.data.state import Draft, Stake, Unbonding
from fedcoin.data.vote import DuplicateVoteEvidence
from fedcoin.errors import BadEvidence, EvidenceAlreadyPunished, TooMuchEvidence, VoteError

BPS = 10_000


@dataclass(frozen=True, slots=True)
class Slash:
    """What one evidence item cost its validator."""

    validator: bytes
    height: int
    amount: int
    """Taken from the bond and the unbonding entries."""
    reward: int
    """Paid to the block's creator; ``amount - reward`` was burned."""


def apply_evidence(
    draft: Draft,
    evidence: Sequence[DuplicateVoteEvidence],
    *,
    chain_id: str,
    height: int,
    creator: bytes,
    params: ChainParams,
    check: VoteVerifier,
    set_of: Callable[[int], ValidatorSet | None],
) -> tuple[Slash, ...]:
    """Verify and punish each item in order; raise the ``BlockError`` the first bad one breaks."""
    # At most MAX_EVIDENCE items
    if len(evidence) > MAX_EVIDENCE:
        raise TooMuchEvidence(count=len(evidence), max=MAX_EVIDENCE)
    slashes: list[Slash] = []
    for index, item in enumerate(evidence):
        validators = set_of(item.height)
        # The item proves an equivocation by a member of its height's set, recent enough
        if validators is None:
            raise BadEvidence(index=index, error=f"no set kept for height {item.height}")
        try:
            verify_evidence(
                item,
                validators,
                chain_id,
                current_height=height,
                max_age=params.evidence_max_age,
                check=check,
            )
        except VoteError as exc:
            raise BadEvidence(index=index, error=str(exc)) from exc
        # ... not punished yet
        offence = (item.validator, item.height)
        if offence in draft.punished:
            raise EvidenceAlreadyPunished(validator=item.validator, height=item.height)
        draft.punished = tuple(sorted((*draft.punished, offence)))
        slashes.append(slash(draft, item.validator, item.height, height, creator, params))
    return tuple(slashes)


def slash(
    draft: Draft,
    validator: bytes,
    offence_height: int,
    height: int,
    creator: bytes,
    params: ChainParams,
    *,
    bps: int | None = None,
    reward_bps: int | None = None,
) -> Slash:
    """Take the slash from ``validator``'s stake, pay ``creator``'s part, burn the rest, jail.

    ``bps`` and ``reward_bps`` default to the equivocation's ``slash_bps`` and
    ``slash_reward_bps``; PoSap passes its own (``slash_fraud_bps``; nothing or 10 % to the
    sender of a fraud proof, who is then ``creator``)."""
    bps = params.slash_bps if bps is None else bps
    reward_bps = params.slash_reward_bps if reward_bps is None else reward_bps
    taken = 0
    stake = draft.stake(validator)
    if stake is not None:
        cut = stake.bond * bps // BPS
        taken += cut
        jailed_until = max(stake.jailed_until, height + params.jail_blocks)
        draft.set_stake(validator, Stake(stake.bond - cut, stake.randao_tip, jailed_until))
    entries: list[Unbonding] = []
    for entry in draft.unbonding:
        if entry.pubkey == validator and entry.created > offence_height:
            cut = entry.amount * bps // BPS
            taken += cut
            entries.append(Unbonding(validator, entry.amount - cut, entry.created, entry.release))
        else:
            entries.append(entry)
    draft.unbonding = entries
    reward = taken * reward_bps // BPS
    draft.credit(address_of(creator), reward)
    draft.supply -= taken - reward
    return Slash(validator, offence_height, taken, reward)
