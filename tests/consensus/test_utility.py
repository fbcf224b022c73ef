"""The node's coalition game: the exact null-player game behind a memo, no float or Keras path."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fedcoin.consensus.game import NullPlayerGame
from fedcoin.consensus.quantize import quantize_validation
from fedcoin.consensus.shapley import fixed_point_estimate
from fedcoin.consensus.utility import CoalitionGame
from fedcoin.errors import EvaluatorError
from tests.consensus.exact_reference import dense, sequential
from tests.consensus.test_game import make_round

MLP = sequential([10], dense(8, "relu"), dense(4))


def test_game_is_the_exact_null_player_game_and_memoises() -> None:
    program, g, clients, samples, x, y = make_round(MLP, 4, seed=5)
    game = CoalitionGame(MLP, g, clients, samples, x, y)
    reference = NullPlayerGame(program, quantize_validation(program, x, y), g, clients, samples)
    masks = list(range(16))
    assert game.utilities(masks) == reference.utilities(masks)
    assert game.evaluations == 16
    assert game.utilities([3, 3, 0]) == reference.utilities([3, 3, 0])
    assert game.evaluations == 16  # nothing evaluated twice


def test_a_free_rider_gets_an_estimate_of_exactly_zero() -> None:
    program, g, clients, samples, x, y = make_round(MLP, 4, seed=7, free_riders=(2,))
    game = CoalitionGame(MLP, g, clients, samples, x, y)
    table = list(zip(range(16), game.utilities(list(range(16))), strict=True))
    estimate = fixed_point_estimate(4, table)
    assert estimate[2] == 0
    assert any(e != 0 for e in estimate)  # the honest clients are valued


def test_an_architecture_the_evaluator_cannot_compile_is_refused_without_keras() -> None:
    spec = json.loads(MLP)
    spec["config"]["layers"].insert(1, {"class_name": "LayerNormalization", "config": {}})
    _, g, clients, samples, x, y = make_round(MLP, 2, seed=1)
    before = "tensorflow" in sys.modules
    with pytest.raises(EvaluatorError):
        CoalitionGame(json.dumps(spec), g, clients, samples, x, y)
    assert ("tensorflow" in sys.modules) == before


def test_bad_validation_labels_are_a_named_error() -> None:
    _, g, clients, samples, x, y = make_round(MLP, 2, seed=2)
    with pytest.raises(EvaluatorError):
        CoalitionGame(MLP, g, clients, samples, x, np.full_like(y, 9))
