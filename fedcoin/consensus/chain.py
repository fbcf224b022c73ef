"""A node's view of the committed chain: propose on it, check proposals, commit decided blocks.

There is no fork choice: a block joins the chain only with a ``CommitCertificate`` (precommits
from more than 2/3 of its height's power, DESIGN §5), and a committed block is final. The head is
the last committed block; a second block at a committed height is refused (``ConflictingCommit``)
whatever certificate it comes with, so nothing committed is ever reverted and no transaction
falls out of the chain.

- ``propose`` builds a block on the head (its ``LastCommit`` is the head's stored certificate).
- ``check_proposal`` is everything a validator checks before prevoting: a deterministic function
  of the chain and the block, never of what this node has seen. Its result is cached by block
  hash so that committing the block does not execute it again.
- ``commit`` stores a decided block with its certificate, post-state and receipt in one store
  transaction and moves the head.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from fedcoin.consensus.rules import (
    Applied,
    Body,
    WorkVerifier,
    apply_block,
    build_block,
    set_at,
)
from fedcoin.consensus.slashing import apply_evidence
from fedcoin.consensus.stake import validator_set
from fedcoin.consensus.validators import (
    ValidatorSet,
    VoteVerifier,
    check_signature,
    verify_commit,
)
from fedcoin.data.block import MAX_EVIDENCE, Block, BlockHeader
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import Draft, State
from fedcoin.data.store import ChainStore
from fedcoin.data.tx import Transaction
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence
from fedcoin.errors import (
    BlockError,
    ConflictingCommit,
    StoreError,
    TimestampInFuture,
    UnknownParent,
)
from fedcoin.incentive.payouts import BlockReceipt, RoundPayout

#: Proposals whose execution ``check_proposal`` keeps for ``commit`` (a height sees a few).
APPLIED_CACHE = 16
#: Validator sets kept by ``validator_set`` (the node asks for the next height's on every message).
SET_CACHE = 16


class Imported(enum.Enum):
    KNOWN = "known"
    """Already committed; nothing changed."""
    HEAD = "head"
    """Committed now: the new head."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    outcome: Imported
    """What happened."""
    applied: Applied | None = None
    """For ``HEAD``: the block's execution (post-state, payouts, slashes)."""


class Chain:
    """Committed blocks, their certificates and states, and the head, over a ``ChainStore``."""

    def __init__(
        self,
        store: ChainStore,
        genesis: Genesis,
        verifier: WorkVerifier,
        *,
        vote_check: VoteVerifier = check_signature,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.verifier = verifier
        self.vote_check = vote_check
        """Verifies vote signatures; a node passes its process-wide ``SignatureCache``."""
        if store.genesis_hash != genesis.block().hash:
            raise ValueError("store and genesis belong to different networks")
        self._applied: OrderedDict[bytes, tuple[Block, Applied]] = OrderedDict()
        self._sets: OrderedDict[bytes, ValidatorSet] = OrderedDict()
        """Sets by the hash of the block after which they decide (a committed block's is final)."""
        self._lock = threading.Lock()

    @property
    def head(self) -> BlockHeader:
        return self.store.head()

    def head_state(self) -> State:
        return self.store.head_state()

    def validator_set(self, height: int | None = None) -> ValidatorSet:
        """The set, with proposer priorities, that decides ``height`` (default: the next one).

        It is in the state after block ``height - 1``: the head's for the next height, a stored
        state for a committed one. ``StoreError`` for a height beyond the next. Cached by the
        hash of block ``height - 1``, which is final once committed.
        """
        head = self.head
        target = head.height + 1 if height is None else height
        if target < 1 or target > head.height + 1:
            raise StoreError(f"no validator set known for height {target}")
        before = head.hash if target == head.height + 1 else self.store.canonical_hash(target - 1)
        if before is None:
            raise StoreError(f"committed block {target - 1} missing from store")
        with self._lock:
            cached = self._sets.get(before)
        if cached is not None:
            return cached
        found = validator_set(self.store.get_state(before).validators)
        with self._lock:
            self._sets[before] = found
            while len(self._sets) > SET_CACHE:
                self._sets.popitem(last=False)
        return found

    def propose(
        self,
        proposer_pubkey: bytes,
        randao_reveal: bytes,
        *,
        timestamp_ms: int,
        txs: Sequence[Transaction] = (),
        evidence: Sequence[DuplicateVoteEvidence] = (),
    ) -> tuple[Block, Applied]:
        """The block ``proposer_pubkey`` makes on the head; raise the rule it would break."""
        head = self.head
        body = Body(timestamp_ms, proposer_pubkey, randao_reveal, txs, evidence)
        last_commit = self.store.get_certificate(head.height) if head.height > 0 else None
        block, applied = build_block(
            self.store.head_state(),
            head,
            self.genesis,
            self.verifier,
            body,
            last_commit,
            check=self.vote_check,
        )
        self._remember(block, applied)
        return block, applied

    def check_proposal(self, block: Block, *, now_ms: int | None) -> Applied:
        """Every rule a validator checks before prevoting ``block``; raise the one it breaks.

        ``now_ms`` is the local clock for the future-timestamp rule (None: not checked, as for
        a re-proposed block or a decided one).
        """
        cached = self._cached(block)
        if cached is not None:
            # The cached execution stands (the hash commits to the parent and the whole block);
            # only the clock rule depends on when it is asked
            limit = block.header.timestamp_ms - self.genesis.params.future_tolerance_ms
            if now_ms is not None and now_ms < limit:
                raise TimestampInFuture(timestamp_ms=block.header.timestamp_ms, now_ms=now_ms)
            return cached
        head = self.head
        # A proposal extends the head (the parent is the last committed block)
        if block.parent != head.hash:
            raise UnknownParent(parent=block.parent)
        applied = apply_block(
            self.store.head_state(),
            block,
            head,
            self.genesis,
            self.verifier,
            now_ms=now_ms,
            check=self.vote_check,
        )
        self._remember(block, applied)
        return applied

    def commit(self, block: Block, certificate: CommitCertificate) -> ImportResult:
        """Store a decided ``block`` with its ``certificate``; the head moves to it.

        Idempotent (``Imported.KNOWN``). ``ConflictingCommit`` for another block at a committed
        height; ``UnknownParent`` when the block is not the head's child (the caller syncs).
        """
        head = self.head
        if block.height <= head.height:
            # A committed height never commits another block
            if self.store.canonical_hash(block.height) != block.hash:
                raise ConflictingCommit(height=block.height, block=block.hash)
            return ImportResult(Imported.KNOWN)
        # The block extends the head
        if block.parent != head.hash or block.height != head.height + 1:
            raise UnknownParent(parent=block.parent)
        # The certificate commits this block under its height's set
        verify_commit(
            self.validator_set(block.height),
            self.genesis.chain_id,
            block.height,
            block.hash,
            certificate,
            self.vote_check,
        )
        applied = self.check_proposal(block, now_ms=None)
        receipt = BlockReceipt(applied.payouts).encode() if applied.payouts else b""
        settled = tuple(p.task_id for p in applied.payouts)
        self.store.commit(block, applied.state, certificate, receipt=receipt, settled=settled)
        with self._lock:
            self._applied.clear()
        return ImportResult(Imported.HEAD, applied)

    def check_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        """Raise unless ``evidence`` could go into the next block (valid, recent, unpunished):
        what a node's evidence pool asks before gossiping an item."""
        state = self.store.head_state()
        self._punish(Draft(state), state, evidence)

    def punishable(
        self, evidence: Sequence[DuplicateVoteEvidence]
    ) -> tuple[DuplicateVoteEvidence, ...]:
        """The items, in order, that the next block may carry together: each valid, recent and
        punished neither by the state nor by an earlier item (two proofs of one offence are
        one punishment: a block carrying both is refused)."""
        state = self.store.head_state()
        draft = Draft(state)
        kept: list[DuplicateVoteEvidence] = []
        for item in evidence:
            if len(kept) == MAX_EVIDENCE:
                break
            try:
                self._punish(draft, state, item)
            except BlockError:
                continue
            kept.append(item)
        return tuple(kept)

    def _punish(self, draft: Draft, state: State, evidence: DuplicateVoteEvidence) -> None:
        """Apply one item to ``draft`` as the next block would (checks come before any change)."""
        apply_evidence(
            draft,
            (evidence,),
            chain_id=self.genesis.chain_id,
            height=self.head.height + 1,
            creator=bytes(32),
            params=self.genesis.params,
            check=self.vote_check,
            set_of=lambda h: set_at(state, h),
        )

    def certificate(self, height: int) -> CommitCertificate | None:
        """The certificate this node committed block ``height`` with (the tip's included)."""
        return self.store.get_certificate(height)

    def committed(self, after_height: int, limit: int) -> list[tuple[Block, CommitCertificate]]:
        """Up to ``limit`` committed blocks above ``after_height``, each with its certificate."""
        return self.store.committed_range(after_height, limit)

    def payouts_of(self, block_hash: bytes) -> tuple[RoundPayout, ...]:
        """The rounds the block's end-of-block step settled or voided (none: empty)."""
        receipt = self.store.get_receipt(block_hash)
        return BlockReceipt.decode(receipt).payouts if receipt else ()

    def _cached(self, block: Block) -> Applied | None:
        """The execution of this very block (same header *and* body: a peer may pair a valid
        header with another body), if ``check_proposal`` or ``propose`` made it."""
        with self._lock:
            found = self._applied.get(block.hash)
        return found[1] if found is not None and found[0] == block else None

    def _remember(self, block: Block, applied: Applied) -> None:
        with self._lock:
            self._applied[block.hash] = (block, applied)
            self._applied.move_to_end(block.hash)
            while len(self._applied) > APPLIED_CACHE:
                self._applied.popitem(last=False)
