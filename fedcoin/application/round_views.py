"""The HTTP API's views of tasks and their rounds, with each round's Proof of Shapley life.

A round is submitted (``SubmitRound``, which opens its SV task), valued by the SV task's
committee (``ShareCommit`` then ``ShareReveal`` transactions, DESIGN §5 "Valuation") and
settled or voided at the end of the block that closes its reveal window. ``RoundView`` shows
all of it: while the SV task is open, its ``valuation`` (phase for the next block, windows,
how many members committed and revealed, how many distinct tables); once settled, the payout,
the members who revealed the winning table (paid from the miners' pool) and those slashed for
revealing another one.

Rounds are found through the store's task index (blocks that publish, submit or settle for the
task) and the receipts of settling blocks (``Chain.payouts_of``); the winning table and its
revealers come from the state after the settling block (``State.settled``).

Simplification: ``slashed`` lists the revealers of another root whose bond fell in the settling
block; a fraud proof that disproves the table later is not reflected here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from fedcoin.application.views import (
    JSON,
    PayoutView,
    SpecView,
    View,
    key_text,
    load_view,
    ref_json,
    round_body,
)
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.game import max_utility
from fedcoin.consensus.valuation import ZERO_MIX, schedule_of
from fedcoin.data.block import Block
from fedcoin.data.keys import format_address
from fedcoin.data.state import SettledSv, State, SvTask, TaskState, TaskStatus
from fedcoin.data.tx import SubmitRound
from fedcoin.incentive.payouts import RoundPayout

#: Phases of an open SV task, for the next block.
OPENING, COMMIT, REVEAL, SETTLING = "opening", "commit", "reveal", "settling"


def valuation_phase(sv: SvTask, height: int) -> str:
    """Where ``sv`` stands for a block at ``height``: "opening" until its committee and schedule
    are fixed (blocks q and q+1), then "commit", "reveal", and "settling" past its windows."""
    if not sv.committee or sv.mix == ZERO_MIX:
        return OPENING
    if height <= sv.commit_end:
        return COMMIT
    if height <= sv.reveal_end:
        return REVEAL
    return SETTLING


@dataclass(frozen=True, slots=True)
class ValuationView(View):
    """An open SV task's valuation, as of the head: what the next block may carry."""

    phase: str
    """"opening", "commit", "reveal" or "settling" (``valuation_phase``)."""
    attempt: int
    """0 on the first valuation, 1 after a retry (no table backed by more than 1/3)."""
    committee: list[str]
    """Members (addresses) of the committee, the validator set of the height after q."""
    commit_end: int
    """Last height of the commit window (it closes early once every member committed)."""
    reveal_end: int
    """Last height of the reveal window: the round settles at the end of this block."""
    commits: int
    """Members who committed in this attempt."""
    reveals: int
    """Members who revealed in this attempt."""
    tables: int
    """Distinct tables revealed (1 when the honest members agree)."""

    @classmethod
    def of(cls, sv: SvTask, height: int) -> ValuationView:
        return cls(
            valuation_phase(sv, height), sv.attempt, [key_text(pk) for pk, _ in sv.committee],
            sv.commit_end, sv.reveal_end, len(sv.commits), len(sv.reveals), len(sv.tables),
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            return cls(
                str(d["phase"]), int(d["attempt"]), [str(a) for a in d["committee"]],
                int(d["commit_end"]), int(d["reveal_end"]), int(d["commits"]),
                int(d["reveals"]), int(d["tables"]),
            )  # fmt: skip

        return load_view(cls, data, build)


@dataclass(frozen=True, slots=True)
class RoundView(View):
    """One round of a task: its submission, its valuation while open, and once settled the
    payout, who revealed the winning table and who was slashed."""

    task_id: str
    round: int
    global_model: JSON
    updates: list[JSON]
    sv_task_id: str
    submitted_height: int
    settled: bool
    """Settled or voided."""
    settled_height: int | None
    valuation: ValuationView | None
    """The open SV task's progress (None once settled)."""
    payout: PayoutView | None
    table_root: str | None
    """Root of the winning table (None while open or when voided)."""
    revealers: list[str]
    """Members who revealed the winning table: paid from the miners' pool by power."""
    slashed: list[str]
    """Members who revealed another table and were slashed at settlement."""
    accuracy: float | None
    """The round's model on the validation set (U of the grand coalition ÷ its maximum, ≤ the
    accuracy: the protocol's U sums clipped margins), if known."""

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            valuation = d["valuation"]
            return cls(
                str(d["task_id"]), int(d["round"]), dict(d["global_model"]), list(d["updates"]),
                str(d["sv_task_id"]), int(d["submitted_height"]), bool(d["settled"]),
                d["settled_height"],
                None if valuation is None else ValuationView.from_json(valuation),
                None if d["payout"] is None else PayoutView.from_json(d["payout"]),
                d["table_root"], [str(a) for a in d["revealers"]],
                [str(a) for a in d["slashed"]], d["accuracy"],
            )  # fmt: skip

        return load_view(cls, data, build)


@dataclass(frozen=True, slots=True)
class TaskView(View):
    id: str
    spec: SpecView
    publisher: str
    escrow: int
    rounds_done: int
    status: str
    global_model: JSON
    created_height: int
    validation_samples: int | None
    rounds: list[RoundView] | None
    """Every round, in order (``None`` in the task list, which leaves them out)."""

    @classmethod
    def from_json(cls, data: Any) -> Self:
        def build(d: JSON) -> Any:
            rounds = d.get("rounds")
            return cls(
                str(d["id"]), SpecView.from_json(d["spec"]), str(d["publisher"]),
                int(d["escrow"]), int(d["rounds_done"]), str(d["status"]),
                dict(d["global_model"]), int(d["created_height"]), d.get("validation_samples"),
                None if rounds is None else [RoundView.from_json(r) for r in rounds],
            )  # fmt: skip

        return load_view(cls, data, build)


def task_view(
    task_id: bytes,
    task: TaskState,
    chain: Chain,
    *,
    with_rounds: bool,
    validation_samples: int | None = None,
) -> TaskView:
    rounds = task_rounds(task_id, chain, validation_samples) if with_rounds else None
    return TaskView(
        task_id.hex(), SpecView.of(task.spec), format_address(task.publisher), task.escrow,
        task.rounds_done, TaskStatus(task.status).name.lower(), ref_json(task.global_model),
        task.created_height, validation_samples, rounds,
    )  # fmt: skip


@dataclass(slots=True)
class _Found:
    """A round's submission and, once found, its settlement."""

    body: SubmitRound
    height: int
    settled_at: tuple[int, Block, RoundPayout] | None = None


def task_rounds(task_id: bytes, chain: Chain, samples: int | None) -> list[RoundView]:
    """Every round of a task from the canonical blocks that touch it (the store's task index):
    a settlement belongs to the latest open submission of its round (a voided round may be
    submitted again)."""
    found: dict[bytes, _Found] = {}
    open_by_round: dict[int, bytes] = {}
    for height, block_hash in chain.store.task_blocks(task_id):
        block = chain.store.get_block(block_hash)
        if block is None:
            continue
        for tx in block.txs:  # transactions first: settlement is the block's last step
            if isinstance(tx.body, SubmitRound) and tx.body.task_id == task_id:
                found[tx.id] = _Found(tx.body, height)
                open_by_round[tx.body.round] = tx.id
        for payout in chain.payouts_of(block_hash):
            sv_id = open_by_round.pop(payout.round, None) if payout.task_id == task_id else None
            if sv_id is not None:
                found[sv_id].settled_at = (height, block, payout)
    head = chain.head_state()
    open_svs = {sv.sv_task_id: sv for sv in head.queue}
    rounds: dict[int, RoundView] = {}
    for sv_id, entry in found.items():
        view = _round_view(task_id, sv_id, entry, chain, open_svs.get(sv_id), samples)
        rounds[view.round] = view
    return [rounds[r] for r in sorted(rounds)]


def _round_view(
    task_id: bytes,
    sv_id: bytes,
    entry: _Found,
    chain: Chain,
    open_sv: SvTask | None,
    samples: int | None,
) -> RoundView:
    base = round_body(entry.body)
    valuation = None if open_sv is None else ValuationView.of(open_sv, chain.head.height + 1)
    payout = settled_height = root = accuracy = None
    revealers: list[str] = []
    slashed: list[str] = []
    if entry.settled_at is not None:
        settled_height, block, paid = entry.settled_at
        payout = PayoutView.of(paid)
        after = chain.store.get_state(block.hash)
        won = next((s for s in after.settled if s.sv.sv_task_id == sv_id), None)
        if won is not None:
            root = won.root.hex()
            revealers = [key_text(pk) for pk in won.revealers]
            before = chain.store.get_state(block.header.parent)
            slashed = [key_text(pk) for pk in _slashed(won, before, after)]
            accuracy = _accuracy(won, after, samples)
    return RoundView(
        task_id.hex(), entry.body.round, base["global_model"], base["updates"], sv_id.hex(),
        entry.height, entry.settled_at is not None, settled_height, valuation, payout, root,
        revealers, slashed, accuracy,
    )  # fmt: skip


def _slashed(won: SettledSv, before: State, after: State) -> list[bytes]:
    """Revealers of another root whose bond fell in the settling block."""
    return [
        pk
        for pk, root in won.sv.reveals
        if root != won.root and after.bond_of(pk) < before.bond_of(pk)
    ]


def _accuracy(won: SettledSv, state: State, samples: int | None) -> float | None:
    """U of the grand coalition in the winning table ÷ its maximum (the schedule holds N)."""
    task = state.tasks.get(won.sv.task_id)
    table = won.sv.table(won.root)
    if not samples or task is None or table is None:
        return None
    schedule = schedule_of(won.sv, task.spec)
    everyone = (1 << won.sv.n) - 1
    if everyone not in schedule:
        return None
    return table[schedule.index(everyone)] / max_utility(samples)
