"""Every node gets the same U table, bit for bit, whatever OpenBLAS kernel and thread count it
runs (issue 11: float tables split consensus). Each configuration runs in its own process,
because OpenBLAS picks its kernel and threads when it loads."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedcoin.consensus.evaluator import compile_architecture
from fedcoin.consensus.game import NullPlayerGame
from fedcoin.consensus.quantize import quantize_validation
from tests.consensus.exact_reference import conv, dense, layer, pooling, sequential, utility

ROOT = Path(__file__).resolve().parents[2]
# Kernels this CPU family can run (x86-64); OpenBLAS maps Prescott to its Katmai kernels.
KERNELS = ("SkylakeX", "Haswell", "Sandybridge", "Prescott")
MLP = sequential([16], dense(24, "relu"), dense(5))
CNN = sequential(
    [6, 6, 1], conv(4, 3, 1, "same"), pooling("MaxPooling2D", 2), layer("Flatten"), dense(5)
)
N_CLIENTS = 6


def honest_round(arch: str, seed: int):
    program = compile_architecture(arch)
    rng = np.random.default_rng(seed)
    g = [rng.normal(0, 0.5, s).astype(np.float32) for s in program.tensor_shapes]
    clients = [
        [(t + rng.normal(0, 0.2, t.shape)).astype(np.float32) for t in g] for _ in range(N_CLIENTS)
    ]
    x = rng.random((150, *program.input_shape)).astype(np.float32)
    y = rng.integers(0, program.outputs, 150)
    return program, g, clients, [30 + i for i in range(N_CLIENTS)], x, y


def tie_round():
    """The grand coalition ties classes 0 and 1 exactly, though no client does: clients 0 and 1
    move class 0's column by +d and −d with equal weights. Every sample labelled 0 or 1 whose
    top two classes are 0 and 1 then counts as wrong, on every node."""
    program = compile_architecture(sequential([4], dense(3)))
    rng = np.random.default_rng(5)
    base = np.round(rng.normal(0, 0.5, (4, 3)) * 2**10) / 2**10  # exact in Q(w)
    base[:, 1] = base[:, 0]
    base[:, 2] = -1.0  # class 2 never wins
    d = np.round(rng.normal(0, 0.5, 4) * 2**10) / 2**10
    bias = np.zeros(3, np.float32)
    g = [base.astype(np.float32), bias]
    plus, minus = base.copy(), base.copy()
    plus[:, 0] += d
    minus[:, 0] -= d
    clients = [[plus.astype(np.float32), bias], [minus.astype(np.float32), bias]]
    x = rng.random((64, 4)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    return program, g, clients, [50, 50], x, y


ROUNDS = {
    "mlp": lambda: honest_round(MLP, 1),
    "cnn": lambda: honest_round(CNN, 2),
    "tie": tie_round,
}


def tables() -> dict[str, list[int]]:
    """The U table of each round under both scores (the protocol's margin, and the count)."""
    out = {}
    for (name, make), score in itertools.product(ROUNDS.items(), ("margin", "count")):
        program, g, clients, samples, x, y = make()
        validation = quantize_validation(program, x, y)
        game = NullPlayerGame(program, validation, g, clients, samples, score)
        masks = list(range(1 << len(clients)))
        # mixed batches: all at once, then one by one in reverse; they must agree
        together = game.utilities(masks)
        alone = [game.utility(m) for m in reversed(masks)][::-1]
        out[f"{name}/{score}"] = together if together == alone else [-1]
    return out


def run_in(kernel: str, threads: int) -> dict[str, list[int]]:
    env = {
        **os.environ,
        "OPENBLAS_CORETYPE": kernel,
        "OPENBLAS_NUM_THREADS": str(threads),
        "OPENBLAS_VERBOSE": "2",
        "PYTHONPATH": str(ROOT),
    }
    code = (
        "import json; from tests.consensus.test_evaluator_kernels import tables; "
        "print(json.dumps(tables()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=600, check=True,
    )  # fmt: skip
    expected = "Katmai" if kernel == "Prescott" else kernel
    assert f"Core: {expected}" in done.stdout + done.stderr  # the kernel really was forced
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel", KERNELS)
def test_u_tables_identical_across_kernels_and_threads(kernel, threads):
    here = tables()
    assert all(t != [-1] for t in here.values())
    assert run_in(kernel, threads) == here


def test_crafted_tie_counts_as_wrong_on_every_node():
    program, g, clients, samples, x, y = tie_round()
    game = NullPlayerGame(program, quantize_validation(program, x, y), g, clients, samples)
    table = game.utilities([0, 1, 2, 3])
    assert table[0] == 0 and table[3] == 0  # g and the grand coalition: classes 0 and 1 tie
    assert table[1] + table[2] > 0  # each client alone breaks the tie one way
    players = [*clients, g]
    assert table[3] == utility(program, x, y, players, [2048, 2048, 0], "margin")
