"""Tendermint (Buchman, Kwon, Milosevic 2018, Algorithm 1) as a pure state machine.

Validators decide one block per height in rounds of propose → prevote → precommit, with locks
(``locked_value``/``locked_round``: never precommit-then-abandon a block without a newer proof of
lock) and valid values (``valid_value``/``valid_round``: re-propose the block most recently seen
with 2f+1 prevotes). "2f+1" means more than 2/3 of the height's voting power and "f+1" more
than 1/3 (``validators.py``); every count here is by power, over distinct validators.

``Tendermint.step(event) -> list[Action]`` is the whole interface (events and actions in
``tendermint_io.py``); no clock, socket, key or task inside. The application's ``valid(v)`` and
``getValue()`` and the value's ``id(v)`` come in as functions; ``valid`` is called once per
block id (it must be a deterministic function of the chain and the block, DESIGN §5). Each line
of the paper's pseudocode is marked ``# [Lnn]``.

Where this differs from the paper, and why:
- ``StartRound`` schedules ``OnTimeoutPropose`` for the proposer too (as CometBFT): its own
  proposal may never come back (e.g. its private validator refused to sign after a restart).
- Lines 52–54 (next height) happen on ``NewHeight``: the node must first apply the decided block
  to learn the next validator set. Messages of other heights are ignored (gossip re-sends them).
- Messages more than ``MAX_FUTURE_ROUNDS`` rounds ahead are ignored, bounding memory. An
  equivocating proposer's second proposal for a round is kept (it may be the block the others
  decide, as the paper's line 49 allows any proposal of the round); a third is dropped. The
  rules of lines 22 and 28 take the first that qualifies.
- A second, different vote of a validator for the same round and type counts for its block id
  (as in the paper, messages are counted per sender and content) and yields ``ReportEvidence``;
  a third is dropped (bounded memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic

from fedcoin.consensus.evidence import detect
from fedcoin.consensus.proposer import proposer_for_round
from fedcoin.consensus.round_votes import RoundVotes
from fedcoin.consensus.tendermint_io import (
    Action,
    Broadcast,
    Commit,
    Event,
    NewHeight,
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Step,
    Timeout,
    TimeoutKind,
    Timeouts,
    V,
    VoteReceived,
)
from fedcoin.consensus.validators import (
    ValidatorSet,
    VoteVerifier,
    check_signature,
    verify_vote,
)
from fedcoin.data.vote import (
    NO_ROUND,
    UNSIGNED,
    CommitCertificate,
    Proposal,
    Vote,
    VoteType,
)
from fedcoin.errors import BadVoteSignature, InvalidVote

#: Messages for rounds further ahead than this are ignored (bounded memory per height).
MAX_FUTURE_ROUNDS = 64
#: Proposals kept per round: an equivocating proposer's second block may be the one decided.
MAX_PROPOSALS_PER_ROUND = 2

PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT


class Tendermint(Generic[V]):
    """One validator's (or a follower's, ``me=None``) consensus state for the current height."""

    def __init__(
        self,
        *,
        chain_id: str,
        me: bytes | None,
        get_value: Callable[[int, int], V],
        valid: Callable[[V], bool],
        value_id: Callable[[V], bytes],
        timeouts: Timeouts | None = None,
        check: VoteVerifier = check_signature,
    ) -> None:
        self.chain_id = chain_id
        self.me = me
        self._get_value = get_value
        self._valid = valid
        self._id = value_id
        self.timeouts = timeouts or Timeouts()
        self._check = check
        # [L1-L9] Initialization (the height starts with NewHeight)
        self.height = 0  # [L2]
        self.round = 0  # [L3]
        self.current_step = Step.PROPOSE  # [L4]
        self.decision: Commit[V] | None = None  # [L5] decision_p[h_p]
        self.validators: ValidatorSet | None = None
        self._reset_height()

    def _reset_height(self) -> None:
        self.locked_value: V | None = None  # [L6]
        self.locked_round = NO_ROUND  # [L7]
        self.valid_value: V | None = None  # [L8]
        self.valid_round = NO_ROUND  # [L9]
        self._proposals: dict[int, list[tuple[Proposal, V]]] = {}
        self._votes: dict[tuple[int, int], RoundVotes] = {}
        self._senders: dict[int, set[bytes]] = {}
        self._proposers: dict[int, bytes] = {}
        self._validity: dict[bytes, bool] = {}
        self._done: set[tuple[int, int]] = set()  # "for the first time" guards: (line, round)

    # --- the interface ----------------------------------------------------------------------
    def step(self, event: Event[V]) -> list[Action[V]]:
        """Apply one event; return the actions to carry out, in order."""
        out: list[Action[V]] = []
        if isinstance(event, NewHeight):
            self._new_height(event, out)
        elif self.validators is None or self.decision is not None:
            return out
        elif isinstance(event, ProposalReceived):
            self._on_proposal(event.proposal, event.value, out)
        elif isinstance(event, VoteReceived):
            self._on_vote(event.vote, out)
        elif isinstance(event, Timeout):
            self._on_timeout(event, out)
        self._upon_rules(out)
        return out

    def proposer(self, round_: int) -> bytes:
        """``proposer(h_p, round)``: CometBFT's weighted round robin (``proposer.py``)."""
        if round_ not in self._proposers:
            self._proposers[round_] = proposer_for_round(self._set(), round_)
        return self._proposers[round_]

    # --- events ------------------------------------------------------------------------------
    def _new_height(self, event: NewHeight, out: list[Action[V]]) -> None:
        # [L10] upon start do StartRound(0); [L52-L54] h_p ← h_p + 1, reset, StartRound(0)
        self.height = event.height
        self.validators = event.validators
        self.decision = None
        self._reset_height()
        self._start_round(0, out)

    def _on_proposal(self, proposal: Proposal, value: V, out: list[Action[V]]) -> None:
        if proposal.height != self.height or not self._round_in_window(proposal.round):
            return
        # A proposal comes from the round's proposer, pol_round in [-1, round), signed
        if not proposal.well_formed:
            raise InvalidVote(reason="pol_round out of range", pol_round=proposal.pol_round)
        if proposal.proposer != self.proposer(proposal.round):
            raise InvalidVote(reason="not the round's proposer", proposer=proposal.proposer)
        if not proposal.signature_ok(self.chain_id):
            raise BadVoteSignature(validator=proposal.proposer, round=proposal.round)
        # The value is the block the proposal names
        if self._id(value) != proposal.block_id:
            raise InvalidVote(reason="value does not match block_id", round=proposal.round)
        known = self._proposals.setdefault(proposal.round, [])
        if proposal in (p for p, _ in known) or len(known) >= MAX_PROPOSALS_PER_ROUND:
            return  # a repeat, or the proposer equivocating beyond the bound
        known.append((proposal, value))
        self._senders.setdefault(proposal.round, set()).add(proposal.proposer)

    def _on_vote(self, vote: Vote, out: list[Action[V]]) -> None:
        if vote.height != self.height or not self._round_in_window(vote.round):
            return
        if not vote.well_formed:
            raise InvalidVote(reason="unknown vote type", type=vote.type)
        known = self._votes.get((vote.round, vote.type))
        if known is not None and known.holds(vote):
            return  # the very same signed vote again (gossip repeats): nothing to verify
        verify_vote(vote, self._set(), self.chain_id, self._check)
        votes = self._votes.setdefault((vote.round, vote.type), RoundVotes())
        earlier = votes.add(vote, self._set().power_of(vote.validator))
        evidence = None if earlier is None else detect(earlier, vote)
        if evidence is not None:
            out.append(ReportEvidence(evidence))
        self._senders.setdefault(vote.round, set()).add(vote.validator)

    def _on_timeout(self, event: Timeout, out: list[Action[V]]) -> None:
        current = event.height == self.height and event.round == self.round
        if event.kind == TimeoutKind.PROPOSE:
            # [L57] Function OnTimeoutPropose(height, round)
            if current and self.current_step == Step.PROPOSE:  # [L58]
                self._vote(PREVOTE, None, out)  # [L59]
                self.current_step = Step.PREVOTE  # [L60]
        elif event.kind == TimeoutKind.PREVOTE:
            # [L61] Function OnTimeoutPrevote(height, round)
            if current and self.current_step == Step.PREVOTE:  # [L62]
                self._vote(PRECOMMIT, None, out)  # [L63]
                self.current_step = Step.PRECOMMIT  # [L64]
        elif current:
            # [L65] Function OnTimeoutPrecommit(height, round); [L66] height, round current
            self._start_round(self.round + 1, out)  # [L67]

    # --- StartRound --------------------------------------------------------------------------
    def _start_round(self, round_: int, out: list[Action[V]]) -> None:
        # [L11] Function StartRound(round)
        self.round = round_  # [L12]
        self.current_step = Step.PROPOSE  # [L13]
        if self.me is not None and self.proposer(round_) == self.me:  # [L14]
            if self.valid_value is not None:  # [L15]
                value, pol_round = self.valid_value, self.valid_round  # [L16]
            else:
                value, pol_round = self._get_value(self.height, round_), NO_ROUND  # [L17-L18]
            proposal = Proposal(self.height, round_, pol_round, self._id(value), self.me, UNSIGNED)
            out.append(Broadcast(proposal, value))  # [L19]
        # [L20-L21] schedule OnTimeoutPropose(h_p, round_p) (for the proposer too, see above)
        self._schedule(TimeoutKind.PROPOSE, out)

    # --- the upon rules ----------------------------------------------------------------------
    def _upon_rules(self, out: list[Action[V]]) -> None:
        """Fire enabled rules until none is: one event may enable several in turn."""
        while self.validators is not None and self.decision is None:
            fired = (
                self._upon_decide(out)
                or self._upon_round_skip(out)
                or self._upon_proposal(out)
                or self._upon_pol_proposal(out)
                or self._upon_any_prevotes(out)
                or self._upon_prevotes_for_block(out)
                or self._upon_nil_prevotes(out)
                or self._upon_any_precommits(out)
            )
            if not fired:
                return

    def _upon_proposal(self, out: list[Action[V]]) -> bool:
        # [L22] upon PROPOSAL(h_p, round_p, v, -1) from proposer while step_p = propose
        fresh = [v for p, v in self._proposals.get(self.round, ()) if p.pol_round == NO_ROUND]
        if self.current_step != Step.PROPOSE or not fresh:
            return False
        v = fresh[0]
        # [L23] valid(v) ∧ (lockedRound_p = −1 ∨ lockedValue_p = v)
        if self._is_valid(v) and (
            self.locked_round == NO_ROUND or self._same(self.locked_value, v)
        ):
            self._vote(PREVOTE, self._id(v), out)  # [L24]
        else:
            self._vote(PREVOTE, None, out)  # [L25-L26]
        self.current_step = Step.PREVOTE  # [L27]
        return True

    def _upon_pol_proposal(self, out: list[Action[V]]) -> bool:
        # [L28] upon PROPOSAL(h_p, round_p, v, vr) AND 2f+1 PREVOTE(h_p, vr, id(v))
        #       while step_p = propose ∧ (vr ≥ 0 ∧ vr < round_p)
        if self.current_step != Step.PROPOSE:
            return False
        locked = [
            (p, v)
            for p, v in self._proposals.get(self.round, ())
            if 0 <= p.pol_round < self.round and self._quorum_for(p.pol_round, PREVOTE, p.block_id)
        ]
        if not locked:
            return False
        proposal, v = locked[0]
        vr = proposal.pol_round
        # [L29] valid(v) ∧ (lockedRound_p ≤ vr ∨ lockedValue_p = v)
        if self._is_valid(v) and (self.locked_round <= vr or self._same(self.locked_value, v)):
            self._vote(PREVOTE, proposal.block_id, out)  # [L30]
        else:
            self._vote(PREVOTE, None, out)  # [L31-L32]
        self.current_step = Step.PREVOTE  # [L33]
        return True

    def _upon_any_prevotes(self, out: list[Action[V]]) -> bool:
        # [L34] upon 2f+1 PREVOTE(h_p, round_p, ∗) while step_p = prevote for the first time
        if self.current_step != Step.PREVOTE or not self._quorum_any(self.round, PREVOTE):
            return False
        if not self._first_time(34):
            return False
        self._schedule(TimeoutKind.PREVOTE, out)  # [L35]
        return True

    def _upon_prevotes_for_block(self, out: list[Action[V]]) -> bool:
        # [L36] upon PROPOSAL(h_p, round_p, v, ∗) AND 2f+1 PREVOTE(h_p, round_p, id(v))
        #       while valid(v) ∧ step_p ≥ prevote for the first time
        if self.current_step < Step.PREVOTE or (36, self.round) in self._done:
            return False
        backed = [
            (p, v)
            for p, v in self._proposals.get(self.round, ())
            if self._quorum_for(self.round, PREVOTE, p.block_id) and self._is_valid(v)
        ]
        if not backed:
            return False
        proposal, v = backed[0]
        self._first_time(36)
        if self.current_step == Step.PREVOTE:  # [L37]
            self.locked_value = v  # [L38]
            self.locked_round = self.round  # [L39]
            self._vote(PRECOMMIT, proposal.block_id, out)  # [L40]
            self.current_step = Step.PRECOMMIT  # [L41]
        self.valid_value = v  # [L42]
        self.valid_round = self.round  # [L43]
        return True

    def _upon_nil_prevotes(self, out: list[Action[V]]) -> bool:
        # [L44] upon 2f+1 PREVOTE(h_p, round_p, nil) while step_p = prevote
        if self.current_step != Step.PREVOTE or not self._quorum_for(self.round, PREVOTE, None):
            return False
        self._vote(PRECOMMIT, None, out)  # [L45]
        self.current_step = Step.PRECOMMIT  # [L46]
        return True

    def _upon_any_precommits(self, out: list[Action[V]]) -> bool:
        # [L47] upon 2f+1 PRECOMMIT(h_p, round_p, ∗) for the first time
        if not self._quorum_any(self.round, PRECOMMIT) or not self._first_time(47):
            return False
        self._schedule(TimeoutKind.PRECOMMIT, out)  # [L48]
        return True

    def _upon_decide(self, out: list[Action[V]]) -> bool:
        # [L49] upon PROPOSAL(h_p, r, v, ∗) AND 2f+1 PRECOMMIT(h_p, r, id(v))
        #       while decision_p[h_p] = nil
        for r, proposal, v in self._all_proposals():
            if not self._quorum_for(r, PRECOMMIT, proposal.block_id):
                continue
            if not self._is_valid(v):  # [L50]
                continue
            precommits = self._votes[(r, PRECOMMIT)].for_block(proposal.block_id)
            certificate = CommitCertificate.from_votes(precommits)
            self.decision = Commit(self.height, v, certificate)  # [L51]
            out.append(self.decision)
            # [L52-L54] continue on NewHeight, once the node has applied the block
            return True
        return False

    def _upon_round_skip(self, out: list[Action[V]]) -> bool:
        # [L55] upon f+1 ⟨∗, h_p, round, ∗, ∗⟩ with round > round_p
        validators = self._set()
        ahead = [
            r
            for r, senders in self._senders.items()
            if r > self.round and validators.has_one_third(validators.power_of_all(senders))
        ]
        if not ahead:
            return False
        self._start_round(max(ahead), out)  # [L56]
        return True

    # --- helpers -----------------------------------------------------------------------------
    def _vote(self, type_: VoteType, block_id: bytes | None, out: list[Action[V]]) -> None:
        """``broadcast ⟨type, h_p, round_p, block_id⟩``: only a member of the set votes."""
        if self.me is not None and self.validators is not None and self.me in self.validators:
            vote = Vote(self.height, self.round, type_, block_id, self.me, UNSIGNED)
            out.append(Broadcast(vote))

    def _schedule(self, kind: TimeoutKind, out: list[Action[V]]) -> None:
        duration = self.timeouts.duration(kind, self.round)
        out.append(ScheduleTimeout(kind, self.height, self.round, duration))

    def _first_time(self, line: int) -> bool:
        key = (line, self.round)
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def _quorum_for(self, round_: int, type_: VoteType, block_id: bytes | None) -> bool:
        votes = self._votes.get((round_, type_))
        power = 0 if votes is None else votes.power_for.get(block_id, 0)
        return self._set().has_two_thirds(power)

    def _quorum_any(self, round_: int, type_: VoteType) -> bool:
        votes = self._votes.get((round_, type_))
        return votes is not None and self._set().has_two_thirds(votes.total)

    def _all_proposals(self) -> list[tuple[int, Proposal, V]]:
        return [(r, p, v) for r, known in sorted(self._proposals.items()) for p, v in known]

    def _set(self) -> ValidatorSet:
        if self.validators is None:
            raise RuntimeError("no height started: feed NewHeight first")
        return self.validators

    def _is_valid(self, v: V) -> bool:
        key = self._id(v)
        if key not in self._validity:
            self._validity[key] = self._valid(v)
        return self._validity[key]

    def _same(self, a: V | None, b: V) -> bool:
        return a is not None and self._id(a) == self._id(b)

    def _round_in_window(self, round_: int) -> bool:
        return round_ <= self.round + MAX_FUTURE_ROUNDS
