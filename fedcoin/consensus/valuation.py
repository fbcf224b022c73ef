"""Proof of Shapley on the chain (DESIGN §5 "Valuation", steps 1–6): the life of an SV task from
the block that opens it to the end of its fraud window.

The block at height q that includes a ``SubmitRound`` opens SV task t (``contract.task``). Then,
as end-of-block steps of the state and rules of three transactions:

- end of block q: t's **committee** is the set of height q+1 (powers fixed for t's life);
- end of block q+1: t's ``mix`` is mix[q+1], which seeds its common schedule (``schedule.py``);
- ``ShareCommit`` at heights q+2 … ``commit_end``: one per committee member;
- ``ShareReveal`` at ``commit_end``+1 … ``reveal_end``: the salt and the table (or only the root
  when its table is recorded), checked against the member's commitment, the schedule's length
  and the game's largest ``U``; nothing is evaluated;
- either window ends early, at the end of the block in which the last member commits (or the
  last committer reveals);
- end of block ``reveal_end``: **settlement** (``settlement.settle``): the winning table's
  estimate is the round's SV, its revealers share the miners' pool by power, revealers of
  proven-wrong roots are slashed; with no winner t re-opens once with fresh windows (same
  schedule), then is voided and refunded;
- ``FraudProof`` until ``fraud_end`` = settlement height + ``fraud_blocks``: one exact evaluation
  of the named position; a wrong entry slashes every revealer of the settled table (10 % to the
  sender), a right one burns the sender's deposit.

Every rule here is a deterministic function of the chain and the content the task names: the
node supplies a ``TableOracle`` (exact evaluations of the game, its null players, the estimate)
that computes the same integers on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from fedcoin.consensus.schedule import common_schedule, schedule_length
from fedcoin.consensus.settlement import PROVER_REWARD_BPS, Settlement, Status, settle
from fedcoin.consensus.slashing import slash
from fedcoin.consensus.table import check_reveal, check_root_reveal
from fedcoin.contract.limits import commit_window, miners_pool
from fedcoin.contract.task import RoundChecker
from fedcoin.data.genesis import ChainParams
from fedcoin.data.keys import address_of
from fedcoin.data.state import Account, Draft, SettledSv, SvTask, TaskState, powers_of
from fedcoin.data.tx import FraudProof, ShareCommit, ShareReveal, TaskSpec
from fedcoin.errors import (
    AlreadyDisproven,
    CommitFromNonMember,
    DuplicateCommit,
    DuplicateReveal,
    FraudPositionOutOfRange,
    InsufficientBalance,
    NoCommitment,
    OutsideWindow,
    StoreError,
    UnknownRoot,
    UnknownSettledSv,
    UnknownSvTask,
)
from fedcoin.incentive.payouts import RoundPayout, settle_round, void_round

ZERO_MIX = bytes(32)


class TableOracle(Protocol):
    """Exact answers about an SV task's game, the same integers on every node (the node's
    ``PosapVerifier``; each may read the round's content and is cached there)."""

    def utilities(self, sv: SvTask, task: TaskState, masks: Sequence[int]) -> list[int]:
        """``U(mask)`` for each mask (evaluator v1)."""

    def max_utility(self, task: TaskState) -> int:
        """The largest ``U`` of the task's validation set: a table entry's bound."""

    def estimate(
        self, sv: SvTask, task: TaskState, schedule: Sequence[int], table: Sequence[int]
    ) -> tuple[int, ...]:
        """``table.table_estimate`` of a table on the schedule, with the game's null players."""


class WorkVerifier(RoundChecker, TableOracle, Protocol):
    """Everything a block's execution asks about off-chain content (the node's
    ``PosapVerifier``; tests supply a tabulated game)."""


def schedule_of(sv: SvTask, spec: TaskSpec) -> tuple[int, ...]:
    """The common schedule of an SV task (its ``mix`` must be set: from block q+1 on)."""
    if sv.mix == ZERO_MIX:
        raise StoreError(f"SV task {sv.sv_task_id.hex()} has no schedule before block q+1")
    p = spec.posap
    return common_schedule(sv.n, p.budget, sv.sv_task_id, sv.mix, p.n_exact_max)


def power_height(sv: SvTask, params: ChainParams) -> int:
    """The height whose end snapshotted the committee's powers (the last epoch boundary ≤ q):
    a slash for the task reaches every unbonding entry created after it, so stake that backed
    the power cannot leave before it answers for the task."""
    return sv.queued_height - sv.queued_height % params.epoch_blocks


def liable(draft: Draft) -> set[bytes]:
    """Keys a PoSap settlement or fraud proof may still slash: the committees of open SV tasks
    and the revealers of settled tables in their fraud window. Their unbonding entries wait."""
    keys = {pk for sv in draft.queue for pk, _ in sv.committee}
    keys.update(pk for s in draft.settled if not s.disproven for pk in s.revealers)
    return keys


def commit_open(sv: SvTask, height: int) -> bool:
    """May a block at ``height`` carry a ShareCommit for ``sv``? (from q+2, when mix is set)"""
    return sv.mix != ZERO_MIX and height <= sv.commit_end


def reveal_open(sv: SvTask, height: int) -> bool:
    """May a block at ``height`` carry a ShareReveal for ``sv``?"""
    return sv.commit_end < height <= sv.reveal_end


def _open_sv(draft: Draft, sv_task_id: bytes) -> tuple[int, SvTask]:
    for index, sv in enumerate(draft.queue):
        if sv.sv_task_id == sv_task_id:
            return index, sv
    # The SV task is open
    raise UnknownSvTask(sv_task=sv_task_id)


def _task(draft: Draft, sv: SvTask) -> TaskState:
    task = draft.task(sv.task_id)
    if task is None:
        raise StoreError(f"SV task of unknown task {sv.task_id.hex()}")
    return task


def apply_share_commit(draft: Draft, pubkey: bytes, body: ShareCommit, height: int) -> None:
    """Record a committee member's commitment to its table's root."""
    index, sv = _open_sv(draft, body.sv_task_id)
    # Only a member of the SV task's committee commits
    if all(pk != pubkey for pk, _ in sv.committee):
        raise CommitFromNonMember(validator=pubkey, sv_task=sv.sv_task_id)
    # In the commit window: from q+2 (the schedule is known) to commit_end
    if not commit_open(sv, height):
        raise OutsideWindow(phase="commit", height=height, ends=sv.commit_end)
    # One commitment per member and attempt
    if sv.committed(pubkey) is not None:
        raise DuplicateCommit(validator=pubkey, sv_task=sv.sv_task_id)
    commits = tuple(sorted((*sv.commits, (pubkey, body.commitment))))
    draft.queue[index] = replace(sv, commits=commits)


def apply_share_reveal(
    draft: Draft, pubkey: bytes, body: ShareReveal, height: int, oracle: TableOracle
) -> None:
    """Record a member's reveal: its root, and its table unless that root's table is recorded."""
    index, sv = _open_sv(draft, body.sv_task_id)
    commitment = sv.committed(pubkey)
    # Only a member that committed in this attempt reveals
    if commitment is None:
        raise NoCommitment(validator=pubkey, sv_task=sv.sv_task_id)
    # In the reveal window: commit_end+1 to reveal_end
    if not reveal_open(sv, height):
        raise OutsideWindow(phase="reveal", height=height, ends=sv.reveal_end)
    # One reveal per member and attempt
    if sv.revealed(pubkey) is not None:
        raise DuplicateReveal(validator=pubkey, sv_task=sv.sv_task_id)
    tables = sv.tables
    if body.table:
        task = _task(draft, sv)
        p = task.spec.posap
        length = schedule_length(sv.n, p.budget, p.n_exact_max)
        # The table fits the schedule and the game, and recomputes the commitment
        root = check_reveal(
            sv.sv_task_id,
            pubkey,
            commitment,
            body.salt,
            body.table,
            length,
            oracle.max_utility(task),
        )
        # The root named is the table's
        if root != body.root:
            raise UnknownRoot(root=body.root, reason="the table hashes to another root")
        if sv.table(root) is None:
            tables = tuple(sorted((*tables, (root, tuple(body.table)))))
    else:
        # A reveal without a table names a root whose table is already recorded
        if sv.table(body.root) is None:
            raise UnknownRoot(root=body.root, reason="no recorded table has this root")
        check_root_reveal(sv.sv_task_id, pubkey, commitment, body.salt, body.root)
    reveals = tuple(sorted((*sv.reveals, (pubkey, body.root))))
    draft.queue[index] = replace(sv, reveals=reveals, tables=tables)


def apply_fraud_proof(
    draft: Draft,
    pubkey: bytes,
    body: FraudProof,
    height: int,
    params: ChainParams,
    oracle: TableOracle,
) -> None:
    """Judge a claim that a settled table is wrong at one position: one exact evaluation."""
    index, entry = next(
        ((i, s) for i, s in enumerate(draft.settled) if s.sv.sv_task_id == body.sv_task_id),
        (-1, None),
    )
    # The SV task settled and its fraud window is open
    if entry is None or height > entry.fraud_end:
        raise UnknownSettledSv(sv_task=body.sv_task_id)
    # A table is disproven once
    if entry.disproven:
        raise AlreadyDisproven(sv_task=body.sv_task_id)
    table = entry.sv.table(entry.root)
    if table is None:
        raise StoreError(f"settled SV task {body.sv_task_id.hex()} lost its table")
    # The position is one of the schedule's
    if not 0 <= body.position < len(table):
        raise FraudPositionOutOfRange(position=body.position, length=len(table))
    sender = address_of(pubkey)
    account = draft.account(sender)
    # The sender's balance covers the deposit (the fee is already paid)
    if account.balance < params.fraud_deposit:
        raise InsufficientBalance(balance=account.balance, needed=params.fraud_deposit)
    task = _task(draft, entry.sv)
    mask = schedule_of(entry.sv, task.spec)[body.position]
    value = oracle.utilities(entry.sv, task, [mask])[0]
    if table[body.position] == value:
        # A false claim: the deposit is burned, nobody is slashed
        draft.set_account(sender, Account(account.balance - params.fraud_deposit, account.nonce))
        draft.supply -= params.fraud_deposit
        return
    # A proven wrong entry: every revealer of the table is slashed, 10 % to the sender
    for validator in entry.revealers:
        slash(
            draft,
            validator,
            power_height(entry.sv, params),
            height,
            pubkey,
            params,
            bps=params.slash_fraud_bps,
            reward_bps=PROVER_REWARD_BPS,
        )
    draft.settled[index] = replace(entry, disproven=1)


def end_block_valuation(
    draft: Draft,
    height: int,
    creator: bytes,
    params: ChainParams,
    oracle: TableOracle,
) -> tuple[RoundPayout, ...]:
    """The end-of-block steps of every open SV task (run after the stake's, so the committee of
    a task opened here is the set of the next height); return the rounds settled or voided."""
    draft.settled = [s for s in draft.settled if s.fraud_end > height]
    queue: list[SvTask] = []
    payouts: list[RoundPayout] = []
    for opened in draft.queue:
        if not opened.committee:
            # Opened by this block: the committee is the set of the next height
            queue.append(replace(opened, committee=powers_of(draft.validators)))
        elif opened.mix == ZERO_MIX:
            # Block q+1: its mix seeds the schedule; commits start at the next height
            queue.append(replace(opened, mix=draft.mix))
        elif height != (sv := _close_windows_early(opened, height)).reveal_end:
            queue.append(sv)
        else:
            retried, payout = _settle(draft, sv, height, creator, params, oracle)
            queue.extend(retried)
            payouts.extend(payout)
    draft.queue = queue
    return tuple(payouts)


def _close_windows_early(sv: SvTask, height: int) -> SvTask:
    members = {pk for pk, _ in sv.committee}
    if height <= sv.commit_end and {pk for pk, _ in sv.commits} >= members:
        # Every member committed: the reveal window starts at the next height
        reveal_blocks = sv.reveal_end - sv.commit_end
        return replace(sv, commit_end=height, reveal_end=height + reveal_blocks)
    if sv.commit_end < height < sv.reveal_end and len(sv.reveals) == len(sv.commits):
        # Every committer revealed: settle at the end of this block
        return replace(sv, reveal_end=height)
    return sv


def _settle(
    draft: Draft,
    sv: SvTask,
    height: int,
    creator: bytes,
    params: ChainParams,
    oracle: TableOracle,
) -> tuple[tuple[SvTask, ...], tuple[RoundPayout, ...]]:
    """Settle ``sv`` at its reveal_end: (the re-opened SV task on a retry, else nothing;
    the round settled or voided, else nothing). Slashes and payments go to ``draft``."""
    task = _task(draft, sv)
    spec = task.spec
    schedule = schedule_of(sv, spec)

    def evaluate(position: int) -> int:
        return oracle.utilities(sv, task, [schedule[position]])[0]

    outcome: Settlement = settle(
        sv.sv_task_id,
        dict(sv.committee),
        dict(sv.reveals),
        dict(sv.tables),
        evaluate,
        first_attempt=sv.attempt == 0,
        pool=miners_pool(spec),
    )
    for wrong in outcome.slashed:
        # Revealers of proven-wrong roots lose slash_fraud_bps of their stake, all burned
        slash(
            draft,
            wrong.validator,
            power_height(sv, params),
            height,
            creator,
            params,
            bps=params.slash_fraud_bps,
            reward_bps=0,
        )
    if outcome.status is Status.RETRY:
        # No table won: the task re-opens once, with fresh windows and the same schedule
        window = commit_window(
            spec, task.round_work, params.min_block_interval_ms, params.max_open_sv
        )
        commit_end = height + window
        retried = replace(
            sv,
            attempt=1,
            commit_end=commit_end,
            reveal_end=commit_end + spec.posap.reveal_blocks,
            commits=(),
            reveals=(),
            tables=(),
        )
        return (retried,), ()
    if outcome.status is Status.VOID:
        return (), (void_round(draft, sv),)
    table = sv.table(outcome.root) if outcome.root is not None else None
    if outcome.root is None or table is None:
        raise StoreError(f"SV task {sv.sv_task_id.hex()} settled on a table it does not hold")
    sv_values = oracle.estimate(sv, task, schedule, table)
    miners = [(address_of(p.validator), p.amount) for p in outcome.payouts]
    payout = settle_round(draft, sv, sv_values, miners, address_of(creator))
    kept = replace(sv, tables=((outcome.root, table),))
    draft.settled.append(SettledSv(kept, outcome.root, height + params.fraud_blocks))
    return (), (payout,)
