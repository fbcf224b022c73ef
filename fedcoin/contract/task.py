"""The FL task contract (DESIGN §3–§4): publish, submit rounds, close.

Each function checks one transaction body against the state and applies it to a ``Draft``. The
sender's nonce and fee are handled by the caller (``consensus.transactions``); these rules see
only what is specific to tasks. A round that reaches the ledger joins the FIFO queue of SV tasks,
the useful work of the next block. What needs the weights themselves — are they available, is the
global model their FedAvg — is asked of a ``RoundChecker`` the node supplies.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from fedcoin.contract import limits
from fedcoin.contract.limits import (
    MAX_BUDGET,
    MAX_COMMIT_BLOCKS,
    MAX_EXACT_CLIENTS,
    MAX_MODEL_BYTES,
    MAX_REVEAL_BLOCKS,
    MAX_ROUNDS,
    MAX_SAMPLES,
    MAX_VALIDATION_BYTES,
    MIN_COMMIT_BLOCKS,
    MIN_REVEAL_BLOCKS,
    commit_window,
)
from fedcoin.data.genesis import ChainParams
from fedcoin.data.state import Account, Draft, SvTask, TaskState, TaskStatus
from fedcoin.data.tx import MAX_CLIENTS, CloseTask, SubmitRound, TaskSpec
from fedcoin.errors import (
    BadUpdateSignature,
    ClientCountOutOfRange,
    ClientNotAllowed,
    CommitWindowTooLong,
    DuplicateClient,
    DuplicateWeights,
    InsufficientBalance,
    InvalidTaskSpec,
    InvalidUpdate,
    NotPublisher,
    NotTaskServer,
    RoundPending,
    TaskExpired,
    TaskNotClosable,
    TaskNotOpen,
    TooManyOpenSv,
    TooManySamples,
    UnknownTask,
    WrongRound,
)

BPS_TOTAL = limits.BPS_TOTAL
MAX_OPEN_PER_TASK = 2
"""Most open SV tasks of one task (DESIGN §5 step 6)."""


class RoundChecker(Protocol):
    """Checks that need a task's or a round's content: supplied by the node, stubbed in tests."""

    def check_task(self, spec: TaskSpec) -> int:
        """Raise the ``ContractError`` a task's model, validation set or pay for the work
        breaks (``consensus.admission``); when the task may open, return one round's work in
        multiply-accumulates."""

    def check_round(self, task: TaskState, round_: SubmitRound) -> None:
        """Raise ``RoundContentUnavailable``, ``WrongTensorShapes`` or ``NotFedAvg`` (the global
        model is not bit for bit the FedAvg with counts clipped at the smallest); return when
        sound."""


def validate_spec(spec: TaskSpec, height: int) -> None:
    """Raise ``InvalidTaskSpec`` naming the first malformed field of a task spec."""

    def bad(reason: str) -> InvalidTaskSpec:
        return InvalidTaskSpec(reason=reason)

    # A task pays for at least one round, at a positive price
    if spec.rounds < 1:
        raise bad("rounds must be at least 1")
    if spec.price_per_round < 1:
        raise bad("price_per_round must be positive")
    # The split of a round's price sums to 10 000 basis points
    if sum(spec.split_bps) != BPS_TOTAL:
        raise bad(f"split_bps must sum to {BPS_TOTAL}, not {sum(spec.split_bps)}")
    # 1 ≤ min_clients ≤ max_clients ≤ MAX_CLIENTS
    if not 1 <= spec.min_clients <= spec.max_clients <= MAX_CLIENTS:
        raise bad(f"need 1 ≤ min_clients ≤ max_clients ≤ {MAX_CLIENTS}")
    # The deadline lies in the future
    if spec.deadline_height <= height:
        raise bad("deadline_height must be above the current height")
    # The model and validation data are named by content
    if spec.model.size == 0 or spec.validation.size == 0:
        raise bad("model and validation must reference non-empty content")
    # The model and validation blobs are within their size limits
    if spec.model.size > MAX_MODEL_BYTES:
        raise bad(f"model must be at most {MAX_MODEL_BYTES} bytes")
    if spec.validation.size > MAX_VALIDATION_BYTES:
        raise bad(f"validation must be at most {MAX_VALIDATION_BYTES} bytes")
    # A client update claims at least one and at most max_samples ≤ MAX_SAMPLES samples
    if not 1 <= spec.max_samples <= MAX_SAMPLES:
        raise bad(f"max_samples must be between 1 and {MAX_SAMPLES}")
    # A task pays for a bounded number of rounds
    if spec.rounds > MAX_ROUNDS:
        raise bad(f"rounds must be at most {MAX_ROUNDS}")
    p = spec.posap
    # Exact tables stay small enough to compute and ship
    if not 1 <= p.n_exact_max <= MAX_EXACT_CLIENTS:
        raise bad(f"posap.n_exact_max must be between 1 and {MAX_EXACT_CLIENTS}")
    # The sampling budget is bounded
    if p.budget > MAX_BUDGET:
        raise bad(f"posap.budget must be at most {MAX_BUDGET}")
    # A sampled share evaluates at least its border: ∅, N, every singleton and (n−1)-coalition
    if spec.max_clients > p.n_exact_max and p.budget < 2 * spec.max_clients + 2:
        raise bad("posap.budget must be at least 2 * max_clients + 2")
    # The commit window gives every member time to compute the largest table the task allows
    if not MIN_COMMIT_BLOCKS <= p.commit_blocks <= MAX_COMMIT_BLOCKS:
        raise bad(
            f"posap.commit_blocks must be between {MIN_COMMIT_BLOCKS} and {MAX_COMMIT_BLOCKS}"
        )
    # The reveal window gives every committer time to get its reveal into a block
    if not MIN_REVEAL_BLOCKS <= p.reveal_blocks <= MAX_REVEAL_BLOCKS:
        raise bad(
            f"posap.reveal_blocks must be between {MIN_REVEAL_BLOCKS} and {MAX_REVEAL_BLOCKS}"
        )


def publish_task(
    draft: Draft,
    task_id: bytes,
    sender: bytes,
    spec: TaskSpec,
    height: int,
    checker: RoundChecker,
    params: ChainParams,
) -> None:
    """Open the task and move ``rounds * price_per_round`` from the sender into escrow."""
    validate_spec(spec, height)
    # The model compiles, the validation set fits it, and the miners are paid for the work
    work = checker.check_task(spec)
    # A round's work fits the longest commit window the protocol allows (DESIGN §5 step 6)
    window = commit_window(spec, work, params.min_block_interval_ms, params.max_open_sv)
    if window > MAX_COMMIT_BLOCKS:
        raise CommitWindowTooLong(blocks=window, max=MAX_COMMIT_BLOCKS, work_macs=work)
    escrow = spec.escrow
    account = draft.account(sender)
    # The publisher's balance covers the escrow
    if account.balance < escrow:
        raise InsufficientBalance(balance=account.balance, needed=escrow)
    draft.set_account(sender, Account(account.balance - escrow, account.nonce))
    draft.set_task(
        task_id,
        TaskState(
            spec=spec,
            publisher=sender,
            escrow=escrow,
            rounds_done=0,
            status=TaskStatus.OPEN,
            global_model=spec.model,
            created_height=height,
            round_work=work,
        ),
    )


def submit_round(
    draft: Draft,
    tx_id: bytes,
    sender: bytes,
    body: SubmitRound,
    height: int,
    timestamp_ms: int,
    checker: RoundChecker,
    params: ChainParams,
) -> None:
    """Record the round, move the global model on, and queue its SV task."""
    task = draft.task(body.task_id)
    # The task exists
    if task is None:
        raise UnknownTask(task_id=body.task_id)
    spec = task.spec
    # Only the task's FL server submits rounds
    if sender != spec.server:
        raise NotTaskServer(task_id=body.task_id)
    # Rounds go to open tasks only
    if task.status != TaskStatus.OPEN:
        raise TaskNotOpen(status=TaskStatus(task.status).name)
    # No round after the deadline
    if height > spec.deadline_height:
        raise TaskExpired(height=height, deadline=spec.deadline_height)
    # Rounds come in order
    if body.round != task.rounds_done + 1:
        raise WrongRound(expected=task.rounds_done + 1, got=body.round)
    # At most two SV tasks of one task are open (the next round trains while one is valued)
    max_open_sv = params.max_open_sv
    open_rounds = draft.open_for(body.task_id)
    if open_rounds >= MAX_OPEN_PER_TASK:
        raise RoundPending(task_id=body.task_id, open=open_rounds)
    # At most max_open_sv SV tasks are open on the chain (the round waits in the mempool)
    if len(draft.queue) >= max_open_sv:
        raise TooManyOpenSv(open=len(draft.queue), max=max_open_sv)
    # min_clients ≤ updates ≤ max_clients
    if not spec.min_clients <= len(body.updates) <= spec.max_clients:
        raise ClientCountOutOfRange(
            got=len(body.updates), min=spec.min_clients, max=spec.max_clients
        )
    seen: set[bytes] = set()
    hashes: set[bytes] = set()
    allowed = frozenset(spec.allowed_clients)
    for update in body.updates:
        # Each client appears once
        if update.client_pubkey in seen:
            raise DuplicateClient(client=update.client_pubkey)
        seen.add(update.client_pubkey)
        # A consortium task (non-empty allowed_clients) takes updates from listed clients only
        if allowed and update.client_pubkey not in allowed:
            raise ClientNotAllowed(client=update.client_pubkey)
        # No two updates carry the same weights (a copy under another key is not a player)
        if update.weights.sha256 in hashes:
            raise DuplicateWeights(sha256=update.weights.sha256)
        hashes.add(update.weights.sha256)
        # A client trained on at least one sample
        if update.samples < 1:
            raise InvalidUpdate(client=update.client_pubkey)
        # A client claims no more samples than the task's max_samples
        if update.samples > spec.max_samples:
            raise TooManySamples(
                client=update.client_pubkey, samples=update.samples, max=spec.max_samples
            )
        # Each update is signed by its client for this task and this round
        if not update.signature_ok(body.task_id, body.round):
            raise BadUpdateSignature(client=update.client_pubkey, round=body.round)
    # The content is available and the global model is the FedAvg of the updates
    checker.check_round(task, body)

    rounds_done = task.rounds_done + 1
    # Commits start at q+2 (the committee is fixed at the end of q, the schedule by block q+1);
    # the window fits the round's work
    window = commit_window(spec, task.round_work, params.min_block_interval_ms, max_open_sv)
    commit_end = height + 1 + window
    status = TaskStatus.DONE if rounds_done == spec.rounds else TaskStatus.OPEN
    draft.set_task(
        body.task_id,
        replace(task, rounds_done=rounds_done, status=status, global_model=body.global_model),
    )
    draft.queue.append(
        SvTask(
            sv_task_id=tx_id,
            task_id=body.task_id,
            round=body.round,
            updates=body.updates,
            prev_global=task.global_model,
            global_model=body.global_model,
            price=spec.price_per_round,
            queued_height=height,
            queued_ms=timestamp_ms,
            commit_end=commit_end,
            reveal_end=commit_end + spec.posap.reveal_blocks,
        )
    )


def close_task(draft: Draft, sender: bytes, body: CloseTask, height: int) -> int:
    """Close the task and refund its remaining escrow to the publisher; return the refund."""
    task = draft.task(body.task_id)
    # The task exists
    if task is None:
        raise UnknownTask(task_id=body.task_id)
    # Only the publisher closes a task
    if sender != task.publisher:
        raise NotPublisher(task_id=body.task_id)
    # A task closes once
    if task.status == TaskStatus.CLOSED:
        raise TaskNotOpen(status="CLOSED")
    # All rounds are done, or the deadline has passed
    finished = task.rounds_done == task.spec.rounds
    if not finished and height <= task.spec.deadline_height:
        raise TaskNotClosable(
            rounds_done=task.rounds_done,
            rounds=task.spec.rounds,
            deadline=task.spec.deadline_height,
        )
    # No SV task of it is pending (its price is still owed to someone)
    if draft.pending_for(body.task_id):
        raise TaskNotClosable(reason="a round of this task is still pending")
    refund = task.escrow
    draft.credit(task.publisher, refund)
    draft.set_task(body.task_id, replace(task, escrow=0, status=TaskStatus.CLOSED))
    return refund
