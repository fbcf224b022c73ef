"""The chain as the consensus driver sees it: what to propose, whether a proposal is valid, commit.

``ChainLedger`` adapts ``Chain`` (finality: propose / check_proposal / commit) to the driver's
``Ledger``. The block a validator proposes (``build``) carries:
- the mempool's transactions (a transaction that no longer applies is dropped from the pool),
  among them the committee members' ``ShareCommit``/``ShareReveal`` (Proof of Shapley travels
  in transactions and settles as an end-of-block step: the proposer has no PoSap input);
- the evidence the driver collected that the chain can still punish;
- its randao reveal (the preimage of its registered tip);
- ``timestamp = max(now, parent.timestamp + min_block_interval_ms)``.
``check`` fetches what a proposal references, then runs ``Chain.check_proposal`` in a worker
thread; the driver caches the answer by block id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from fedcoin.application.chain_link import ChainLink
from fedcoin.application.mempool import Mempool
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.randao import RandaoChain
from fedcoin.consensus.validators import ValidatorSet
from fedcoin.data.block import Block
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence
from fedcoin.errors import (
    BadEvidence,
    BadTxInBlock,
    EvidenceAlreadyPunished,
    FedCoinError,
)

log = logging.getLogger("fedcoin.consensus")


class StaleHeight(FedCoinError):
    """The chain moved on: the height asked for is not the next one."""


class ChainLedger:
    def __init__(
        self,
        chain: Chain,
        link: ChainLink,
        mempool: Mempool,
        *,
        proposer: bytes | None,
        randao_secret: bytes | None,
        prepare: Callable[[Block], Awaitable[None]] | None = None,
    ) -> None:
        self.chain = chain
        self.link = link
        self.mempool = mempool
        self.proposer = proposer
        self.randao_secret = randao_secret
        self.prepare = prepare
        self.params = chain.genesis.params
        self._randao: RandaoChain | None = None

    @property
    def chain_id(self) -> str:
        return self.chain.genesis.chain_id

    def committed_height(self) -> int:
        return self.chain.head.height

    def parent_timestamp_ms(self) -> int:
        return self.chain.head.timestamp_ms

    def validator_set(self) -> ValidatorSet:
        return self.chain.validator_set()

    def busy(self) -> bool:
        """Propose at the block interval while a transaction is pending or an SV task is open
        (its windows are counted in blocks, so heights must keep coming until it settles)."""
        return len(self.mempool) > 0 or bool(self.chain.head_state().queue)

    def value_id(self, value: Block) -> bytes:
        return value.hash

    def evidence_in(self, value: Block) -> Sequence[DuplicateVoteEvidence]:
        return value.evidence

    # --- proposing -----------------------------------------------------------------------------
    def build(
        self,
        height: int,
        *,
        now_ms: int,
        evidence: Sequence[DuplicateVoteEvidence],
        variant: int = 0,
    ) -> Block:
        head, state = self.chain.head, self.chain.head_state()
        if head.height + 1 != height:
            raise StaleHeight(f"asked to build height {height} on {head.height}")
        proposer = self.proposer
        stake = None if proposer is None else state.stakes.get(proposer)
        if proposer is None or stake is None or self.randao_secret is None:
            raise StaleHeight("this node has no bond to propose with")
        if self._randao is None:
            self._randao = RandaoChain(self.randao_secret)
        reveal = self._randao.reveal_for(stake.randao_tip)
        timestamp = max(now_ms, head.timestamp_ms + self.params.min_block_interval_ms) + variant
        fresh = self.mempool.follows in (None, head.hash)
        txs = self.mempool.select(self.params.max_block_txs) if fresh else []
        kept = self.chain.punishable(evidence)
        for _ in range(len(txs) + len(kept) + 2):
            try:
                block, _ = self.chain.propose(
                    proposer, reveal, timestamp_ms=timestamp, txs=txs, evidence=kept
                )
            except BadTxInBlock as exc:
                bad = txs[exc.details["index"]]
                log.info("dropping %s from the mempool: %s", bad.id.hex()[:12], exc)
                self.mempool.drop(bad.id)
                txs = self.mempool.select(self.params.max_block_txs)
            except (BadEvidence, EvidenceAlreadyPunished) as exc:
                log.info("leaving evidence out: %s", exc)
                kept = ()
            else:
                return block
        raise StaleHeight(f"could not build a valid block at height {height}")

    # --- checking and committing ---------------------------------------------------------------
    async def check(self, value: Block, *, now_ms: int) -> None:
        if self.prepare is not None:
            await self.prepare(value)
        await asyncio.to_thread(self.chain.check_proposal, value, now_ms=now_ms)

    async def commit(self, value: Block, certificate: CommitCertificate) -> None:
        await self.link.commit(value, certificate)

    def verify_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        """Raise the rule ``evidence`` breaks for the next block (gossip checks this)."""
        self.chain.check_evidence(evidence)
