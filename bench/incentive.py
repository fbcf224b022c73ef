"""Incentive integrity (issue 12): what each manipulation earns, against the same client honest.

In process, without the network, but with the code the chain uses for value and pay: the
bit-exact median-clipped FedAvg (``game.exact_fedavg``), the exact null-player game
(``utility.CoalitionGame`` on evaluator v1), the exact Shapley table and its fixed-point
estimate (``shapley.fixed_point_estimate``) and the clients' split of the pool
(``payouts.client_shares``). Training is a small numpy SGD of the same MLP the simulator uses
(Keras would make 90 five-round runs take an hour; the valuation does not depend on it).

For each setting (IID, Dirichlet(0.5)) and seed, a baseline run with 8 honest clients, then one
run per manipulation where client 0 (or the FL server) manipulates, on the same data and seeds:

- gain = the manipulator's total pay over the rounds ÷ client 0's total pay honest
  (``server-copies``: the copies' pay ÷ the copied client's honest pay);
- ``label-flipper`` and ``noisy``: also their pay ÷ the lowest honest client's (target < 1);
- CV of the 8 honest clients' totals in the IID baseline (target ≤ 0.25), per-round
  settlement (``max(φ, 0)`` per round, as the chain pays) and, for comparison, cumulative φ;
- global accuracy after the rounds with the clipped FedAvg vs the unclipped FedAvg of the
  old default simulation (6 honest, 1 noisy, 1 free rider).

    python bench/incentive.py [--seeds 5] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedcoin.application.datasets import (  # noqa: E402
    Dataset,
    corrupt_labels,
    load_task_data,
    partition_dirichlet,
    partition_iid,
)
from fedcoin.consensus.evaluator import Score  # noqa: E402
from fedcoin.consensus.game import exact_fedavg  # noqa: E402
from fedcoin.consensus.shapley import fixed_point_estimate  # noqa: E402
from fedcoin.consensus.utility import CoalitionGame  # noqa: E402
from fedcoin.incentive.payouts import client_shares  # noqa: E402

Weights = list[np.ndarray]
CLIENTS = 8
POOL = 7_000_000  # 70 % of a 10 FC round, in base units
HIDDEN = 32
ARCH = json.dumps({
    "class_name": "Sequential",
    "config": {"layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 64], "dtype": "float32"}},
        {"class_name": "Dense",
         "config": {"units": HIDDEN, "activation": "relu", "use_bias": True}},
        {"class_name": "Dense", "config": {"units": 10, "activation": "linear", "use_bias": True}},
    ]},
})  # fmt: skip
SPLIT_K = 3
COPIES_K = 2
INFLATE_X = 10
DISGUISE_SIGMA = 1e-3


# --- training (numpy SGD of the MLP) ---------------------------------------------------------
def initial_weights(seed: int) -> Weights:
    rng = np.random.default_rng(seed)

    def glorot(a: int, b: int) -> np.ndarray:
        limit = np.sqrt(6 / (a + b))
        return rng.uniform(-limit, limit, (a, b)).astype(np.float32)

    return [glorot(64, HIDDEN), np.zeros(HIDDEN, np.float32), glorot(HIDDEN, 10),
            np.zeros(10, np.float32)]  # fmt: skip


def train(w: Weights, data: Dataset, seed: int, epochs: int = 2, lr: float = 0.2) -> Weights:
    w1, b1, w2, b2 = (t.astype(np.float32).copy() for t in w)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(data))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            x, y = data.x[idx], data.y[idx]
            h = np.maximum(x @ w1 + b1, 0)
            z = h @ w2 + b2
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            dz = p / len(y)
            dh = (dz @ w2.T) * (h > 0)
            w2 -= lr * h.T @ dz
            b2 -= lr * dz.sum(axis=0)
            w1 -= lr * x.T @ dh
            b1 -= lr * dh.sum(axis=0)
    return [w1, b1, w2, b2]


def accuracy(w: Weights, data: Dataset) -> float:
    z = np.maximum(data.x @ w[0] + w[1], 0) @ w[2] + w[3]
    return float(np.mean(z.argmax(axis=1) == data.y))


# --- participants and their behaviour --------------------------------------------------------
@dataclass
class Player:
    owner: str
    """``"c0"`` … ``"c7"`` or ``"server"``: whose pay this key's earnings are."""
    behave: Callable[[Weights, Weights | None, int, list[Weights]], Weights]
    """(g, previous g or None, seed, updates so far this round) → the update."""
    samples: int


def honest(data: Dataset) -> Callable[[Weights, Weights | None, int, list[Weights]], Weights]:
    return lambda g, _prev, seed, _done: train(g, data, seed)


def players_for(manipulation: str, shards: list[Dataset], seed: int) -> list[Player]:
    rng = np.random.default_rng(seed + 99)
    out = [Player(f"c{i}", honest(d), len(d)) for i, d in enumerate(shards)]
    c0 = shards[0]
    if manipulation == "free-rider":
        out[0].behave = lambda g, _p, _s, _d: [t.copy() for t in g]
    elif manipulation == "delta-free-rider":
        out[0].behave = lambda g, p, _s, _d: (
            [t.copy() for t in g] if p is None else [2 * a - b for a, b in zip(g, p, strict=True)]
        )
    elif manipulation == "disguised-free-rider":
        out[0].behave = lambda g, _p, _s, _d: [
            (t + rng.normal(0, DISGUISE_SIGMA, t.shape)).astype(np.float32) for t in g
        ]
    elif manipulation == "inflate-samples":
        out[0].samples *= INFLATE_X
    elif manipulation == "label-flipper":
        flipped = Dataset(c0.x, (c0.y + 1) % c0.classes, c0.classes)
        out[0].behave = honest(flipped)
    elif manipulation == "noisy":
        out[0].behave = honest(corrupt_labels(c0, 0.8, seed))
    elif manipulation == "sybil-split":
        parts = np.array_split(np.arange(len(c0)), SPLIT_K)
        out[0:1] = [Player("c0", honest(c0.subset(p)), len(p)) for p in parts]
    elif manipulation == "server-copies":
        for _ in range(COPIES_K):  # noised copies of client 1's update under the server's keys

            def copy(g: Weights, _p: Weights | None, _s: int, done: list[Weights]) -> Weights:
                original = done[1]
                return [
                    (o + rng.normal(0, float(np.std(o - t)) + 1e-12, o.shape)).astype(np.float32)
                    for o, t in zip(original, g, strict=True)
                ]

            out.append(Player("server", copy, out[1].samples))
    elif manipulation != "honest":
        raise ValueError(manipulation)
    return out


# --- one run ---------------------------------------------------------------------------------
@dataclass
class Run:
    pay: dict[str, list[int]]
    """Owner → pay per round."""
    sv: dict[str, list[int]]
    """Owner → Σ fixed-point φ of its keys per round."""
    accuracy: float


def run(players: list[Player], val: Dataset, rounds: int, seed: int, score: Score) -> Run:
    g, prev = initial_weights(seed), None
    owners = sorted({p.owner for p in players})
    pay = {o: [0] * rounds for o in owners}
    sv = {o: [0] * rounds for o in owners}
    n = len(players)
    for r in range(rounds):
        updates: list[Weights] = []
        for i, p in enumerate(players):
            updates.append(p.behave(g, prev, seed * 1000 + r * 100 + i, updates))
        samples = [p.samples for p in players]
        game = CoalitionGame(ARCH, g, updates, samples, val.x, val.y, score)
        table = list(zip(range(1 << n), game.utilities(list(range(1 << n))), strict=True))
        estimate = fixed_point_estimate(n, table)
        pays, _ = client_shares(POOL, estimate)
        for p, e, paid in zip(players, estimate, pays, strict=True):
            pay[p.owner][r] += paid
            sv[p.owner][r] += e
        prev, g = g, exact_fedavg(updates, samples)
    return Run(pay, sv, accuracy(g, val))


def shards_of(train_set: Dataset, setting: str, seed: int) -> list[Dataset]:
    if setting == "iid":
        return partition_iid(train_set, CLIENTS, seed)
    return partition_dirichlet(train_set, CLIENTS, 0.5, seed)


def cv(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else float("inf")


MANIPULATIONS = (
    "free-rider", "delta-free-rider", "disguised-free-rider", "inflate-samples",
    "sybil-split", "server-copies", "label-flipper", "noisy",
)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--score", choices=["margin", "count", "both"], default="both",
        help="U of the game: the protocol's clipped margin, the 0/1 count, or both (default)",
    )  # fmt: skip
    ap.add_argument("--only", default="", help="comma-separated manipulations (default all)")
    args = ap.parse_args()
    manipulations = [m for m in MANIPULATIONS if not args.only or m in args.only.split(",")]
    t0 = time.perf_counter()
    results: dict[str, object] = {}
    scores: list[Score] = ["margin", "count"] if args.score == "both" else [args.score]
    for score, setting in itertools.product(scores, ("iid", "dirichlet0.5")):
        label = f"{score}/{setting}"
        gains: dict[str, list[float]] = {m: [] for m in manipulations}
        vs_lowest: dict[str, list[float]] = {
            m: [] for m in ("label-flipper", "noisy") if m in manipulations
        }
        free_rounds_paid = 0
        disguised: list[float] = []
        cvs, cvs_cum = [], []
        for seed in range(1, args.seeds + 1):
            train_set, val = load_task_data("digits", None, seed)
            shards = shards_of(train_set, setting, seed)
            base = run(players_for("honest", shards, seed), val, args.rounds, seed, score)
            totals = {o: sum(v) for o, v in base.pay.items()}
            cvs.append(cv(list(totals.values())))
            cvs_cum.append(cv([max(sum(v), 0) for v in base.sv.values()]))
            for m in manipulations:
                got = run(players_for(m, shards, seed), val, args.rounds, seed, score)
                if m == "server-copies":
                    gains[m].append(sum(got.pay["server"]) / max(totals["c1"], 1))
                else:
                    gains[m].append(sum(got.pay["c0"]) / max(totals["c0"], 1))
                if m == "free-rider":
                    free_rounds_paid += sum(1 for p in got.pay["c0"] if p)
                if m == "disguised-free-rider":  # target: ≤ 5 % of the mean honest payout
                    others = [sum(v) for o, v in got.pay.items() if o != "c0"]
                    disguised.append(sum(got.pay["c0"]) / max(statistics.fmean(others), 1))
                if m in vs_lowest:
                    honest_same = [sum(v) for o, v in got.pay.items() if o not in ("c0", "server")]
                    vs_lowest[m].append(sum(got.pay["c0"]) / max(min(honest_same), 1))
            print(f"  {label} seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"\n== {label}: {args.seeds} seeds × {args.rounds} rounds, {CLIENTS} clients")
        for m in manipulations:
            g = gains[m]
            print(f"{label:20s} {m:21s} gain mean {statistics.fmean(g):.3f}  "
                  f"min {min(g):.3f}  max {max(g):.3f}")  # fmt: skip
        for m, ratios in vs_lowest.items():
            print(f"{label:20s} {m:21s} pay ÷ lowest honest: max {max(ratios):.3f} "
                  f"(< 1 in {sum(r < 1 for r in ratios)}/{len(ratios)} seeds)")  # fmt: skip
        if disguised:
            print(f"{label:20s} disguised free rider ÷ mean honest pay: max {max(disguised):.4f}")
        print(f"{label:20s} free rider paid in {free_rounds_paid} rounds of "
              f"{args.seeds * args.rounds}")  # fmt: skip
        print(f"{label:20s} CV of honest totals (per-round pay): mean {statistics.fmean(cvs):.3f}"
              f"  per seed {[round(c, 3) for c in cvs]}")  # fmt: skip
        print(f"{label:20s} CV of cumulative φ (alternative):   mean "
              f"{statistics.fmean(cvs_cum):.3f}")  # fmt: skip
        results[label] = {
            "gains": gains, "vs_lowest": vs_lowest, "cv": cvs, "cv_cumulative": cvs_cum,
            "free_rounds_paid": free_rounds_paid,
        }  # fmt: skip
    accuracy_report(args, results)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def accuracy_report(args: argparse.Namespace, results: dict[str, object]) -> None:
    """Global accuracy of the default mix: clipped FedAvg (now) vs sample-weighted (before)."""
    clipped, plain = [], []
    for seed in range(1, args.seeds + 1):
        train_set, val = load_task_data("digits", None, seed)
        shards = partition_iid(train_set, CLIENTS, seed)
        shards[6] = corrupt_labels(shards[6], 0.8, seed + 6)
        for out, clip in ((clipped, True), (plain, False)):
            g = initial_weights(seed)
            for r in range(args.rounds):
                ups = [train(g, d, seed * 1000 + r * 100 + i) for i, d in enumerate(shards[:7])]
                ups.append([t.copy() for t in g])  # the free rider
                counts = [len(d) for d in shards]
                if clip:
                    g = exact_fedavg(ups, counts)
                else:
                    total = sum(counts)
                    g = [sum(u[j] * (c / total) for u, c in zip(ups, counts, strict=True))
                         for j in range(4)]  # fmt: skip
            out.append(accuracy(g, val))
    print(f"\naccuracy after {args.rounds} rounds (default mix, IID): clipped FedAvg "
          f"{statistics.fmean(clipped):.3f}, "
          f"sample-weighted FedAvg {statistics.fmean(plain):.3f}")  # fmt: skip
    results["accuracy"] = {"clipped": clipped, "plain": plain}


if __name__ == "__main__":
    main()
