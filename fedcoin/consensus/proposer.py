"""Who proposes: CometBFT's weighted round robin, with the priorities kept in the chain's state.

Every validator has a priority. One *increment* adds each member's power to its priority, picks
the member with the highest priority (ties: the lower address, ``sha256(pubkey)[:20]``) and
subtracts the total power from it. Over many increments each member proposes in proportion to
its power, and nothing a proposer controls (no block hash) enters the choice.

Exact integer arithmetic (as CometBFT's ``types/validator_set.go``; every add and subtract is
clipped to int64, which with ``total ≤ MAX_TOTAL_POWER`` never binds):

- ``increment(set, k)`` first *rescales*: with ``W`` the total power, ``d = max − min`` of the
  priorities and ``D = 2·W``, if ``d > D`` every priority is divided by ``ceil(d / D)``,
  truncating toward zero. Then it *centres*: ``avg = floor(Σ priority / n)`` is subtracted from
  each. Then it applies ``k`` single increments; the proposer is the last one picked.
- The proposer of round ``r`` at a height whose set is ``S`` is the proposer of
  ``increment(S, r + 1)``; the set of the next height is ``increment(S, 1)`` (one step per
  height, whatever the number of rounds played), as CometBFT.
- A set change (an epoch boundary, ``apply_changes``): members that stay keep their priority and
  take their new power; a new member starts at ``−(P + floor(P / 8))`` (−1.125·P rounded toward
  −∞), where ``P`` is the total power of the new members plus the staying ones with their new
  power plus the leaving ones with their old power (CometBFT's "total after updates, before
  removals"); leaving members are dropped; then rescale with ``D = 2·W_new`` and centre.
- The genesis set is ``apply_changes`` of the genesis members onto the empty set: everyone at 0.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedcoin.consensus.validators import Validator, ValidatorSet
from fedcoin.data.encoding import I64_MAX, I64_MIN
from fedcoin.errors import InvalidValidatorSet

#: The largest spread of priorities, as a multiple of the total power, before rescaling.
PRIORITY_WINDOW = 2


def _clip(value: int) -> int:
    return min(max(value, I64_MIN), I64_MAX)


def _div_toward_zero(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q


def rescale(priorities: list[int], total_power: int) -> list[int]:
    """Divide every priority by ``ceil(d / 2W)`` (toward zero) when the spread ``d > 2W``."""
    window = PRIORITY_WINDOW * total_power
    spread = max(priorities) - min(priorities)
    if window <= 0 or spread <= window:
        return priorities
    ratio = (spread + window - 1) // window
    return [_div_toward_zero(p, ratio) for p in priorities]


def centre(priorities: list[int]) -> list[int]:
    """Subtract ``floor(mean)`` from every priority."""
    avg = sum(priorities) // len(priorities)
    return [_clip(p - avg) for p in priorities]


def _best(members: list[Validator], priorities: list[int]) -> int:
    """Index of the highest priority, ties to the lower address."""
    best = 0
    for i in range(1, len(members)):
        if priorities[i] > priorities[best] or (
            priorities[i] == priorities[best] and members[i].address < members[best].address
        ):
            best = i
    return best


def increment(validators: ValidatorSet, times: int) -> tuple[ValidatorSet, bytes]:
    """Rescale, centre, then ``times`` round-robin steps; return the new set and the proposer."""
    if not validators.members:
        raise InvalidValidatorSet(reason="an empty set has no proposer")
    if times <= 0:
        raise ValueError("times must be positive")
    members = list(validators.members)
    total = validators.total_power
    priorities = centre(rescale([v.priority for v in members], total))
    chosen = 0
    for _ in range(times):
        priorities = [_clip(p + v.power) for p, v in zip(priorities, members, strict=True)]
        chosen = _best(members, priorities)
        priorities[chosen] = _clip(priorities[chosen] - total)
    updated = tuple(
        Validator(v.pubkey, v.power, p) for v, p in zip(members, priorities, strict=True)
    )
    return ValidatorSet(updated), members[chosen].pubkey


def proposer_for_round(validators: ValidatorSet, round_: int) -> bytes:
    """The proposer of round ``round_`` at a height whose (state) set is ``validators``."""
    return increment(validators, round_ + 1)[1]


def next_height_set(validators: ValidatorSet) -> ValidatorSet:
    """The priorities the next height starts from: one increment per height."""
    return increment(validators, 1)[0]


def apply_changes(validators: ValidatorSet, members: Iterable[tuple[bytes, int]]) -> ValidatorSet:
    """Replace the membership by ``members`` (``(pubkey, power)``), CometBFT's way (above)."""
    new_power = dict(members)
    if not new_power:
        raise InvalidValidatorSet(reason="a validator set cannot become empty")
    old = {v.pubkey: v for v in validators.members}
    leaving_power = sum(v.power for pk, v in old.items() if pk not in new_power)
    before_removals = sum(new_power.values()) + leaving_power
    start = -(before_removals + (before_removals >> 3))
    staged = [
        Validator(pk, power, old[pk].priority if pk in old else start)
        for pk, power in sorted(new_power.items())
    ]
    staged_set = ValidatorSet(tuple(staged))
    priorities = centre(rescale([v.priority for v in staged], staged_set.total_power))
    return ValidatorSet(
        tuple(Validator(v.pubkey, v.power, p) for v, p in zip(staged, priorities, strict=True))
    )


def genesis_set(members: Iterable[tuple[bytes, int]]) -> ValidatorSet:
    """The first set of a chain: every member new, so every priority 0 after centring."""
    return apply_changes(ValidatorSet(()), members)
