"""The consensus driver: carries messages and timers for one node's Tendermint machine.

The machine (``consensus/tendermint.py``) is pure; this is its reactor. One task feeds it
events one at a time from a bounded inbox — proposals and votes that the gossip handlers
admitted, timeouts, the start of a height — and carries out what it answers:

- ``Broadcast`` → sign through the private validator in a worker thread (it persists, then
  signs; a refusal is logged, never a crash), publish, and feed it back to the machine;
- ``ScheduleTimeout`` → an asyncio timer (a new height cancels the stale ones);
- ``Commit`` → ``Ledger.commit`` (the chain, the mempool, the share pools), then the next height
  starts at the cadence of DESIGN §5 (``timers.start_delay_ms``);
- ``ReportEvidence`` → publish it and keep it for the next block this node proposes.

The gossip handlers check a proposal's block *before* the machine sees it (``valid(v)`` is a
lookup); messages of the next height are buffered and start it; further ahead: ``NeedsSync``.

Hooks for tests and the simulation (``Faults``): ``equivocate`` signs with the raw key (not
the private validator) and sends two proposals per round and two conflicting votes per step;
``crash_at`` stops the driver at a given height and round, as a crashed validator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic

from fedcoin.application.consensus_ports import (
    ChainMoved,
    Faults,
    Ledger,
    NoValue,
    Publish,
    StartHeight,
    V,
    check_block,
    conflicting_twin,
    height_of,
    raw_sign,
)
from fedcoin.application.head_cache import HeadCache
from fedcoin.application.timers import Cadence, Timers, start_delay_ms
from fedcoin.consensus.proposer import proposer_for_round
from fedcoin.consensus.tendermint import Tendermint
from fedcoin.consensus.tendermint_io import (
    Action,
    Broadcast,
    Commit,
    Event,
    NewHeight,
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Timeout,
    TimeoutKind,
    Timeouts,
    VoteReceived,
)
from fedcoin.consensus.validators import SignatureCache, ValidatorSet
from fedcoin.data.privval import FilePrivValidator
from fedcoin.data.vote import DuplicateVoteEvidence, Proposal, Vote
from fedcoin.errors import (
    DoubleSignRefused,
    FedCoinError,
    PrivValStateError,
)

log = logging.getLogger("fedcoin.consensus")

#: Inbox bound: events waiting for the machine (a flood beyond it is dropped).
INBOX_BOUND = 65_536
#: Evidence kept for the blocks this node proposes.
MAX_EVIDENCE_POOL = 64


Item = Event[V] | StartHeight | ChainMoved


class ConsensusDriver(Generic[V]):
    def __init__(
        self,
        ledger: Ledger[V],
        *,
        signer: FilePrivValidator | None,
        publish: Publish,
        cadence: Cadence,
        timeouts: Timeouts | None = None,
        verifier: SignatureCache | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        faults: Faults | None = None,
        resend_ms: int = 2000,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_commit`` hears of every height this driver committed, once its view of the head
        moved (the node's waiters and the simulation's commit clocks)."""
        self.on_commit = on_commit
        self.ledger = HeadCache(ledger)
        """The chain, with the head's height and validator set kept between commits."""
        self.signer = signer
        self.publish = publish
        self.cadence = cadence
        self.timeouts = timeouts or Timeouts()
        self.verifier = verifier if verifier is not None else SignatureCache()
        self.clock_ms = clock_ms
        self.faults = faults or Faults()
        if self.faults.equivocate and self.faults.raw_key is None:
            raise ValueError("equivocate needs the raw key")
        self.me = signer.public if signer is not None else None
        self.machine: Tendermint[V] = Tendermint(
            chain_id=ledger.chain_id, me=self.me, get_value=self._get_value,
            valid=self._is_valid, value_id=ledger.value_id, timeouts=self.timeouts,
            check=self.verifier,
        )  # fmt: skip
        self.inbox: asyncio.Queue[Item[V]] = asyncio.Queue(INBOX_BOUND)
        self.timers = Timers()
        self.running = False
        """The machine is deciding ``committed_height() + 1``."""
        self.committing = False
        self.crashed = False
        self.valid: dict[bytes, bool] = {}
        """Checked blocks of the next height, by id (the machine's ``valid``)."""
        self.buffer: dict[int, list[Event[V]]] = {}
        self.evidence: list[DuplicateVoteEvidence] = []
        self.sent: list[tuple[Proposal | Vote, V | None]] = []
        """What this node signed for the current height, to publish again (``resend_ms``)."""
        self.resend_ms = resend_ms
        self.commits = 0
        self.decided_round: int | None = None  # of the last height committed here (not synced)
        self.signing: asyncio.Future[Proposal | Vote] | None = None  # the last signature
        self.signed = 0
        self.refusals = 0
        self._prebuilt: V | None = None
        self._committed_at = clock_ms()
        self._poked = False

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Feed the machine until cancelled; no error ends the loop."""
        self.schedule_start()
        while True:
            item = await self.inbox.get()
            try:
                await self._handle(item)
            except Exception:  # noqa: BLE001 - a bug must drop one event, never the node's loop
                log.exception("consensus event %s failed", type(item).__name__)

    def put(self, item: Item[V]) -> None:
        if self.crashed:
            return
        try:
            self.inbox.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("consensus inbox full; dropping %s", type(item).__name__)

    def poke(self) -> None:
        """Work arrived (a transaction, a share): a waiting height may start sooner (once)."""
        if not self.running and not self.committing and not self._poked:
            self._poked = True
            self.schedule_start()

    def poke_start(self, height: int) -> None:
        """A peer sent a valid message of ``height``: the others started it, so do we."""
        if not self.running:
            self.put(StartHeight(height))

    def chain_moved(self) -> None:
        """The chain committed blocks through sync; the driver catches up."""
        self.ledger.refresh()
        self.put(ChainMoved())

    def schedule_start(self) -> None:
        """Start ``committed_height() + 1`` at the cadence (a later start of it is a no-op)."""
        height = self.ledger.committed_height() + 1
        delay = start_delay_ms(
            self.cadence, now_ms=self.clock_ms(), parent_ms=self.ledger.parent_timestamp_ms(),
            committed_at_ms=self._committed_at, busy=self.ledger.busy(),
        )  # fmt: skip
        self.timers.after(delay, lambda: self.put(StartHeight(height)))

    async def _handle(self, item: Item[V]) -> None:
        if self.crashed:
            return
        if isinstance(item, StartHeight):
            if not self.running and item.height == self.ledger.committed_height() + 1:
                await self._start_height(item.height)
        elif isinstance(item, ChainMoved):
            self.decided_round = None
            if self.ledger.committed_height() >= self.machine.height and not self.committing:
                self._end_height()
                self.schedule_start()
        elif self.running and height_of(item) == self.machine.height:
            await self._feed(item)

    async def _start_height(self, height: int) -> None:
        self.timers.cancel_all()
        validators = self.ledger.validator_set()
        self.valid = {}
        self.sent = []
        self._resend(height)
        self._prebuilt = None
        if self.me is not None and self.me in validators and self._proposes_first(validators):
            self._prebuilt = await asyncio.to_thread(self._build, height, 0)
        self.running = True
        await self._feed(NewHeight(height, validators))
        for event in self.buffer.pop(height, []):
            if isinstance(event, ProposalReceived):
                # Kept unchecked while our commit was in progress: check it now
                try:
                    await self.check_value(height, event.proposal.round, event.value)
                except FedCoinError as exc:
                    log.info("buffered proposal dropped: %s", exc)
                    continue
            await self._feed(event)
        self.buffer = {h: events for h, events in self.buffer.items() if h > height}

    def _proposes_first(self, validators: ValidatorSet) -> bool:
        return proposer_for_round(validators, 0) == self.me

    def _resend(self, height: int) -> None:
        """Every ``resend_ms`` while deciding ``height``, publish again what this node signed
        for it: a peer that (re)connected mid-height gets it (gossip drops it elsewhere as
        seen), and a round waiting for votes that peer missed moves again."""

        def again() -> None:
            if self.running and self.machine.height == height and not self.crashed:
                for message, value in self.sent:
                    self.publish(message, value)
                self._resend(height)

        self.timers.after(self.resend_ms, again)

    def _end_height(self) -> None:
        self.running = False
        self._poked = False
        self.timers.cancel_all()
        self._committed_at = self.clock_ms()

    # --- feeding the machine and carrying out its actions ----------------------------------
    async def _feed(self, event: Event[V]) -> None:
        await self._carry_out(self._step(event))
        self._maybe_crash()

    async def _carry_out(self, actions: list[Action[V]]) -> None:
        queue = list(actions)
        while queue and not self.crashed:
            action = queue.pop(0)
            if isinstance(action, Broadcast):
                queue += await self._broadcast(action)
            elif isinstance(action, ScheduleTimeout):
                duration = action.duration_ms
                self._schedule(action.kind, action.height, action.round, duration)
            elif isinstance(action, Commit):
                await self._commit(action)
                return  # the height is over: whatever else it said is moot
            elif isinstance(action, ReportEvidence):
                self.add_evidence(action.evidence)
                self.publish(action.evidence, None)

    def _schedule(self, kind: TimeoutKind, height: int, round_: int, ms: int | None = None) -> None:
        duration = self.timeouts.duration(kind, round_) if ms is None else ms
        self.timers.after(duration, lambda: self.put(Timeout(kind, height, round_)))

    async def _broadcast(self, action: Broadcast[V]) -> list[Action[V]]:
        message = action.message
        signed = await self._sign(message)
        if signed is None or self.crashed:
            return []
        self.signed += 1
        self.publish(signed, action.value)
        self.sent.append((signed, action.value))
        if self.faults.equivocate:
            self._equivocate(signed, action.value)
        if isinstance(signed, Proposal):
            if action.value is None:
                return []
            self.valid[signed.block_id] = True
            return self._step(ProposalReceived(signed, action.value))
        return self._step(VoteReceived(signed))

    def _step(self, event: Event[V]) -> list[Action[V]]:
        try:
            return self.machine.step(event)
        except NoValue:
            # Nothing to propose: let the round time out as if the proposal were lost
            self._schedule(TimeoutKind.PROPOSE, self.machine.height, self.machine.round)
        except FedCoinError as exc:
            log.debug("consensus dropped %s: %s", type(event).__name__, exc)
        return []

    async def _sign(self, message: Proposal | Vote) -> Proposal | Vote | None:
        chain_id = self.ledger.chain_id
        if self.faults.equivocate:
            return raw_sign(self.faults.raw_key, chain_id, message)
        signer = self.signer
        if signer is None:
            return None
        job: Coroutine[Any, Any, Proposal | Vote]
        if isinstance(message, Proposal):
            job = asyncio.to_thread(signer.sign_proposal, chain_id, message)
        else:
            job = asyncio.to_thread(signer.sign_vote, chain_id, message)
        self.signing = asyncio.ensure_future(job)  # shielded: a stop waits for it (``settle``)
        try:
            return await asyncio.shield(self.signing)
        except (DoubleSignRefused, PrivValStateError) as exc:
            self.refusals += 1
            log.warning("not signing: %s", exc)
            return None

    async def settle(self) -> None:
        """Wait for a signature in progress (its state write) to land, after a stop."""
        if self.signing is not None:
            await asyncio.wait({self.signing})
            if not self.signing.cancelled() and self.signing.exception() is not None:
                log.info("a signature refused after the stop: %s", self.signing.exception())

    def _equivocate(self, signed: Proposal | Vote, value: V | None) -> None:
        """The Byzantine hook: a second, conflicting message for the same step."""
        other = self._build(signed.height, 1) if isinstance(signed, Proposal) else None
        other_id = None if other is None else self.ledger.value_id(other)
        twin = conflicting_twin(signed, other_id, list(self.valid))
        if twin is not None:
            self.publish(raw_sign(self.faults.raw_key, self.ledger.chain_id, twin), other)

    async def _commit(self, decision: Commit[V]) -> None:
        self.committing = True
        try:
            await self.ledger.commit(decision.value, decision.certificate)
        except FedCoinError as exc:
            log.warning("could not commit height %d: %s", decision.height, exc)
            return
        finally:
            self.committing = False
            self._end_height()
        self.commits += 1
        self.decided_round = decision.certificate.round
        self.on_commit()
        included = set(self.ledger.evidence_in(decision.value))
        self.evidence = [e for e in self.evidence if e not in included]
        log.info(
            "committed height %d in round %d (%s)", decision.height, decision.certificate.round,
            decision.certificate.block_id.hex()[:12],
        )  # fmt: skip
        self.schedule_start()

    async def check_value(self, height: int, round_: int, value: V) -> bool:
        """Whether ``value`` is a valid block for ``height`` (cached by id while it is next);
        ``Ignore`` if its content cannot be fetched before the round's prevote timeout."""
        block_id = self.ledger.value_id(value)
        known = self.valid.get(block_id)
        if known is not None:
            return known
        seconds = self.timeouts.duration(TimeoutKind.PREVOTE, round_) / 1000
        valid = await check_block(self.ledger, value, seconds=seconds, now_ms=self.clock_ms())
        if self.ledger.committed_height() + 1 == height:
            self.valid[block_id] = valid
        return valid

    # --- values --------------------------------------------------------------------------------
    def _build(self, height: int, variant: int) -> V | None:
        try:
            value = self.ledger.build(
                height, now_ms=self.clock_ms(), evidence=tuple(self.evidence), variant=variant
            )
        except Exception as exc:  # noqa: BLE001 - no block this round; the next may do
            level = logging.WARNING if isinstance(exc, FedCoinError) else logging.ERROR
            log.log(level, "cannot build a block for height %d: %s", height, exc,
                    exc_info=not isinstance(exc, FedCoinError))  # fmt: skip
            return None
        self.valid[self.ledger.value_id(value)] = True
        return value

    def _get_value(self, height: int, round_: int) -> V:
        if self._prebuilt is None:
            self._prebuilt = self._build(height, 0)
        if self._prebuilt is None:
            raise NoValue()
        return self._prebuilt

    def _is_valid(self, value: V) -> bool:
        return self.valid.get(self.ledger.value_id(value), False)

    def add_evidence(self, evidence: DuplicateVoteEvidence) -> bool:
        """Keep evidence for the next block this node proposes; False if known or full."""
        if evidence in self.evidence or len(self.evidence) >= MAX_EVIDENCE_POOL:
            return False
        self.evidence.append(evidence)
        log.warning(
            "validator %s equivocated at height %d", evidence.validator.hex()[:12], evidence.height
        )
        return True

    # --- the crash hook ------------------------------------------------------------------------
    def _maybe_crash(self) -> None:
        at = self.faults.crash_at
        if at is not None and (self.machine.height, self.machine.round) >= at and self.running:
            self.stop()

    def stop(self, crash: bool = True) -> None:
        """Stop voting and ignore everything from now on (``crash``: the test hook, logged)."""
        if not self.crashed:
            level = logging.WARNING if crash else logging.INFO
            log.log(level, "consensus stopped at height %d round %d", *self.position)
        self.crashed = True
        self.timers.cancel_all()

    @property
    def position(self) -> tuple[int, int]:
        return self.machine.height, self.machine.round
