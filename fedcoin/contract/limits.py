"""Protocol constants that bound what a task may ask of the validators (DESIGN §4, §6).

A publisher chooses a task's model, validation set and Proof-of-Shapley parameters. Each choice
costs every validator work, so each is bounded here, the same on every node: a table that
cannot be computed within the windows, a window that never ends or a spot-check count in the
tens of thousands would halt the chain under its own rules. ``validate_spec`` checks the fields
of a spec against these bounds; ``consensus.admission`` checks the content (the model and the
validation set it names) and the pay for the work.

``MIN_PAY_PER_WORK`` belongs in genesis (DESIGN §6); it is a constant here until the genesis
parameters can carry it.
"""

from __future__ import annotations

from fedcoin.data.tx import TaskSpec

MAX_ROUNDS = 10_000
"""Most rounds one task may pay for."""
MAX_EXACT_CLIENTS = 10
"""Largest ``n_exact_max``: an exact table has at most 2^10 = 1 024 entries."""
MAX_BUDGET = 4_096
"""Largest sampling ``budget``: coalitions evaluated per round in sampled mode."""
MIN_COMMIT_BLOCKS = 4
"""Shortest commit window: every committee member must have time to compute its table (the
window closes early once every member committed)."""
MAX_COMMIT_BLOCKS = 2_000
"""Longest commit window: an SV task settles or re-opens in bounded time."""
MIN_REVEAL_BLOCKS = 2
"""Shortest reveal window: a reveal must have time to reach a block."""
MAX_REVEAL_BLOCKS = 500
"""Longest reveal window."""
MAX_MODEL_BYTES = 64 * 1024 * 1024
"""Largest model bundle a spec may name (the content store's and decoder's cap on one blob)."""
MAX_VALIDATION_BYTES = 32 * 1024 * 1024
"""Largest validation set blob a spec may name (fits MNIST's 10 000-image test set, 31.4 MB)."""
MAX_SAMPLES = 2**32
"""Largest ``max_samples`` a spec may set: counts stay exact in the float64 FedAvg (60·2^32 <
2^53) and in the round weights' apportionment."""
MAX_VALIDATION_SAMPLES = 10_000
"""Most samples in a validation set."""
MAX_PARAMETERS = 2**24
"""Most weights (scalars) in a task's model (the evaluator's own limit; 64 MiB of float32)."""
MAX_EVALUATION_MACS = 2**28
"""Most multiply-accumulates of one coalition's evaluation: MACs per sample × samples (an
MNIST MLP 784-128-10 on 2 600 validation samples). With ``MAX_BUDGET`` coalitions the largest
table is ``T_ref`` (docs/BENCHMARKS.md, bench/shapley.py): at 2^32 it took 52–370 min on these
machines, far beyond any commit window; at 2^28 it is 16× shorter."""
WORK_UNIT_MACS = 2**20
"""The unit in which work is priced: 2^20 multiply-accumulates."""
MIN_PAY_PER_WORK = 1
"""Base units the miners' pool of a round must pay per ``WORK_UNIT_MACS`` of its work."""

BPS_TOTAL = 10_000


def evaluations_per_round(spec: TaskSpec) -> int:
    """The most coalitions one round of ``spec`` can require: ``2^n`` up to ``n_exact_max``
    clients, else ``min(budget, 2^n)``; the largest over ``n ≤ max_clients``."""
    p = spec.posap
    exact = 1 << min(spec.max_clients, p.n_exact_max)
    if spec.max_clients <= p.n_exact_max:
        return exact
    return max(exact, min(p.budget, 1 << spec.max_clients))


def round_work(spec: TaskSpec, macs_per_sample: int, samples: int) -> int:
    """``work(task)`` of DESIGN §6: evaluations × MACs per sample × validation size."""
    return evaluations_per_round(spec) * macs_per_sample * samples


REF_MACS_PER_MS = 2**18
"""The evaluation rate (protocol multiply-accumulates per millisecond, 0.26 G/s) the windows are
sized for: 3× below the slowest rate measured on these machines (a CNN at MNIST scale, 0.79 G/s,
docs/BENCHMARKS.md), so a slower validator still computes its table in time."""


def commit_window(spec: TaskSpec, work: int, block_interval_ms: int, max_open_sv: int) -> int:
    """Blocks of an SV task's commit window (DESIGN §5 step 6): the spec's ``commit_blocks``, or
    more when the round's ``work`` needs it — ``blocks · block_interval_ms ≥ 2 · max_open_sv ·
    T(work)`` with ``T(work) = ⌈work / REF_MACS_PER_MS⌉`` ms — so every member can compute its
    table while every other open SV task is computed too. (The window closes early once every
    member has committed, so a long window costs honest rounds nothing.)"""
    t_work = -(-work // REF_MACS_PER_MS)
    needed = -(-2 * max_open_sv * t_work // max(block_interval_ms, 1))
    return max(spec.posap.commit_blocks, needed)


def miners_pool(spec: TaskSpec) -> int:
    """What the miners receive of one settled round: ``P − clients − server`` (DESIGN §6)."""
    price = spec.price_per_round
    clients = price * spec.split_bps[0] // BPS_TOTAL
    server = price * spec.split_bps[1] // BPS_TOTAL
    return price - clients - server


def required_miners_pay(work: int) -> int:
    """``MIN_PAY_PER_WORK · work``, in base units, rounded up to a whole unit."""
    return -(-work * MIN_PAY_PER_WORK // WORK_UNIT_MACS)
