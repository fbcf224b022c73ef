"""Runs pyDVL's permutation sampler on a tabulated game; executed inside its own venv.

Reads JSON from stdin ``{"n", "values": [U(mask) for mask in 0..2^n-1], "budgets", "seeds"}``
and writes ``{"budget": {"seed": {"values": [...], "calls": distinct coalitions}}}``. For each
budget it runs the largest number of permutations whose distinct utility calls fit the budget,
so pyDVL gets the same number of utility evaluations as the other estimators.
"""

import json
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

from pydvl.valuation.dataset import Dataset  # noqa: E402
from pydvl.valuation.methods.shapley import ShapleyValuation  # noqa: E402
from pydvl.valuation.samplers.permutation import PermutationSampler  # noqa: E402
from pydvl.valuation.stopping import MaxSamples  # noqa: E402
from pydvl.valuation.utility.base import UtilityBase  # noqa: E402


class TableUtility(UtilityBase):
    def __init__(self, values):
        self.values = values
        self.seen = set()

    def __call__(self, sample):
        mask = 0
        if sample is not None:
            for i in sample.subset:
                mask |= 1 << int(i)
        self.seen.add(mask)
        return float(self.values[mask])

    def with_dataset(self, data, copy=True):
        self._training_data = data
        return self


def run(n, values, permutations, seed):
    utility = TableUtility(values)
    data = Dataset(np.arange(n, dtype=float).reshape(-1, 1), np.zeros(n))
    sampler = PermutationSampler(seed=seed)
    valuation = ShapleyValuation(
        utility, sampler=sampler, is_done=MaxSamples(sampler, permutations), progress=False
    )
    valuation.fit(data)
    result = valuation.result
    order = np.argsort(result.indices)
    return [float(v) for v in np.asarray(result.values)[order]], len(utility.seen)


def within_budget(n, values, budget, seed):
    lo, hi = 1, 2
    best = run(n, values, 1, seed)
    while True:
        got = run(n, values, hi, seed)
        if got[1] > budget:
            break
        lo, best = hi, got
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = run(n, values, mid, seed)
        if got[1] <= budget:
            lo, best = mid, got
        else:
            hi = mid
    return best


def main():
    job = json.load(sys.stdin)
    out = {}
    for budget in job["budgets"]:
        out[str(budget)] = {}
        for seed in job["seeds"]:
            values, calls = within_budget(job["n"], job["values"], budget, seed)
            out[str(budget)][str(seed)] = {"values": values, "calls": calls}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
