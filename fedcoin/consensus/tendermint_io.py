"""What goes into and out of the Tendermint machine: events, actions and local timeouts.

The machine (``tendermint.py``) is pure: the node turns what arrives from peers and timers into
*events*, feeds them one at a time, and carries out the *actions* it gets back — sign and send a
message (``Broadcast``: the machine never holds a key, the node signs through its private
validator and feeds its own signed message back like any other), start a timer
(``ScheduleTimeout``), apply a decided block (``Commit``), gossip proof of an equivocation
(``ReportEvidence``). Timeouts are local configuration, not consensus parameters, and grow
linearly with the round so that a round eventually lasts long enough for any network delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar

from fedcoin.consensus.validators import ValidatorSet
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence, Proposal, Vote
from fedcoin.errors import ConfigError

V = TypeVar("V")


class Step(IntEnum):
    """``step_p`` of the paper, in round order (``step ≥ prevote`` compares these)."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class TimeoutKind(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Local timeout durations: ``base + delta · round`` milliseconds for each kind."""

    propose_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    precommit_delta_ms: int = 500

    def __post_init__(self) -> None:
        bases = (self.propose_ms, self.prevote_ms, self.precommit_ms)
        deltas = (self.propose_delta_ms, self.prevote_delta_ms, self.precommit_delta_ms)
        # Every timeout is positive and none shrinks with the round
        if min(bases) <= 0 or min(deltas) < 0:
            raise ConfigError(f"timeouts need positive bases and non-negative deltas: {self}")

    def duration(self, kind: TimeoutKind, round_: int) -> int:
        base, delta = {
            TimeoutKind.PROPOSE: (self.propose_ms, self.propose_delta_ms),
            TimeoutKind.PREVOTE: (self.prevote_ms, self.prevote_delta_ms),
            TimeoutKind.PRECOMMIT: (self.precommit_ms, self.precommit_delta_ms),
        }[kind]
        return base + delta * round_


# --- events ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewHeight:
    """Start deciding ``height`` with ``validators`` (the set with this height's priorities)."""

    height: int
    validators: ValidatorSet


@dataclass(frozen=True, slots=True)
class ProposalReceived(Generic[V]):
    """A signed proposal and the value (block) it names."""

    proposal: Proposal
    value: V


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A signed prevote or precommit (the machine's own votes come back this way too)."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class Timeout:
    """A timer scheduled by ``ScheduleTimeout`` fired."""

    kind: TimeoutKind
    height: int
    round: int


Event = NewHeight | ProposalReceived[V] | VoteReceived | Timeout


# --- actions --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Broadcast(Generic[V]):
    """Sign ``message`` (it carries the ``UNSIGNED`` placeholder) and send it to everyone,
    this machine included; a proposal travels with its ``value``."""

    message: Proposal | Vote
    value: V | None = None


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Feed ``Timeout(kind, height, round)`` back after ``duration_ms``."""

    kind: TimeoutKind
    height: int
    round: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Commit(Generic[V]):
    """``value`` is decided at ``height``; ``certificate`` proves it (the next ``LastCommit``)."""

    height: int
    value: V
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A validator equivocated: gossip this so that a block includes it."""

    evidence: DuplicateVoteEvidence


Action = Broadcast[V] | ScheduleTimeout | Commit[V] | ReportEvidence
