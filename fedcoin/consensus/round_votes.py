"""The votes one Tendermint machine has seen for one round and type (prevote or precommit).

A count "2f+1 ⟨PREVOTE, h, r, id(v)⟩" in the paper is over distinct validators that sent *that*
message; "2f+1 ⟨PREVOTE, h, r, ∗⟩" counts each validator once whatever it voted. Powers come
from the caller (the height's validator set).
"""

from __future__ import annotations

from fedcoin.data.vote import Vote


class RoundVotes:
    """The votes of one round and type, and the power behind each block id.

    As in the paper, a count "2f+1 ⟨PREVOTE, h, r, id(v)⟩" is over distinct validators that
    sent *that* message: an equivocator's second, conflicting vote counts for its own block id
    (quorum intersection keeps this safe) while "2f+1 ⟨PREVOTE, h, r, ∗⟩" counts each validator
    once. At most two different votes are kept per validator (bounded memory); the second one
    is reported as evidence.
    """

    __slots__ = ("first", "extra", "power_for", "total")

    def __init__(self) -> None:
        self.first: dict[bytes, Vote] = {}
        self.extra: dict[bytes, Vote] = {}
        self.power_for: dict[bytes | None, int] = {}
        self.total = 0

    def add(self, vote: Vote, power: int) -> Vote | None:
        """Record ``vote``; return the validator's earlier vote when this one conflicts."""
        earlier = self.first.get(vote.validator)
        if earlier is None:
            self.first[vote.validator] = vote
            self.total += power
        elif earlier.block_id == vote.block_id or vote.validator in self.extra:
            return None  # a repeat, or beyond the bound: nothing new to count
        else:
            self.extra[vote.validator] = vote
        self.power_for[vote.block_id] = self.power_for.get(vote.block_id, 0) + power
        return earlier

    def holds(self, vote: Vote) -> bool:
        """This exact vote, signature included, is already recorded."""
        return vote in (self.first.get(vote.validator), self.extra.get(vote.validator))

    def for_block(self, block_id: bytes) -> list[Vote]:
        votes = list(self.first.values()) + list(self.extra.values())
        return [vote for vote in votes if vote.block_id == block_id]
