"""PoSap in a block (DESIGN §5, until the PoSap issue replaces it): the shares a settling block
carries and the settlement or void of the oldest pending SV task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fedcoin.consensus.aggregate import aggregate_estimates
from fedcoin.contract.task import RoundChecker
from fedcoin.data.block import MAX_SHARES, PosapSection, Share
from fedcoin.data.keys import address_of
from fedcoin.data.state import Draft, State, SvTask, TaskState
from fedcoin.errors import (
    BadShareSignature,
    DuplicateMiner,
    SettlementUnexpected,
    ShareFromNonValidator,
    StoreError,
    TooManyShares,
    VoidTooEarly,
    WrongEstimateLength,
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


def apply_posap(
    draft: Draft,
    state: State,
    parent_hash: bytes,
    section: PosapSection | None,
    *,
    timestamp_ms: int,
    creator: bytes,
    verifier: WorkVerifier,
) -> RoundPayout | None:
    """Settle or void the oldest pending SV task if the block carries a section for it.

    While an SV task is pending a block MAY carry the section that settles (or, after the
    timeout, voids) it, and no other; it may also carry none, so a creator without shares can
    still propose.
    """
    if section is None:
        return None
    # A PoSap section needs a pending SV task
    if not state.queue:
        raise SettlementUnexpected(sv_task=section.sv_task_id)
    sv_task = state.queue[0]
    task = state.tasks.get(sv_task.task_id)
    if task is None:
        raise StoreError(f"queued SV task of unknown task {sv_task.task_id.hex()}")
    # A section settles or voids the oldest pending SV task, no other
    if section.sv_task_id != sv_task.sv_task_id:
        raise WrongSvTask(expected=sv_task.sv_task_id, got=section.sv_task_id)
    proposer = address_of(creator)
    if section.voids:
        # A round is voided only after the PoSap timeout
        deadline = sv_task.queued_ms + task.spec.posap.posap_timeout_ms
        if timestamp_ms < deadline:
            raise VoidTooEarly(timestamp_ms=timestamp_ms, allowed_from=deadline)
        payout = void_round(draft, sv_task)
    else:
        check_shares(sv_task, task, section.shares, parent_hash, verifier, state)
        sv = aggregate_estimates([s.estimate for s in section.shares])
        miners = [address_of(s.miner_pubkey) for s in section.shares]
        payout = settle_round(draft, sv_task, sv, miners, proposer)
    draft.queue.pop(0)
    return payout
