"""Consensus wiring of a full node: private validator, ledger, driver and gossip handlers.

``NodeConsensus`` builds, for one full node, the ``FilePrivValidator`` (its state file under the
data directory: the last height, round and step signed, written before each signature), the
``ChainLedger`` over the node's chain and mempool, the ``ConsensusDriver`` and the
gossip handlers of the consensus messages, and registers them with the P2P service. A node
without a validator key (``validator=False``) runs the machine with ``me=None``: it follows,
commits what more than 2/3 of the power decide, and never signs.

Test hook: ``kill_after_sign_height`` makes the process ``SIGKILL`` itself right after its
private validator persisted a vote of that height or later and before the vote is sent — the
worst moment for double-sign protection (the restart must not sign anything conflicting).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedcoin.application.bft_ledger import ChainLedger
from fedcoin.application.chain_link import ChainLink
from fedcoin.application.consensus_driver import ConsensusDriver
from fedcoin.application.consensus_gossip import ConsensusGossip
from fedcoin.application.consensus_ports import Faults
from fedcoin.application.mempool import Mempool
from fedcoin.application.timers import Cadence
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.stake import randao_secret
from fedcoin.consensus.tendermint_io import Timeouts
from fedcoin.consensus.validators import SignatureCache
from fedcoin.data.block import Block
from fedcoin.data.keys import PrivateKey
from fedcoin.data.privval import FilePrivValidator
from fedcoin.data.vote import DuplicateVoteEvidence, Proposal, Vote
from fedcoin.errors import Reject
from fedcoin.network.messages import EvidenceMessage, Message, ProposalMessage, VoteMessage
from fedcoin.network.node import P2PNode

log = logging.getLogger("fedcoin.consensus")
PRIVVAL_FILE = "privval_state.bin"


@dataclass(frozen=True)
class ConsensusConfig:
    """Local consensus settings of a node (none of them is a consensus parameter)."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    """Propose / prevote / precommit timeouts, growing per round."""
    heartbeat_ms: int = 5000
    """With no transaction pending and no SV task open, a new height this long after a commit."""
    faults: Faults = field(default_factory=Faults)
    """Byzantine and crash hooks (tests and the simulation only)."""
    kill_after_sign_height: int | None = None
    """Test hook: SIGKILL this process right after persisting a vote of this height or later."""


class NodeConsensus:
    def __init__(
        self,
        *,
        chain: Chain,
        link: ChainLink,
        mempool: Mempool,
        p2p: P2PNode,
        key: PrivateKey,
        validator: bool,
        data_dir: Path,
        config: ConsensusConfig,
        vote_check: SignatureCache,
        prepare: Callable[[Block], Awaitable[None]],
        clock_ms: Callable[[], int],
    ) -> None:
        self.p2p = p2p
        self.config = config
        self.signer = FilePrivValidator(key, data_dir / PRIVVAL_FILE) if validator else None
        self.ledger = ChainLedger(
            chain, link, mempool,
            proposer=key.public if validator else None,
            randao_secret=randao_secret(key) if validator else None,
            prepare=prepare,
        )  # fmt: skip
        faults = config.faults
        if faults.equivocate and faults.raw_key is None:
            faults = Faults(equivocate=True, raw_key=key, crash_at=faults.crash_at)
        self.driver: ConsensusDriver[Block] = ConsensusDriver(
            self.ledger, signer=self.signer, publish=self._publish,
            cadence=Cadence(chain.genesis.params.min_block_interval_ms, config.heartbeat_ms),
            timeouts=config.timeouts, verifier=vote_check, clock_ms=clock_ms, faults=faults,
            on_commit=p2p.notifier.notify,
        )  # fmt: skip
        self.gossip = ConsensusGossip(self.driver, self.ledger.verify_evidence)
        p2p.register(ProposalMessage, self._on_proposal, self._undecided)
        p2p.register(VoteMessage, self._on_vote, self._undecided)
        p2p.register(EvidenceMessage, self._on_evidence)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.driver.run(), name="consensus")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await self.driver.settle()
        self.driver.stop(crash=False)

    def _publish(self, item: Proposal | Vote | DuplicateVoteEvidence, value: object) -> None:
        if isinstance(item, Vote):
            at = self.config.kill_after_sign_height
            if at is not None and item.height >= at and self.signer is not None:
                log.warning("test hook: killing this process after signing, before sending")
                os.kill(os.getpid(), signal.SIGKILL)
            self.p2p.broadcast(VoteMessage(item))
        elif isinstance(item, Proposal):
            if not isinstance(value, Block):
                raise TypeError("a proposal travels with its block")
            self.p2p.broadcast(ProposalMessage(item, value))
        else:
            self.p2p.broadcast(EvidenceMessage(item))

    # --- gossip handlers -----------------------------------------------------------------------
    def _undecided(self, message: Message) -> bool:
        """A late copy of a vote or proposal is worth relaying only while its height is not
        committed here (a peer still deciding it is offered the blocks: ``Syncer.offer``)."""
        height = message.consensus_height()
        return height is None or height > self.driver.ledger.committed_height()  # in memory

    async def _on_proposal(self, message: Message, peer: object) -> None:
        if not isinstance(message, ProposalMessage):
            raise Reject("not a proposal")
        await self.gossip.on_proposal(message.proposal, message.block)

    async def _on_vote(self, message: Message, peer: object) -> None:
        if not isinstance(message, VoteMessage):
            raise Reject("not a vote")
        await self.gossip.on_vote(message.vote)

    async def _on_evidence(self, message: Message, peer: object) -> None:
        if not isinstance(message, EvidenceMessage):
            raise Reject("not evidence")
        await self.gossip.on_evidence(message.evidence)
