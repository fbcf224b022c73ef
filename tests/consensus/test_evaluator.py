"""Evaluator v1 (DESIGN §5): compiling, quantisation, bounds, and an exact forward pass that
equals a pure-Python-integer reference, whatever the batch and whichever BLAS path runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.consensus import inference
from fedcoin.consensus.evaluator import (
    A_MAX,
    F_X,
    MARGIN_CAP,
    W_MAX,
    X_MAX,
    PoolLayer,
    WeightLayer,
    compile_architecture,
)
from fedcoin.consensus.game import coalition_coefficients
from fedcoin.consensus.inference import (
    ExactEvaluator,
    combine_players,
    correct_counts,
    exact_matmul,
    margin_scores,
)
from fedcoin.consensus.quantize import (
    accumulator_bound,
    compile_bundle,
    quantize_validation,
    quantize_weights,
)
from fedcoin.errors import (
    AccumulatorBoundExceeded,
    BadLayerConfig,
    BadValidationSet,
    EvaluatorError,
    InputOutOfRange,
    ModelTooLarge,
    UnsupportedActivation,
    UnsupportedArchitecture,
    UnsupportedLayer,
    WeightOutOfRange,
    WeightShapeMismatch,
)
from tests.consensus.exact_reference import (
    conv,
    dense,
    layer,
    pooling,
    sequential,
    utility,
)

MLP = sequential([12], dense(6, "relu"), layer("Dropout", rate=0.5), dense(3, "softmax"))
CNN = sequential(
    [6, 6, 2],
    conv(3, 3, 1, "same"),
    pooling("MaxPooling2D", 2),
    conv(2, 2, 2, "same", "linear"),
    pooling("AveragePooling2D", 2, 1, "same"),
    layer("Flatten"),
    dense(3),
)
STRIDED = sequential(
    [16],
    layer("Reshape", target_shape=[4, 4, 1]),
    pooling("AveragePooling2D", 3, 2, "same"),
    conv(2, 2, 1, "valid"),
    layer("Flatten"),
    dense(1, "sigmoid"),
)
ODD = sequential(
    [7, 5, 1],
    conv(2, 3, 2, "same", "relu"),
    pooling("MaxPooling2D", 3, 2, "same"),
    layer("Reshape", target_shape=[-1]),
    dense(4, "relu", use_bias=False),
    dense(2),
)
ARCHITECTURES = {"mlp": MLP, "cnn": CNN, "strided": STRIDED, "odd": ODD}


def random_models(program, count: int, seed: int, scale: float = 0.6):
    rng = np.random.default_rng(seed)
    return [
        [
            np.clip(rng.normal(0, scale, s), -7.99, 7.99).astype(np.float32)
            for s in program.tensor_shapes
        ]
        for _ in range(count)
    ]


def random_data(program, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *program.input_shape)).astype(np.float32)
    y = rng.integers(0, max(program.outputs, 2), n)
    return x, y


def evaluator_for(arch: str, players: int, seed: int, n: int = 9):
    program = compile_architecture(arch)
    models = random_models(program, players, seed)
    x, y = random_data(program, n, seed)
    quantised = [quantize_weights(program, m) for m in models]
    return (
        program,
        models,
        x,
        y,
        ExactEvaluator(program, quantize_validation(program, x, y), quantised),
    )


# --- compiling ---------------------------------------------------------------------------------
def test_compile_mlp_gives_shapes_in_keras_weight_order():
    program = compile_architecture(MLP)
    assert program.tensor_shapes == ((12, 6), (6,), (6, 3), (3,))
    assert program.input_shape == (12,) and program.outputs == 3
    assert program.macs == 12 * 6 + 6 * 3


def test_compile_conv_geometry_matches_keras_same_and_valid():
    program = compile_architecture(ODD)
    first, pool = program.layers[0], program.layers[1]
    assert isinstance(first, WeightLayer) and isinstance(pool, PoolLayer)
    assert first.out_shape == (4, 3, 2) and first.pads == (1, 1)  # total padding 2: 1 before
    assert pool.out_shape == (2, 2, 2) and pool.pads == (0, 1)  # rows: 1 after; cols: 1, 1
    assert program.tensor_shapes == ((3, 3, 1, 2), (2,), (8, 4), (4, 2), (2,))


def test_compile_accepts_keras2_batch_input_shape():
    spec = {
        "class_name": "Sequential",
        "config": {"layers": [{"class_name": "Dense", "config": {
            "units": 2, "activation": "linear", "batch_input_shape": [None, 3]}}]},
    }  # fmt: skip
    assert compile_architecture(json.dumps(spec)).tensor_shapes == ((3, 2), (2,))


def _bad(kind: str, **config):
    return sequential([8, 8, 1], layer(kind, **config), layer("Flatten"), dense(2))


@pytest.mark.parametrize(
    ("arch", "error"),
    [
        ("not json", UnsupportedArchitecture),
        ("[" * 100_000, UnsupportedArchitecture),
        (json.dumps({"class_name": "Functional", "config": {}}), UnsupportedArchitecture),
        (
            json.dumps({"class_name": "Sequential", "config": {"layers": []}}),
            UnsupportedArchitecture,
        ),
        (
            json.dumps({"class_name": "Sequential", "config": {"layers": [dense(2)]}}),
            UnsupportedArchitecture,
        ),
        (sequential([4], layer("BatchNormalization")), UnsupportedLayer),
        (sequential([4], layer("Activation", activation="relu"), dense(2)), UnsupportedLayer),
        (sequential([4], dense(3), layer("InputLayer", batch_shape=[None, 3])), UnsupportedLayer),
        (sequential([4], dense(3, "tanh"), dense(2)), UnsupportedActivation),
        (sequential([4], dense(3, "sigmoid"), dense(2)), UnsupportedActivation),
        (sequential([4], dense(3, "softmax"), dense(2)), UnsupportedActivation),
        (sequential([4], dense(2, "sigmoid")), UnsupportedActivation),
        (sequential([4], dense(True)), BadLayerConfig),
        (sequential([4], dense(0)), BadLayerConfig),
        (sequential([4], layer("Dense", units=2, use_bias="yes")), BadLayerConfig),
        (_bad("Conv2D", filters=2, kernel_size=[3, 3], dilation_rate=[2, 2]), BadLayerConfig),
        (_bad("Conv2D", filters=2, kernel_size=[3, 3], groups=2), BadLayerConfig),
        (
            _bad("Conv2D", filters=2, kernel_size=[3, 3], data_format="channels_first"),
            BadLayerConfig,
        ),
        (_bad("Conv2D", filters=2, kernel_size=[3, 3], padding="causal"), BadLayerConfig),
        (_bad("Conv2D", filters=2, kernel_size=[9, 9]), BadLayerConfig),
        (_bad("Conv2D", filters=2, kernel_size=[0, 3]), BadLayerConfig),
        (_bad("MaxPooling2D", pool_size=[9, 1], padding="same"), BadLayerConfig),
        (
            sequential(
                [40, 40, 1], pooling("AveragePooling2D", 17, 1, "same"), layer("Flatten"), dense(2)
            ),
            ModelTooLarge,
        ),
        (_bad("MaxPooling2D", pool_size=[2, 2], strides=[0, 1]), BadLayerConfig),
        (sequential([4], layer("Reshape", target_shape=[3]), dense(2)), BadLayerConfig),
        (sequential([4], layer("Reshape", target_shape=[-1, -1]), dense(2)), BadLayerConfig),
        (sequential([4], conv(2, 1)), BadLayerConfig),
        (sequential([2, 2, 1], conv(2, 1), dense(2)), UnsupportedArchitecture),
        (sequential([4], *[layer("Dropout")] * 70, dense(2)), ModelTooLarge),
        (sequential([4], dense(2**21)), ModelTooLarge),
        (sequential([4096], dense(4096), dense(2)), ModelTooLarge),
    ],  # fmt: skip
)
def test_compile_rejects_what_v1_does_not_support(arch, error):
    with pytest.raises(error):
        compile_architecture(arch)


def test_every_rejection_is_an_evaluator_error_not_a_crash():
    hostile = [
        '{"class_name": "Sequential", "config": {"layers": [1, 2]}}',
        "null",
        "[]",
        '{"class_name": "Sequential", "config": {"layers": [{"class_name": null}]}}',
    ]
    for arch in hostile:
        with pytest.raises(EvaluatorError):
            compile_architecture(arch)


# --- quantisation and bounds ------------------------------------------------------------------
def test_weights_quantise_half_to_even():
    program = compile_architecture(sequential([2], dense(1)))
    kernel = np.array([[0.5], [1.5]], dtype=np.float32) / 2**16
    bias = np.array([-2.5 / 2**16], dtype=np.float32)
    q = quantize_weights(program, [kernel, bias])
    assert q[0].tolist() == [[0], [2]] and q[1].tolist() == [-2]


def test_weight_range_is_w_max_inclusive():
    program = compile_architecture(sequential([1], dense(1, use_bias=False)))
    assert quantize_weights(program, [np.array([[W_MAX / 2**16]], np.float32)])[0][0, 0] == W_MAX
    for bad in (8.0, -8.0, np.nan, np.inf):
        with pytest.raises(WeightOutOfRange):
            quantize_weights(program, [np.array([[bad]], np.float32)])


@pytest.mark.parametrize(
    "weights",
    [
        [],
        [np.zeros((2, 1), np.float32)],
        [np.zeros((2, 1), np.float64), np.zeros(1, np.float32)],
        [np.zeros((1, 2), np.float32), np.zeros(1, np.float32)],
        [np.zeros((2, 1), np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32)],
    ],
)
def test_weights_must_have_the_architectures_shapes_and_float32(weights):
    program = compile_architecture(sequential([2], dense(1)))
    with pytest.raises(WeightShapeMismatch):
        quantize_weights(program, weights)


def test_inputs_are_bounded_by_x_max():
    program = compile_architecture(sequential([1], dense(2)))
    y = np.array([0])
    assert (
        quantize_validation(program, np.array([[X_MAX / 2**F_X]], np.float32), y).input_max == X_MAX
    )
    for bad in (128.0, -128.0, np.nan, -np.inf):
        with pytest.raises(InputOutOfRange):
            quantize_validation(program, np.array([[bad]], np.float32), y)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (np.zeros((2, 1), np.float64), np.array([0, 1])),
        (np.zeros((2, 2), np.float32), np.array([0, 1])),
        (np.zeros((0, 1), np.float32), np.zeros(0, np.int64)),
        (np.zeros((2, 1), np.float32), np.array([0.0, 1.0])),
        (np.zeros((2, 1), np.float32), np.array([0])),
        (np.zeros((2, 1), np.float32), np.array([0, 2])),
        (np.zeros((2, 1), np.float32), np.array([-1, 0])),
    ],
)
def test_validation_set_must_fit_the_model(x, y):
    program = compile_architecture(sequential([1], dense(2)))
    with pytest.raises(BadValidationSet):
        quantize_validation(program, x, y)


def test_single_output_takes_binary_labels():
    program = compile_architecture(sequential([1], dense(1, "sigmoid")))
    quantize_validation(program, np.zeros((2, 1), np.float32), np.array([0, 1]))
    with pytest.raises(BadValidationSet):
        quantize_validation(program, np.zeros((1, 1), np.float32), np.array([2]))


def test_hidden_layer_bound_is_checked_at_compile():
    # fan_in · A_MAX · W_MAX · 2^K ≥ 2^62 once fan_in ≥ 65 538
    ok = sequential([1], dense(65_000), dense(1))
    program = compile_architecture(ok)
    compile_bundle(ok, [np.zeros(s, np.float32) for s in program.tensor_shapes])
    too_wide = sequential([1], dense(65_600), dense(1))
    program = compile_architecture(too_wide)
    with pytest.raises(AccumulatorBoundExceeded):
        compile_bundle(too_wide, [np.zeros(s, np.float32) for s in program.tensor_shapes])


def test_first_layer_bound_uses_the_validation_sets_largest_input():
    program = compile_architecture(sequential([70_000], dense(1)))
    small = np.full((1, 70_000), 1.0, np.float32)  # I_max = 256: fine
    assert quantize_validation(program, small, np.array([0])).input_max == 256
    with pytest.raises(AccumulatorBoundExceeded):
        quantize_validation(program, np.full((1, 70_000), 127.0, np.float32), np.array([0]))


def test_bound_formula():
    layer_ = compile_architecture(sequential([10], dense(3))).weight_layers[0]
    expected = 10 * 300 * W_MAX * 2**12 + W_MAX * 2**12 * 2**8 + 2**27
    assert accumulator_bound(layer_, 300, 8) == expected


# --- exact products ----------------------------------------------------------------------------
def test_exact_matmul_is_exact_at_the_bounds_with_chunks():
    rng = np.random.default_rng(0)
    k = 300  # 300 · A_MAX · W_MAX·2^12 > 2^53: several chunks
    a = rng.choice([-A_MAX, A_MAX, A_MAX - 1], size=(5, k)).astype(np.float64)
    b = rng.choice([W_MAX << 12, -(W_MAX << 12), 12345], size=(k, 4)).astype(np.float64)
    got, bound = exact_matmul(a, b, A_MAX, W_MAX << 12)
    want = [
        [sum(int(a[i, t]) * int(b[t, j]) for t in range(k)) for j in range(4)] for i in range(5)
    ]
    assert got.dtype == np.int64 and got.tolist() == want
    assert bound >= max(abs(v) for row in want for v in row)


def test_combine_players_uses_limbs_exactly():
    rng = np.random.default_rng(1)
    stacked = rng.integers(-(2**49), 2**49, size=(5, 7), dtype=np.int64)
    coeffs = np.array([[4096, 0, 0, 0, 0], [1, 2, 3, 4, 4086], [819, 819, 819, 819, 820]])
    got, _ = combine_players(coeffs, stacked)
    want = [
        [sum(int(c) * int(p) for c, p in zip(row, col, strict=True)) for col in stacked.T]
        for row in coeffs
    ]
    assert got.tolist() == want


def test_ties_and_signs_count_as_wrong():
    logits = np.array([[[5, 5, 1], [1, 7, 7], [3, 2, 1]]], dtype=np.float64)
    assert correct_counts(logits, np.array([0, 1, 0])).tolist() == [1]
    single = np.array([[[1], [0], [-1], [0]]], dtype=np.float64)
    assert correct_counts(single, np.array([1, 1, 0, 0])).tolist() == [2]


def test_margin_is_the_true_class_lead_clipped_to_the_cap():
    cap = MARGIN_CAP
    logits = np.array([[[5, 5, 1], [1, 7, 4], [900, 2, 1], [3, 2, 9]]], dtype=np.float64)
    # a tie adds 0, a lead of 3 adds 3, a lead beyond the cap adds the cap, a wrong sample 0
    assert margin_scores(logits, np.array([0, 1, 0, 0])).tolist() == [0 + 3 + cap + 0]
    single = np.array([[[5], [-5], [-9], [cap + 7]]], dtype=np.float64)
    assert margin_scores(single, np.array([1, 1, 0, 1])).tolist() == [5 + 0 + 9 + cap]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_margin_scores_equal_the_reference(name):
    program, models, x, y, ev = evaluator_for(ARCHITECTURES[name], 3, seed=11)
    coeffs = coalition_coefficients(list(range(4)), [1500, 2596])
    want = [utility(program, x, y, models, row.tolist(), "margin") for row in coeffs]
    assert ev.scores(coeffs).tolist() == want
    assert ev.scores(coeffs, "count").tolist() == ev.correct(coeffs).tolist()


def test_zero_model_scores_nothing():
    # all logits tie at the bias: every sample is wrong under the strict rule
    program = compile_architecture(MLP)
    zeros = [np.zeros(s, np.float32) for s in program.tensor_shapes]
    x, y = random_data(program, 20, 0)
    ev = ExactEvaluator(
        program, quantize_validation(program, x, y), [quantize_weights(program, zeros)]
    )
    assert ev.correct(np.array([[4096]])).tolist() == [0]


# --- the forward pass equals the reference -----------------------------------------------------
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("use_players", [False, True])
def test_fast_pass_equals_pure_integer_reference(name, use_players):
    program, models, x, y, ev = evaluator_for(ARCHITECTURES[name], 4, seed=len(name))
    ev.use_players = use_players
    masks = list(range(8))
    coeffs = coalition_coefficients(masks, [1000, 1500, 1596])
    fast = ev.correct(coeffs).tolist()
    assert fast == [utility(program, x, y, models, row.tolist()) for row in coeffs]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_logits_equal_reference_logits(name):
    from tests.consensus.exact_reference import flat, logits

    program, models, x, y, ev = evaluator_for(ARCHITECTURES[name], 3, seed=7)
    coeffs = np.array([[4096, 0, 0], [0, 1, 4095], [1365, 1366, 1365]])
    fast = ev.logits(coeffs)
    for row, c in enumerate(coeffs.tolist()):
        q = [[flat(t, 16) for t in m] for m in models]
        params = [
            [sum(ci * qm[t][i] for ci, qm in zip(c, q, strict=True)) for i in range(len(q[0][t]))]
            for t in range(len(q[0]))
        ]
        for sample in range(len(x)):
            assert fast[row, sample].tolist() == logits(program, flat(x[sample], F_X), params)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(ARCHITECTURES)),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.05, 0.6, 3.0]),
    weights=st.lists(st.integers(0, 4096), min_size=2, max_size=2),
)
def test_property_fast_equals_reference(name, seed, scale, weights):
    program = compile_architecture(ARCHITECTURES[name])
    models = random_models(program, 3, seed, scale)
    x, y = random_data(program, 5, seed)
    a, b = sorted(weights)
    coeffs = np.array([[a, b - a, 4096 - b], [4096, 0, 0], [0, 0, 4096]])
    ev = ExactEvaluator(program, quantize_validation(program, x, y),
                        [quantize_weights(program, m) for m in models])  # fmt: skip
    fast = ev.correct(coeffs).tolist()
    assert fast == [utility(program, x, y, models, row.tolist()) for row in coeffs]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 5), data=st.data())
def test_property_counts_do_not_depend_on_batching_or_order(seed, batch, data):
    _, _, _, _, ev = evaluator_for(CNN, 4, seed)
    coeffs = coalition_coefficients(list(range(8)), [1024, 2048, 1024])
    whole = ev.correct(coeffs).tolist()
    order = data.draw(st.permutations(range(8)))
    ev.batch = batch
    shuffled = ev.correct(coeffs[list(order)]).tolist()
    assert [shuffled[order.index(i)] for i in range(8)] == whole
    assert [ev.correct(coeffs[i : i + 1])[0] for i in range(8)] == whole


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("use_players", [False, True])
def test_forced_int64_path_gives_the_same_counts(monkeypatch, name, use_players):
    _, _, _, _, ev = evaluator_for(ARCHITECTURES[name], 4, 3, n=20)
    ev.use_players = use_players
    coeffs = coalition_coefficients(list(range(8)), [1000, 2000, 1096])
    fast = ev.logits(coeffs)
    monkeypatch.setattr(inference, "EXACT", 2**30)  # forces chunking and int64 rounding
    monkeypatch.setattr(inference, "LIMB_BITS", 8)  # and limbs in c @ P
    ev.per_player = None
    assert np.array_equal(ev.logits(coeffs), fast)


def test_coefficients_must_sum_to_two_to_the_k():
    _, _, _, _, ev = evaluator_for(MLP, 2, 0)
    for bad in ([[4095, 0]], [[4097, -1]], [[4096]]):
        with pytest.raises(ValueError):
            ev.correct(np.array(bad))


# --- the same model Keras runs ------------------------------------------------------------------
KERAS_LAYERS = {
    "mlp": lambda k: [k.Input((12,)), k.layers.Dense(9, activation="relu"),
                      k.layers.Dropout(0.5), k.layers.Dense(4)],
    "cnn-same-stride2": lambda k: [
        k.Input((64,)), k.layers.Reshape((8, 8, 1)),
        k.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        k.layers.AveragePooling2D(3, strides=2, padding="same"),
        k.layers.Conv2D(3, 2, padding="valid"), k.layers.Flatten(), k.layers.Dense(4),
    ],
    "cnn-odd-max-same": lambda k: [
        k.Input((7, 9, 2)), k.layers.Conv2D(5, (2, 3), strides=(1, 2), padding="same"),
        k.layers.MaxPooling2D(3, strides=2, padding="same"),
        k.layers.Conv2D(3, 3, strides=(2, 1), padding="same", activation="relu"),
        k.layers.Flatten(), k.layers.Dense(6, activation="relu"), k.layers.Dense(4),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(KERAS_LAYERS))
def test_integer_logits_track_keras_float_logits(name):
    keras = pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")
    model = keras.Sequential(KERAS_LAYERS[name](keras))
    program = compile_architecture(model.to_json())
    rng = np.random.default_rng(3)
    weights = [rng.normal(0, 0.4, s).astype(np.float32) for s in program.tensor_shapes]
    model.set_weights(weights)
    # inputs on the 2^-8 grid, so only weight and activation rounding separate the two
    x = (rng.integers(0, 256, (40, *program.input_shape)) / 256).astype(np.float32)
    y = rng.integers(0, 4, 40)
    ev = ExactEvaluator(
        program, quantize_validation(program, x, y), [quantize_weights(program, weights)]
    )
    exact = ev.logits(np.array([[4096]]))[0] / 2**8
    reference = np.asarray(model(x, training=False), dtype=np.float64)
    assert np.abs(exact - reference).max() < 0.03
    assert (exact.argmax(axis=1) == reference.argmax(axis=1)).mean() > 0.9


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70_000) | st.text(max_size=8)
    | st.sampled_from(["same", "valid", "relu", "softmax", "sigmoid", "channels_first"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([MLP, CNN, STRIDED, ODD]),
    data=st.data(),
    value=JSON_VALUES,
)
def test_property_hostile_configs_raise_named_errors_or_compile_and_run(base, data, value):
    spec = json.loads(base)
    entries = spec["config"]["layers"]
    entry = entries[data.draw(st.integers(0, len(entries) - 1))]
    keys = sorted(entry["config"]) + ["units", "filters", "kernel_size", "strides", "pool_size"]
    entry["config"][data.draw(st.sampled_from(keys))] = value
    try:
        program = compile_architecture(json.dumps(spec))
    except EvaluatorError:
        return
    if program.macs > 10**6:
        return
    models = random_models(program, 2, 0)
    x, y = random_data(program, 3, 0)
    ev = ExactEvaluator(program, quantize_validation(program, x, y),
                        [quantize_weights(program, m) for m in models])  # fmt: skip
    assert ev.correct(np.array([[4096, 0], [2048, 2048]])).shape == (2,)
