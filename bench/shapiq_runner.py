"""Runs shapiq's Shapley-value approximators on a tabulated game; executed in the side venv.

Reads JSON from stdin ``{"n", "values": [U(mask) for mask in 0..2^n-1], "budgets", "seeds"}``
and writes ``{"approximator": {"budget": {"seed": {"values": [...], "calls": distinct}}}}``.
Each approximator gets ``budget`` game evaluations (shapiq's own budget: it never asks for more)
and ``calls`` counts the distinct coalitions it actually evaluated. The approximators are every
Shapley-value (order 1) method of shapiq 1.4 that takes a plain budget: KernelSHAP (with and
without the pairing trick), k-additive SHAP, unbiased KernelSHAP, SVARM, stratified, Owen and
permutation sampling. The caller takes the best of them per budget.
"""

import json
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

from shapiq.approximator import (  # noqa: E402
    SVARM,
    KernelSHAP,
    OwenSamplingSV,
    PermutationSamplingSV,
    StratifiedSamplingSV,
    UnbiasedKernelSHAP,
    kADDSHAP,
)

APPROXIMATORS = {
    "KernelSHAP": lambda n, seed: KernelSHAP(n, random_state=seed),
    "KernelSHAP+pairing": lambda n, seed: KernelSHAP(n, pairing_trick=True, random_state=seed),
    "kADD-SHAP": lambda n, seed: kADDSHAP(n, random_state=seed),
    "UnbiasedKernelSHAP": lambda n, seed: UnbiasedKernelSHAP(n, random_state=seed),
    "SVARM": lambda n, seed: SVARM(n, random_state=seed),
    "StratifiedSamplingSV": lambda n, seed: StratifiedSamplingSV(n, random_state=seed),
    "OwenSamplingSV": lambda n, seed: OwenSamplingSV(n, random_state=seed),
    "PermutationSamplingSV": lambda n, seed: PermutationSamplingSV(n, random_state=seed),
}


class TableGame:
    """The game as shapiq calls it: a boolean (m, n) coalition matrix to m values."""

    def __init__(self, n, values):
        self.values = np.asarray(values, dtype=np.float64)
        self.weights = 1 << np.arange(n, dtype=np.int64)
        self.seen = set()

    def __call__(self, coalitions):
        # shapiq's marginal samplers ask for one coalition (a vector) and index the answer
        masks = np.atleast_1d(np.asarray(coalitions, dtype=np.int64) @ self.weights)
        self.seen.update(int(m) for m in masks)
        return self.values[masks]


def run(name, n, values, budget, seed):
    game = TableGame(n, values)
    result = APPROXIMATORS[name](n, seed).approximate(budget, game)
    return [float(result[(i,)]) for i in range(n)], len(game.seen)


def main():
    job = json.load(sys.stdin)
    n, values = job["n"], job["values"]
    out = {}
    for name in job.get("approximators", list(APPROXIMATORS)):
        out[name] = {}
        for budget in job["budgets"]:
            out[name][str(budget)] = {}
            for seed in job["seeds"]:
                try:
                    estimate, calls = run(name, n, values, budget, seed)
                except Exception as exc:  # one failing method must not hide the others
                    print(f"{name} budget {budget} seed {seed}: {exc!r}", file=sys.stderr)
                    continue
                out[name][str(budget)][str(seed)] = {"values": estimate, "calls": calls}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
