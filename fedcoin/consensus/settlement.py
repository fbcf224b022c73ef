"""Settlement of an SV task and adjudication of fraud proofs (DESIGN §5 "Valuation", steps 4–5),
as pure functions of recorded facts.

``settle`` is the end-of-block state transition at height h_s. Its inputs are what the chain
recorded — the committee's powers (snapshotted when the task opened), each revealer's root and
the tables by root — plus ``evaluate(position)``, the exact ``U`` of the schedule's mask at a
position. The proposer of h_s has no input: whichever block reaches h_s, the outcome is the same
function of the recorded reveals. The rule:

1. ``weight(root)`` = Σ power of its revealers; candidates are the roots with ``3·weight > W``
   (W = the committee's total power). Each candidate has an honest revealer unless more than
   1/3 of the power is faulty, and at most two roots can be candidates.
2. Two candidates: ``U`` at their first differing position decides; a candidate whose entry is
   wrong is eliminated and its revealers slashed (``ADJUDICATED``). Both wrong: no candidate.
3. One surviving root T: every other revealed root is checked at its first difference from T;
   its revealers are slashed if its entry is wrong (``WRONG_ROOT``). If instead T's entry is
   wrong there (possible only with more than 1/3 faulty power), T's revealers are slashed
   (``DISPROVEN``) and T is eliminated: no candidate. *This case is not spelled out in DESIGN;
   treating it like the two-candidate case keeps a proven-wrong table from being paid.*
4. No candidate: the first time the task re-opens (``RETRY``), the second time it is ``VOID``.
   Slashes decided on the way stand either way.
5. Settled: the miners' pool goes to T's revealers by power, ``pool·p_v // weight(T)``, the
   remainder to the creator of block h_s. A member that did not reveal T earns nothing.

Every position is evaluated at most once per settlement (``evaluated`` lists them in order):
that, plus fraud proofs, is what a node spends to check a round beyond making its own table.

Fraud proofs against a settled table are judged on the chain (``valuation.apply_fraud_proof``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedcoin.consensus.table import first_difference, table_root
from fedcoin.errors import RevealFromNonMember, UnknownRoot

BPS = 10_000
"""Basis points in a whole."""
PROVER_REWARD_BPS = 1_000
"""Share of the stake slashed by a proven fraud proof that goes to its sender (10 %)."""

Evaluate = Callable[[int], int]
"""``evaluate(position)``: the exact U of the schedule's mask at that position."""


class Status(enum.Enum):
    """What became of the SV task at its settlement height."""

    SETTLED = "settled"
    """A table won: its estimate is the round's SV and its revealers share the miners' pool."""
    RETRY = "retry"
    """No table won on the first attempt: the task re-opens with fresh windows."""
    VOID = "void"
    """No table won on the second attempt: the round is voided and its price refunded."""


class SlashReason(enum.Enum):
    """Why a revealer is slashed."""

    ADJUDICATED = "adjudicated"
    """Its root was a candidate (> 1/3 of the power) with a wrong entry where the candidates
    differ."""
    WRONG_ROOT = "wrong-root"
    """Its root was wrong at its first difference from the winning table."""
    DISPROVEN = "disproven"
    """Its root won on weight but was wrong at its first difference from another root."""


@dataclass(frozen=True, slots=True)
class Slash:
    """One revealer to slash ``slash_fraud_bps`` of its bond (burned)."""

    validator: bytes
    """The revealer's public key."""
    root: bytes
    """The root it revealed."""
    reason: SlashReason
    """Which step of the rule found the root wrong."""
    position: int
    """The schedule position whose exact evaluation proves the root wrong."""


@dataclass(frozen=True, slots=True)
class Payout:
    """A revealer's part of the miners' pool."""

    validator: bytes
    """The revealer's public key."""
    amount: int
    """Base units: ``pool·power // weight(T)``."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of ``settle``: a function of the recorded reveals only."""

    status: Status
    """Settled, retry or void."""
    root: bytes | None
    """The winning table's root when settled, else None."""
    slashed: tuple[Slash, ...]
    """Revealers of proven-wrong roots, sorted by key (each reveals once, so at most once)."""
    payouts: tuple[Payout, ...]
    """The winning table's revealers and their pay, sorted by key; empty unless settled."""
    remainder: int
    """Pool left by the floor divisions, to the creator of block h_s; the whole pool is
    unpaid (0 here) unless settled."""
    evaluated: tuple[int, ...]
    """Schedule positions evaluated, each once, in the order the rule needed them."""


class _Memo:
    """``evaluate`` called at most once per position; remembers the order of first calls."""

    def __init__(self, evaluate: Evaluate) -> None:
        self._evaluate = evaluate
        self.values: dict[int, int] = {}

    def __call__(self, position: int) -> int:
        if position not in self.values:
            self.values[position] = self._evaluate(position)
        return self.values[position]


def settle(
    sv_task_id: bytes,
    committee: Mapping[bytes, int],
    reveals: Mapping[bytes, bytes],
    tables: Mapping[bytes, Sequence[int]],
    evaluate: Evaluate,
    *,
    first_attempt: bool,
    pool: int,
) -> Settlement:
    """Settle an SV task from its recorded reveals (DESIGN §5 step 4).

    ``committee``: member key → power (positive), fixed for the task's life. ``reveals``:
    revealer key → root. ``tables``: root → table, for every revealed root (each table checked
    at its reveal against the schedule length and the validation size). ``pool``: the miners'
    pool of the round in base units.
    """
    _check_inputs(sv_task_id, committee, reveals, tables, pool)
    memo = _Memo(evaluate)
    total = sum(committee.values())
    by_root: dict[bytes, list[bytes]] = {}
    for validator in sorted(reveals):
        by_root.setdefault(reveals[validator], []).append(validator)
    weight = {root: sum(committee[v] for v in members) for root, members in by_root.items()}
    slashes: list[Slash] = []

    def slash(root: bytes, reason: SlashReason, position: int) -> None:
        slashes.extend(Slash(v, root, reason, position) for v in by_root[root])

    # Candidates: the roots backed by more than 1/3 of the committee's power
    candidates = sorted(root for root in by_root if 3 * weight[root] > total)
    winner: bytes | None = None
    if len(candidates) == 1:
        winner = candidates[0]
    elif len(candidates) == 2:
        # Two candidates: the exact U at their first differing position decides
        a, b = candidates
        position = _differ(tables[a], tables[b])
        value = memo(position)
        survivors = [root for root in (a, b) if tables[root][position] == value]
        for root in (a, b):
            if root not in survivors:
                slash(root, SlashReason.ADJUDICATED, position)
        winner = survivors[0] if len(survivors) == 1 else None

    # Every other revealed root is checked at its first difference from the winner
    if winner is not None:
        disproven_at: int | None = None
        for root in sorted(by_root):
            if root == winner or root in candidates:
                continue
            position = _differ(tables[root], tables[winner])
            value = memo(position)
            if tables[root][position] != value:
                slash(root, SlashReason.WRONG_ROOT, position)
            if tables[winner][position] != value and disproven_at is None:
                disproven_at = position
        if disproven_at is not None:
            slash(winner, SlashReason.DISPROVEN, disproven_at)
            winner = None

    slashed = tuple(sorted(slashes, key=lambda s: s.validator))
    evaluated = tuple(memo.values)
    if winner is None:
        status = Status.RETRY if first_attempt else Status.VOID
        return Settlement(status, None, slashed, (), 0, evaluated)
    # The miners' pool to the winning table's revealers by power; the remainder to the creator
    payouts = tuple(Payout(v, pool * committee[v] // weight[winner]) for v in by_root[winner])
    remainder = pool - sum(p.amount for p in payouts)
    return Settlement(Status.SETTLED, winner, slashed, payouts, remainder, evaluated)


def _differ(a: Sequence[int], b: Sequence[int]) -> int:
    position = first_difference(a, b)
    # Different roots hash different tables, so two revealed roots always differ somewhere
    if position is None:
        raise UnknownRoot(reason="two roots name one table")
    return position


def _check_inputs(
    sv_task_id: bytes,
    committee: Mapping[bytes, int],
    reveals: Mapping[bytes, bytes],
    tables: Mapping[bytes, Sequence[int]],
    pool: int,
) -> None:
    if not committee or any(type(p) is not int or p <= 0 for p in committee.values()):
        raise ValueError("a committee has at least one member, each with a positive power")
    if type(pool) is not int or pool < 0:
        raise ValueError("the miners' pool is a non-negative amount")
    for validator, root in reveals.items():
        # Only committee members reveal (the reveal transaction checks it; so does settlement)
        if validator not in committee:
            raise RevealFromNonMember(validator=validator)
        # Every revealed root comes with its table, which hashes to it
        if root not in tables or table_root(sv_task_id, tables[root]) != root:
            raise UnknownRoot(root=root)
