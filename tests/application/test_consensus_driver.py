"""The consensus driver with a fake ledger: N drivers in one event loop, messages over a bus.

Values are byte strings naming their height and parent; the fake ledger commits a value only
with a certificate that ``verify_commit`` accepts under the height's set. The bus delivers
every published message to every other node through its ``ConsensusGossip`` handlers (a
``Reject`` there fails the test: honest nodes never send invalid messages). Waits are on facts
(every node committed height h), with generous timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from fedcoin.application.consensus_driver import ConsensusDriver
from fedcoin.application.consensus_gossip import ConsensusGossip
from fedcoin.application.consensus_ports import Faults
from fedcoin.application.timers import Cadence
from fedcoin.consensus.evidence import verify_evidence
from fedcoin.consensus.proposer import next_height_set, proposer_for_round
from fedcoin.consensus.tendermint_io import VoteReceived
from fedcoin.consensus.validators import SignatureCache, ValidatorSet, verify_commit
from fedcoin.data.encoding import sha256
from fedcoin.data.privval import FilePrivValidator, Step
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence, Proposal, Vote
from fedcoin.errors import BlockError, DoubleSignRefused, Ignore, NeedsSync, Reject
from tests.consensus.bft_helpers import CHAIN, KEYS, PRECOMMIT, PREVOTE, TIMEOUTS, make_set

WAIT = 60.0
NOSIG = bytes(64)


class FakeLedger:
    chain_id = CHAIN

    def __init__(self, validators: ValidatorSet) -> None:
        self.sets = [validators]
        self.blocks: list[bytes] = []
        self.certificates: list[CommitCertificate] = []

    def committed_height(self) -> int:
        return len(self.blocks)

    def parent_timestamp_ms(self) -> int:
        return 0

    def validator_set(self) -> ValidatorSet:
        return self.sets[-1]

    def busy(self) -> bool:
        return True

    def value_id(self, value: bytes) -> bytes:
        return sha256(value)

    def tip(self) -> bytes:
        return sha256(self.blocks[-1]) if self.blocks else b"genesis"

    def build(
        self, height: int, *, now_ms: int, evidence: Sequence[DuplicateVoteEvidence], variant: int
    ) -> bytes:
        marks = b"".join(sha256(e.encode())[:4] for e in evidence)
        return b"block %d on %s v%d e%s" % (height, self.tip().hex()[:8].encode(), variant, marks)

    async def check(self, value: bytes, *, now_ms: int) -> None:
        head = b"block %d on %s " % (self.committed_height() + 1, self.tip().hex()[:8].encode())
        if not value.startswith(head):
            raise BlockError(reason="not a child of the tip")

    async def commit(self, value: bytes, certificate: CommitCertificate) -> None:
        height = self.committed_height() + 1
        verify_commit(self.sets[-1], CHAIN, height, sha256(value), certificate)
        self.blocks.append(value)
        self.certificates.append(certificate)
        self.sets.append(next_height_set(self.sets[-1]))

    def evidence_in(self, value: bytes) -> Sequence[DuplicateVoteEvidence]:
        return ()


class Bus:
    def __init__(self, n: int, tmp: Path, faults: dict[int, Faults]) -> None:
        validators = make_set(n)
        cache = SignatureCache()
        self.ledgers = [FakeLedger(validators) for _ in range(n)]
        self.gossip: list[ConsensusGossip[bytes]] = []
        self.rejects: list[str] = []
        self.evidence_seen: list[DuplicateVoteEvidence] = []
        self.down: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        for i in range(n):
            driver = ConsensusDriver(
                self.ledgers[i],
                signer=FilePrivValidator(KEYS[i], tmp / f"privval-{i}"),
                publish=lambda m, v, i=i: self.publish(i, m, v),
                cadence=Cadence(block_interval_ms=0, heartbeat_ms=0),
                timeouts=TIMEOUTS,
                verifier=cache,
                faults=faults.get(i),
            )
            check = self.ledgers[i]

            def verify(e: DuplicateVoteEvidence, ledger: FakeLedger = check) -> None:
                verify_evidence(
                    e, ledger.sets[e.height - 1], CHAIN, current_height=e.height, max_age=100
                )

            self.gossip.append(ConsensusGossip(driver, verify))

    @property
    def drivers(self) -> list[ConsensusDriver[bytes]]:
        return [g.driver for g in self.gossip]

    def publish(self, sender: int, message: object, value: object) -> None:
        if sender in self.down:
            return
        for i, gossip in enumerate(self.gossip):
            if i != sender and i not in self.down:
                task = asyncio.create_task(self.deliver(gossip, message, value))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def deliver(self, gossip: ConsensusGossip[bytes], message: object, value: object) -> None:
        try:
            if isinstance(message, Proposal):
                assert isinstance(value, bytes)
                await gossip.on_proposal(message, value)
            elif isinstance(message, Vote):
                await gossip.on_vote(message)
            elif isinstance(message, DuplicateVoteEvidence):
                self.evidence_seen.append(message)
                await gossip.on_evidence(message)
        except Reject as exc:
            self.rejects.append(str(exc))
        except Ignore:
            pass

    async def wait_height(self, height: int, nodes: Sequence[int]) -> None:
        async with asyncio.timeout(WAIT):
            while any(self.ledgers[i].committed_height() < height for i in nodes):
                await asyncio.sleep(0.02)

    def agree(self, nodes: Sequence[int]) -> int:
        """Every listed node has the same block at every height both committed."""
        top = min(self.ledgers[i].committed_height() for i in nodes)
        for h in range(top):
            assert len({self.ledgers[i].blocks[h] for i in nodes}) == 1, f"fork at {h + 1}"
        return top


@contextlib.asynccontextmanager
async def running(bus: Bus):  # type: ignore[no-untyped-def]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(d.run()) for d in bus.drivers]
        try:
            yield bus
        finally:
            for task in tasks:
                task.cancel()
            for task in list(bus.tasks):
                task.cancel()
    for driver in bus.drivers:
        await driver.settle()  # a signature in flight lands its state write before we read it


async def test_four_validators_commit_heights_with_certificates(tmp_path: Path) -> None:
    bus = Bus(4, tmp_path, {})
    async with running(bus):
        await bus.wait_height(5, range(4))
    assert bus.agree(range(4)) >= 5
    assert bus.rejects == []
    # Every node signed through its private validator, which persisted its last step
    assert all(d.signer is not None and d.signer.last.height >= 5 for d in bus.drivers)


async def test_one_crashed_of_four_keeps_committing(tmp_path: Path) -> None:
    bus = Bus(4, tmp_path, {3: Faults(crash_at=(2, 0))})
    async with running(bus):
        await bus.wait_height(6, range(3))
    assert bus.drivers[3].crashed
    assert bus.ledgers[3].committed_height() <= 2
    assert bus.agree(range(3)) >= 6


async def test_a_byzantine_validator_cannot_fork_and_is_reported(tmp_path: Path) -> None:
    bus = Bus(4, tmp_path, {0: Faults(equivocate=True, raw_key=KEYS[0])})
    async with running(bus):
        await bus.wait_height(6, range(1, 4))
    assert bus.agree(range(1, 4)) >= 6
    # Honest nodes saw both of its votes and gossiped the evidence; it names the Byzantine key
    assert {e.validator for e in bus.evidence_seen} == {KEYS[0].public}
    pools = [{e.validator for e in d.evidence} for d in bus.drivers[1:]]
    assert all(pool == {KEYS[0].public} for pool in pools)
    # ... and the blocks honest validators proposed since carry it (the fake marks it "e…")
    assert any(not block.endswith(b" e") for block in bus.ledgers[1].blocks)


async def test_a_restarted_validator_refuses_to_sign_what_conflicts(tmp_path: Path) -> None:
    bus = Bus(4, tmp_path, {})
    async with running(bus):
        await bus.wait_height(2, range(4))
    signer = bus.drivers[0].signer
    assert signer is not None
    last = signer.last
    again = FilePrivValidator(KEYS[0], tmp_path / "privval-0")
    assert again.last == last
    # Any earlier height, and the same height, round and step for another block: refused
    other = sha256(b"another block")
    with pytest.raises(DoubleSignRefused):
        again.sign_vote(CHAIN, Vote(last.height - 1, 0, PREVOTE, other, KEYS[0].public, NOSIG))
    with pytest.raises(DoubleSignRefused):
        if last.step == Step.PROPOSAL:
            again.sign_proposal(
                CHAIN, Proposal(last.height, last.round, -1, other, KEYS[0].public, NOSIG)
            )
        else:
            type_ = PREVOTE if last.step == Step.PREVOTE else PRECOMMIT
            again.sign_vote(
                CHAIN, Vote(last.height, last.round, type_, other, KEYS[0].public, NOSIG)
            )


async def test_gossip_admission_rejects_forgeries_and_syncs_on_a_height_ahead(
    tmp_path: Path,
) -> None:
    bus = Bus(4, tmp_path, {})
    gossip = bus.gossip[0]
    signer = FilePrivValidator(KEYS[1], tmp_path / "other")
    vote = signer.sign_vote(CHAIN, Vote(1, 0, PREVOTE, None, KEYS[1].public, NOSIG))
    # A vote whose signature does not verify, or by a key outside the set: Reject
    with pytest.raises(Reject):
        await gossip.on_vote(vote.with_signature(bytes(64)))
    stranger = Vote(1, 0, PREVOTE, None, KEYS[9].public, NOSIG)
    with pytest.raises(Reject):
        await gossip.on_vote(FilePrivValidator(KEYS[9], tmp_path / "x").sign_vote(CHAIN, stranger))
    # A proposal from a key that is not the round's proposer: Reject
    block = bus.ledgers[0].build(1, now_ms=0, evidence=(), variant=0)
    first = proposer_for_round(bus.ledgers[0].validator_set(), 0)
    proposer = next(k for k in KEYS[:4] if k.public != first)
    wrong = FilePrivValidator(proposer, tmp_path / "p").sign_proposal(
        CHAIN, Proposal(1, 0, -1, sha256(block), proposer.public, NOSIG)
    )
    with pytest.raises(Reject):
        await gossip.on_proposal(wrong, block)
    # The next height is buffered for the driver; a height further ahead means we are behind
    await gossip.on_vote(vote)
    assert bus.drivers[0].buffer[1] == [VoteReceived(vote)]
    ahead = signer.sign_vote(CHAIN, Vote(3, 0, PREVOTE, None, KEYS[1].public, NOSIG))
    with pytest.raises(NeedsSync):
        await gossip.on_vote(ahead)
    # Late messages (a committed height) are dropped quietly
    bus.ledgers[0].blocks.append(b"committed")
    bus.drivers[0].chain_moved()  # as a node does once a synced block is stored
    with pytest.raises(Ignore):
        await gossip.on_vote(vote)
