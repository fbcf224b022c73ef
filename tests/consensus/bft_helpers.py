"""Helpers for the BFT tests: validator keys and sets, signed votes, and a harness that plays
the node around one Tendermint machine (signs its broadcasts and feeds them back)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedcoin.consensus.proposer import genesis_set, proposer_for_round
from fedcoin.consensus.tendermint import Tendermint
from fedcoin.consensus.tendermint_io import (
    Action,
    Broadcast,
    Commit,
    Event,
    NewHeight,
    ProposalReceived,
    ScheduleTimeout,
    Timeout,
    TimeoutKind,
    Timeouts,
    VoteReceived,
)
from fedcoin.consensus.validators import ValidatorSet
from fedcoin.data.encoding import sha256
from fedcoin.data.keys import TAG_BLOCK, PrivateKey
from fedcoin.data.vote import (
    NO_ROUND,
    TAG_PROPOSAL,
    TAG_VOTE,
    UNSIGNED,
    Proposal,
    Vote,
    VoteType,
)

CHAIN = "fedcoin-test"
KEYS = [PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(10)]
BY_PUB = {k.public: k for k in KEYS}
TIMEOUTS = Timeouts(
    propose_ms=300,
    propose_delta_ms=100,
    prevote_ms=200,
    prevote_delta_ms=50,
    precommit_ms=200,
    precommit_delta_ms=50,
)
PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT


def make_set(n: int, powers: Sequence[int] | None = None) -> ValidatorSet:
    powers = powers or [10] * n
    return genesis_set((KEYS[i].public, powers[i]) for i in range(n))


def value_id(value: bytes) -> bytes:
    return sha256(value)


def is_valid(value: bytes) -> bool:
    return not value.startswith(b"bad")


def sign_vote(vote: Vote, chain_id: str = CHAIN) -> Vote:
    key = BY_PUB[vote.validator]
    return vote.with_signature(key.sign(TAG_VOTE, vote.digest(chain_id)))


def sign_proposal(proposal: Proposal, chain_id: str = CHAIN) -> Proposal:
    key = BY_PUB[proposal.proposer]
    return proposal.with_signature(key.sign(TAG_PROPOSAL, proposal.digest(chain_id)))


def vote(key: PrivateKey, height: int, round_: int, type_: VoteType, value: bytes | None) -> Vote:
    block_id = None if value is None else value_id(value)
    return sign_vote(Vote(height, round_, type_, block_id, key.public, UNSIGNED))


def proposal(
    validators: ValidatorSet, height: int, round_: int, value: bytes, pol_round: int = NO_ROUND
) -> ProposalReceived[bytes]:
    proposer = proposer_for_round(validators, round_)
    unsigned = Proposal(height, round_, pol_round, value_id(value), proposer, UNSIGNED)
    return ProposalReceived(sign_proposal(unsigned), value)


def wrong_signature(message: Vote) -> Vote:
    """The same vote with a signature made for another kind of object."""
    key = BY_PUB[message.validator]
    return message.with_signature(key.sign(TAG_BLOCK, message.digest(CHAIN)))


class Harness:
    """Plays the node for one machine: feeds events, signs its messages and feeds them back."""

    def __init__(
        self,
        validators: ValidatorSet,
        me: PrivateKey | None,
        *,
        height: int = 1,
        get_value: Callable[[int, int], bytes] | None = None,
        valid: Callable[[bytes], bool] = is_valid,
    ) -> None:
        self.validators = validators
        self.key = me
        self.height = height
        self.valid_calls: list[bytes] = []

        def counting_valid(v: bytes) -> bool:
            self.valid_calls.append(v)
            return valid(v)

        self.machine: Tendermint[bytes] = Tendermint(
            chain_id=CHAIN,
            me=None if me is None else me.public,
            get_value=get_value or (lambda h, r: b"block-%d-%d" % (h, r)),
            valid=counting_valid,
            value_id=value_id,
            timeouts=TIMEOUTS,
        )

    @property
    def others(self) -> list[PrivateKey]:
        return [
            BY_PUB[v.pubkey]
            for v in self.validators.members
            if self.key is None or v.pubkey != self.key.public
        ]

    def start(self) -> list[Action[bytes]]:
        return self.feed(NewHeight(self.height, self.validators))

    def feed(self, event: Event[bytes]) -> list[Action[bytes]]:
        """Process ``event``; own broadcasts are signed and fed back; return every action."""
        actions = self.machine.step(event)
        out = list(actions)
        for action in actions:
            if isinstance(action, Broadcast):
                message = action.message
                if isinstance(message, Vote):
                    out += self.feed(VoteReceived(sign_vote(message)))
                elif action.value is not None:
                    out += self.feed(ProposalReceived(sign_proposal(message), action.value))
        return out

    def votes(
        self,
        round_: int,
        type_: VoteType,
        value: bytes | None,
        voters: Sequence[PrivateKey],
    ) -> list[Action[bytes]]:
        out: list[Action[bytes]] = []
        for key in voters:
            out += self.feed(VoteReceived(vote(key, self.height, round_, type_, value)))
        return out

    def propose(self, round_: int, value: bytes, pol_round: int = NO_ROUND) -> list[Action[bytes]]:
        return self.feed(proposal(self.validators, self.height, round_, value, pol_round))

    def timeout(self, kind: TimeoutKind, round_: int) -> list[Action[bytes]]:
        return self.feed(Timeout(kind, self.height, round_))


def sent_votes(actions: Sequence[Action[bytes]]) -> list[Vote]:
    return [a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Vote)]


def sent_proposals(actions: Sequence[Action[bytes]]) -> list[tuple[Proposal, bytes | None]]:
    return [
        (a.message, a.value)
        for a in actions
        if isinstance(a, Broadcast) and isinstance(a.message, Proposal)
    ]


def scheduled(actions: Sequence[Action[bytes]]) -> list[ScheduleTimeout]:
    return [a for a in actions if isinstance(a, ScheduleTimeout)]


def commits(actions: Sequence[Action[bytes]]) -> list[Commit[bytes]]:
    return [a for a in actions if isinstance(a, Commit)]


def key_proposing(validators: ValidatorSet, round_: int) -> PrivateKey:
    return BY_PUB[proposer_for_round(validators, round_)]
