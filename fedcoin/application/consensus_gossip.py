"""Gossip handlers for consensus messages: admit proposals, votes and evidence for the driver.

Each handler validates before the message is relayed (gossip relays only what passed) and
raises ``Ignore`` (late, duplicate, or content not fetchable in time), ``Reject`` (invalid:
the peer is penalised) or ``NeedsSync`` (from a height ahead of ours: sync from that peer).

A message of height ``committed + 1`` is checked against that height's validator set and
handed to the driver (which buffers it if that height has not started yet, and starts it).
A message of ``committed + 2`` is kept unchecked for later (our commit may be in progress) and
not relayed; anything further ahead means this node is behind. A proposal's block is checked
by ``Ledger.check`` here, off the machine, before the machine sees it: the machine's
``valid(v)`` then only looks the answer up (DESIGN §5: what a validator checks before
prevoting). A block whose content cannot be fetched within the prevote timeout is ignored,
never judged: this node prevotes nil by timeout and may take the proposal again from another
peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic

from fedcoin.application.consensus_driver import ConsensusDriver
from fedcoin.application.consensus_ports import V, round_of
from fedcoin.consensus.proposer import proposer_for_round
from fedcoin.consensus.tendermint import MAX_FUTURE_ROUNDS
from fedcoin.consensus.tendermint_io import Event, ProposalReceived, VoteReceived
from fedcoin.consensus.validators import verify_vote
from fedcoin.data.vote import DuplicateVoteEvidence, Proposal, Vote
from fedcoin.errors import Ignore, NeedsSync, Reject, RuleViolation, VoteError
from fedcoin.network.gossip import Stale

#: Messages of a height not started yet that are kept for it (beyond: dropped; their origins
#: publish them again every 2 s while the height lasts).
MAX_BUFFERED = 8192


class ConsensusGossip(Generic[V]):
    def __init__(
        self,
        driver: ConsensusDriver[V],
        verify_evidence: Callable[[DuplicateVoteEvidence], None],
    ) -> None:
        """``verify_evidence`` raises ``RuleViolation`` for evidence a block may not include."""
        self.driver = driver
        self.ledger = driver.ledger
        self.verify_evidence = verify_evidence
        self._proposers: dict[tuple[int, int], bytes] = {}

    # --- proposals ----------------------------------------------------------------------------
    async def on_proposal(self, proposal: Proposal, block: V) -> None:
        if not self._admit(proposal.height, ProposalReceived(proposal, block)):
            return
        validators = self.ledger.validator_set()
        # pol_round is -1 or an earlier round
        if not proposal.well_formed:
            raise Reject(f"proposal with pol_round {proposal.pol_round} ≥ round {proposal.round}")
        # Not too far ahead (the machine would drop it)
        if proposal.round > self.driver.machine.round + MAX_FUTURE_ROUNDS:
            raise Ignore("proposal for a round far ahead")
        # From the round's proposer
        key = (proposal.height, proposal.round)
        if key not in self._proposers:
            self._proposers = {k: v for k, v in self._proposers.items() if k[0] >= key[0]}
            self._proposers[key] = proposer_for_round(validators, proposal.round)
        if proposal.proposer != self._proposers[key]:
            raise Reject("proposal not from the round's proposer")
        # Signed by it for this chain
        if not await asyncio.to_thread(proposal.signature_ok, self.ledger.chain_id):
            raise Reject("bad proposal signature")
        # The block is the one it names
        block_id = self.ledger.value_id(block)
        if block_id != proposal.block_id:
            raise Reject("block does not match the proposal's block_id")
        valid = await self.driver.check_value(proposal.height, proposal.round, block)
        self._deliver(proposal.height, ProposalReceived(proposal, block))
        if not valid:
            raise Ignore("proposal of an invalid block (prevoting nil)")

    # --- votes --------------------------------------------------------------------------------
    async def on_vote(self, vote: Vote) -> None:
        if not self._admit(vote.height, VoteReceived(vote)):
            return
        # A vote type, a member of the height's set, a valid signature
        if not vote.well_formed:
            raise Reject(f"unknown vote type {vote.type}")
        try:
            validators = self.ledger.validator_set()
            verify_vote(vote, validators, self.ledger.chain_id, self.driver.verifier)
        except VoteError as exc:
            raise Reject(str(exc)) from None
        self._deliver(vote.height, VoteReceived(vote))

    # --- evidence -----------------------------------------------------------------------------
    async def on_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        if evidence in self.driver.evidence:
            raise Ignore("known evidence")
        try:
            await asyncio.to_thread(self.verify_evidence, evidence)
        except RuleViolation as exc:
            raise Reject(f"invalid evidence: {exc}") from None
        if not self.driver.add_evidence(evidence):
            raise Ignore("evidence pool full")

    # --- heights ------------------------------------------------------------------------------
    def _admit(self, height: int, event: Event[V]) -> bool:
        """True for a message of the next height (check it now); otherwise keep or drop it."""
        next_height = self.ledger.committed_height() + 1
        if height < next_height:
            # Late: its copies are dropped unread from now on (at 16 validators the precommits
            # that arrive after a commit were decoded once per peer that relayed them)
            # From a later round than the one that decided it, or an older height: its
            # sender is still deciding it (it missed what decided it)
            decided = self.driver.decided_round
            late_round = decided is not None and round_of(event) > decided
            raise Stale("message of a committed height", height < next_height - 1 or late_round)
        if height == next_height:
            return True
        if height == next_height + 1:
            self._keep(height, event)
            if self.driver.committing:
                raise Ignore("message of the height after the one being committed")
        raise NeedsSync(f"message of height {height}, ours is {next_height}")

    def _deliver(self, height: int, event: Event[V]) -> None:
        driver = self.driver
        if driver.running and driver.machine.height == height:
            driver.put(event)
        else:
            # The others started this height already: start it now, with this message
            self._keep(height, event)
            driver.poke_start(height)

    def _keep(self, height: int, event: Event[V]) -> None:
        buffered = self.driver.buffer
        if sum(len(events) for events in buffered.values()) < MAX_BUFFERED:
            buffered.setdefault(height, []).append(event)
