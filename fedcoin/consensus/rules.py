"""Block rules (DESIGN §5): ``apply_block`` checks a block against its parent and returns the
post-state; ``build_block`` runs the same execution to make a block. Both are pure: the clock
(``now_ms``) and the work verifier come in as arguments.

Order of checks: header (version, parent, height, timestamps, signature, roots, weight), then
the proposer's membership of the height's validator set, then the PoSap section against the
queue of SV tasks (shares from members only, one per member), then the transactions in order,
then the end-of-block stake steps (unbonding releases, the next epoch's set), then the state
root. Execution happens on a ``Draft``; any violation discards it, so an invalid block
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fedcoin.consensus.aggregate import aggregate_estimates
from fedcoin.consensus.stake import end_block_stake
from fedcoin.consensus.transactions import TxContext, apply_transaction
from fedcoin.contract.task import RoundChecker
from fedcoin.data.block import (
    BLOCK_VERSION,
    MAX_SHARES,
    Block,
    BlockHeader,
    PosapSection,
    Share,
    block_weight,
    posap_root,
    tx_root,
)
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import PrivateKey, address_of
from fedcoin.data.state import Draft, State, SvTask, TaskState
from fedcoin.data.tx import Transaction
from fedcoin.errors import (
    BadBlockSignature,
    BadShareSignature,
    BadTxInBlock,
    BadVersion,
    BlockTooSoon,
    ContractError,
    DuplicateMiner,
    EmptyBlock,
    NotAValidator,
    PosapRootMismatch,
    SettlementMissing,
    SettlementUnexpected,
    ShareFromNonValidator,
    StateRootMismatch,
    StoreError,
    TimestampInFuture,
    TimestampNotIncreasing,
    TooManyShares,
    TooManyTxs,
    TxError,
    TxRootMismatch,
    UnknownParent,
    VoidTooEarly,
    WeightMismatch,
    WrongEstimateLength,
    WrongHeight,
    WrongShareTask,
    WrongSvTask,
)
from fedcoin.incentive.payouts import RoundPayout, settle_round, void_round


class ShareVerifier(Protocol):
    """Checks the Proof-of-Shapley work in a share (the Shapley engine supplies the real one)."""

    def verify_share(
        self, sv_task: SvTask, task: TaskState, share: Share, parent_hash: bytes
    ) -> None:
        """Raise a ``ShareError`` naming what is wrong; return when the share is sound."""


class WorkVerifier(RoundChecker, ShareVerifier, Protocol):
    """Everything a block's execution asks about off-chain content."""


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of executing a block."""

    state: State
    """The post-state."""
    payout: RoundPayout | None
    """The round settled or voided by the block's PoSap section, if any."""


def check_shares(
    sv_task: SvTask,
    task: TaskState,
    shares: Sequence[Share],
    parent_hash: bytes,
    verifier: ShareVerifier,
    validators: State,
) -> None:
    """The checks every share of a settling block passes (``validators``: the parent's state,
    whose set is this height's)."""
    # At most MAX_SHARES shares (the wire limit of a PoSap section)
    if len(shares) > MAX_SHARES:
        raise TooManyShares(count=len(shares), max=MAX_SHARES)
    miners: set[bytes] = set()
    for share in shares:
        # The share is for this SV task
        if share.sv_task_id != sv_task.sv_task_id:
            raise WrongShareTask(expected=sv_task.sv_task_id, got=share.sv_task_id)
        # Only a member of the height's validator set writes a share
        if not validators.is_validator(share.miner_pubkey):
            raise ShareFromNonValidator(miner=share.miner_pubkey)
        # One share per member
        if share.miner_pubkey in miners:
            raise DuplicateMiner(miner=share.miner_pubkey)
        miners.add(share.miner_pubkey)
        # One estimated value per client
        if len(share.estimate) != sv_task.n:
            raise WrongEstimateLength(expected=sv_task.n, got=len(share.estimate))
        # The miner signed it
        if not share.signature_ok():
            raise BadShareSignature(miner=share.miner_pubkey)
        # The work itself: schedule, estimate, re-evaluated entries
        verifier.verify_share(sv_task, task, share, parent_hash)


def select_shares(shares: Sequence[Share]) -> tuple[Share, ...]:
    """The shares a block carries out of a pool: first ``MAX_SHARES`` by miner public key."""
    return tuple(sorted(shares, key=lambda s: s.miner_pubkey)[:MAX_SHARES])


def execute_block(
    state: State,
    parent: BlockHeader,
    chain: Genesis,
    verifier: WorkVerifier,
    *,
    timestamp_ms: int,
    proposer_pubkey: bytes,
    txs: Sequence[Transaction],
    posap: PosapSection | None,
    signatures_checked: bool = False,
) -> Applied:
    """Apply a block's body to ``state``; raise the ``RuleViolation`` it breaks."""
    params = chain.params
    height = parent.height + 1
    # Only a member of the height's validator set proposes
    if not state.is_validator(proposer_pubkey):
        raise NotAValidator(proposer=proposer_pubkey, height=height)
    proposer = address_of(proposer_pubkey)
    draft = Draft(state)
    payout: RoundPayout | None = None
    if state.queue:
        sv_task = state.queue[0]
        task = state.tasks.get(sv_task.task_id)
        if task is None:
            raise StoreError(f"queued SV task of unknown task {sv_task.task_id.hex()}")
        # While an SV task is pending, every block settles or voids the oldest one
        if posap is None:
            raise SettlementMissing(sv_task=sv_task.sv_task_id)
        # ... and no other
        if posap.sv_task_id != sv_task.sv_task_id:
            raise WrongSvTask(expected=sv_task.sv_task_id, got=posap.sv_task_id)
        if posap.voids:
            # A round is voided only after the PoSap timeout
            deadline = sv_task.queued_ms + task.spec.posap.posap_timeout_ms
            if timestamp_ms < deadline:
                raise VoidTooEarly(timestamp_ms=timestamp_ms, allowed_from=deadline)
            payout = void_round(draft, sv_task)
        else:
            check_shares(sv_task, task, posap.shares, parent.hash, verifier, state)
            sv = aggregate_estimates([s.estimate for s in posap.shares])
            miners = [address_of(s.miner_pubkey) for s in posap.shares]
            payout = settle_round(draft, sv_task, sv, miners, proposer)
        draft.queue.pop(0)
    else:
        # A PoSap section needs a pending SV task
        if posap is not None:
            raise SettlementUnexpected(sv_task=posap.sv_task_id)
        # A transaction-only block waits min_block_interval_ms after its parent
        if timestamp_ms < parent.timestamp_ms + params.min_block_interval_ms:
            raise BlockTooSoon(
                timestamp_ms=timestamp_ms,
                allowed_from=parent.timestamp_ms + params.min_block_interval_ms,
            )
        # A block carries a PoSap section or at least one transaction
        if not txs:
            raise EmptyBlock()
    # At most max_block_txs transactions
    if len(txs) > params.max_block_txs:
        raise TooManyTxs(count=len(txs), max=params.max_block_txs)

    ctx = TxContext(chain.chain_id, params, height, timestamp_ms, proposer)
    for index, tx in enumerate(txs):
        # Every transaction is valid in order
        try:
            apply_transaction(draft, tx, ctx, verifier, signature_checked=signatures_checked)
        except (TxError, ContractError) as exc:
            raise BadTxInBlock(index=index, rule=exc.rule, error=str(exc)) from exc
    if params.block_reward:
        draft.credit(proposer, params.block_reward)
        draft.supply += params.block_reward
    end_block_stake(draft, height, params)
    return Applied(draft.freeze(), payout)


def check_header(
    header: BlockHeader,
    parent: BlockHeader,
    chain: Genesis,
    posap: PosapSection | None,
    txs: Sequence[Transaction],
    *,
    now_ms: int | None,
) -> None:
    """Header rules that need nothing but the parent header and the body."""
    # The version is supported
    if header.version != BLOCK_VERSION:
        raise BadVersion(version=header.version)
    # The parent is the block it names
    if header.parent != parent.hash:
        raise UnknownParent(parent=header.parent)
    # Height is the parent's plus one
    if header.height != parent.height + 1:
        raise WrongHeight(expected=parent.height + 1, got=header.height)
    # Timestamps increase
    if header.timestamp_ms <= parent.timestamp_ms:
        raise TimestampNotIncreasing(parent=parent.timestamp_ms, got=header.timestamp_ms)
    # Not too far ahead of our clock (only for blocks arriving now, not for replays)
    if now_ms is not None and header.timestamp_ms > now_ms + chain.params.future_tolerance_ms:
        raise TimestampInFuture(timestamp_ms=header.timestamp_ms, now_ms=now_ms)
    # Weight is the parent's plus this block's
    expected_weight = parent.weight + block_weight(posap)
    if header.weight != expected_weight:
        raise WeightMismatch(expected=expected_weight, got=header.weight)
    # The proposer signed it
    if not header.signature_ok():
        raise BadBlockSignature(block=header.hash)
    # tx_root commits to the transactions
    if header.tx_root != tx_root(txs):
        raise TxRootMismatch()
    # posap_root commits to the PoSap section
    if header.posap_root != posap_root(posap):
        raise PosapRootMismatch()


def apply_block(
    state: State,
    block: Block,
    parent: BlockHeader,
    chain: Genesis,
    verifier: WorkVerifier,
    *,
    now_ms: int | None = None,
    signatures_checked: bool = False,
) -> Applied:
    """Validate ``block`` on top of ``parent`` (whose post-state is ``state``) and execute it.

    ``now_ms`` is the receiver's clock for the future-timestamp rule; pass None when replaying
    stored blocks. ``signatures_checked`` skips transaction signature checks that the caller
    already made (for example when the same transactions passed the mempool).
    """
    header = block.header
    check_header(header, parent, chain, block.posap, block.txs, now_ms=now_ms)
    applied = execute_block(
        state,
        parent,
        chain,
        verifier,
        timestamp_ms=header.timestamp_ms,
        proposer_pubkey=header.proposer_pubkey,
        txs=block.txs,
        posap=block.posap,
        signatures_checked=signatures_checked,
    )
    # state_root is the hash of the post-state
    if header.state_root != applied.state.root():
        raise StateRootMismatch()
    return applied


def build_block(
    state: State,
    parent: BlockHeader,
    chain: Genesis,
    verifier: WorkVerifier,
    key: PrivateKey,
    *,
    timestamp_ms: int,
    txs: Sequence[Transaction] = (),
    posap: PosapSection | None = None,
) -> tuple[Block, Applied]:
    """Make and sign the block ``key`` proposes on ``parent``; raise if it would be invalid.

    A PoSap section with more shares than a block may carry keeps the first ``MAX_SHARES`` by
    miner public key: the same choice on every node, whatever order the shares arrived in.
    """
    if posap is not None and len(posap.shares) > MAX_SHARES:
        posap = PosapSection(posap.sv_task_id, select_shares(posap.shares))
    applied = execute_block(
        state,
        parent,
        chain,
        verifier,
        timestamp_ms=timestamp_ms,
        proposer_pubkey=key.public,
        txs=txs,
        posap=posap,
    )
    header = BlockHeader(
        version=BLOCK_VERSION,
        height=parent.height + 1,
        parent=parent.hash,
        timestamp_ms=timestamp_ms,
        proposer_pubkey=key.public,
        tx_root=tx_root(txs),
        posap_root=posap_root(posap),
        state_root=applied.state.root(),
        weight=parent.weight + block_weight(posap),
        signature=bytes(64),
    ).signed(key)
    return Block(header, tuple(txs), posap), applied
