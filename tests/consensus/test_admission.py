"""Admission of a task (DESIGN §4): each hostile bundle or validation set of issue 11 is refused
at PublishTask with its named rule, in a block, and the chain's state does not move."""

from __future__ import annotations

import numpy as np
import pytest

from fedcoin.consensus import admission
from fedcoin.consensus.admission import TaskAdmission
from fedcoin.consensus.evaluator import compile_architecture
from fedcoin.consensus.posap import PosapVerifier
from fedcoin.contract.limits import MAX_VALIDATION_SAMPLES, WORK_UNIT_MACS, evaluations_per_round
from fedcoin.data.content import MemoryContent
from fedcoin.data.tensors import encode_bundle, encode_dataset
from fedcoin.data.tx import ContentRef, PublishTask
from fedcoin.errors import (
    BadTxInBlock,
    BadValidationSet,
    InputOutOfRange,
    MinersUnderpaid,
    ModelTooLarge,
    TaskContentUnavailable,
    TaskWorkTooLarge,
    UndecodableTaskContent,
    UnsupportedActivation,
    UnsupportedArchitecture,
    UnsupportedLayer,
    ValidationSetTooLarge,
    WeightOutOfRange,
    WeightShapeMismatch,
)
from tests.consensus.exact_reference import dense, layer, sequential
from tests.helpers import ALICE, ChainBuilder, make_genesis, make_spec, tx

MLP = sequential([8], dense(6, "relu"), dense(3, "softmax"))
SAMPLES = 40


def weights(arch: str = MLP, scale: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    shapes = compile_architecture(arch).tensor_shapes
    return [rng.uniform(-scale, scale, s).astype(np.float32) for s in shapes]


def dataset(n: int = SAMPLES, features: int = 8, classes: int = 3):
    rng = np.random.default_rng(2)
    return rng.random((n, features)).astype(np.float32), rng.integers(0, classes, n)


def nan_at_0(array: np.ndarray) -> np.ndarray:
    out = array.copy()
    out.flat[0] = np.nan
    return out


def bundle(arch: str = MLP) -> bytes:
    """A bundle of ``arch`` with the MLP's weights (an unsupported ``arch`` never compiles)."""
    return encode_bundle(arch, weights())


def validation(x=None, y=None) -> bytes:
    dx, dy = dataset()
    return encode_dataset(dx if x is None else x, dy if y is None else y)


GOOD_W = weights()
X, Y = dataset()

HOSTILE = [
    # (model bundle, validation set, the rule that refuses it)
    (bundle(sequential([8], layer("BatchNormalization"), dense(3))), validation(),
     UnsupportedLayer),
    (bundle(sequential([8], dense(6, "sigmoid"), dense(3))), validation(), UnsupportedActivation),
    (bundle(sequential([8], dense(6, "tanh"), dense(3))), validation(), UnsupportedActivation),
    (encode_bundle(MLP, [GOOD_W[0].T.copy(), *GOOD_W[1:]]), validation(), WeightShapeMismatch),
    (encode_bundle(MLP, GOOD_W[:3]), validation(), WeightShapeMismatch),
    (encode_bundle(MLP, [w.astype(np.float64) for w in GOOD_W]), validation(),
     WeightShapeMismatch),
    (encode_bundle(MLP, [GOOD_W[0] * 0 + 8.0, *GOOD_W[1:]]), validation(), WeightOutOfRange),
    (encode_bundle(MLP, [nan_at_0(GOOD_W[0]), *GOOD_W[1:]]), validation(), WeightOutOfRange),
    (bundle(), validation(x=nan_at_0(X)), InputOutOfRange),
    (bundle(), validation(x=X * 0 + np.float32(200.0)), InputOutOfRange),
    (bundle(), validation(x=X.astype(np.float64)), BadValidationSet),
    (bundle(), validation(x=X[:, :7].copy()), BadValidationSet),
    (bundle(), validation(y=Y + 3), BadValidationSet),
    (bundle(), encode_dataset(*dataset(MAX_VALIDATION_SAMPLES + 1)), ValidationSetTooLarge),
    (b"not a bundle", validation(), UndecodableTaskContent),
    (bundle(), bundle(), UndecodableTaskContent),
    (bundle("[" * 10_000), validation(), UnsupportedArchitecture),
    (bundle('{"class_name": "Sequential", "config": {"layers": 7}}'), validation(),
     UnsupportedArchitecture),
]  # fmt: skip


def spec_for(content: MemoryContent, model: bytes, val: bytes, **overrides: object):
    return make_spec(model=content.put(model), validation=content.put(val), **overrides)


def test_a_sound_task_is_admitted_and_remembered() -> None:
    content = MemoryContent()
    spec = spec_for(content, bundle(), validation())
    checker = TaskAdmission(content)
    checker.check_task(spec)
    content.blobs.clear()  # the pair that passed is not fetched or compiled again
    checker.check_task(spec)
    with pytest.raises(TaskContentUnavailable):
        TaskAdmission(content).check_task(spec)


@pytest.mark.parametrize(("model", "val", "rule"), HOSTILE)
def test_hostile_content_is_refused_with_its_rule_in_a_block(model, val, rule) -> None:
    content = MemoryContent()
    spec = spec_for(content, model, val)
    with pytest.raises(rule) as refused:
        TaskAdmission(content).check_task(spec)
    assert refused.value.rule == rule.__name__
    chain = ChainBuilder(make_genesis(), verifier=PosapVerifier(content))  # type: ignore[arg-type]
    before = chain.state
    with pytest.raises(BadTxInBlock) as in_block:
        chain.add([tx(ALICE, 0, PublishTask(spec))])
    assert in_block.value.details["rule"] == refused.value.rule
    assert chain.state == before and chain.state.tasks == {}


@pytest.mark.parametrize("missing", ["model", "validation"])
def test_content_never_uploaded_means_the_task_never_opens(missing) -> None:
    content = MemoryContent()
    spec = spec_for(content, bundle(), validation())
    del content.blobs[getattr(spec, missing).sha256]
    with pytest.raises(TaskContentUnavailable, match=missing):
        TaskAdmission(content).check_task(spec)


def test_a_ref_with_the_wrong_size_is_unavailable() -> None:
    content = MemoryContent()
    spec = spec_for(content, bundle(), validation())
    wrong = ContentRef(spec.validation.sha256, spec.validation.size - 1, "")
    with pytest.raises(TaskContentUnavailable):
        TaskAdmission(content).check_task(make_spec(model=spec.model, validation=wrong))


def test_miners_pool_must_pay_for_the_work() -> None:
    content = MemoryContent()
    spec = spec_for(content, bundle(), validation(), split_bps=(10_000, 0, 0))
    with pytest.raises(MinersUnderpaid):
        TaskAdmission(content).check_task(spec)
    # Exactly MIN_PAY_PER_WORK per unit of work passes; one base unit less does not
    macs = compile_architecture(MLP).macs
    work = evaluations_per_round(spec) * macs * SAMPLES
    needed = -(-work // WORK_UNIT_MACS)
    to_miners = (0, 0, 10_000)
    TaskAdmission(content).check_task(
        spec_for(content, bundle(), validation(), split_bps=to_miners, price_per_round=needed)
    )
    with pytest.raises(MinersUnderpaid):
        TaskAdmission(content).check_task(
            spec_for(
                content, bundle(), validation(), split_bps=to_miners, price_per_round=needed - 1
            )
        )


def test_parameter_and_work_limits(monkeypatch) -> None:
    content = MemoryContent()
    spec = spec_for(content, bundle(), validation())
    program = compile_architecture(MLP)
    monkeypatch.setattr(admission, "MAX_EVALUATION_MACS", program.macs * SAMPLES - 1)
    with pytest.raises(TaskWorkTooLarge):
        TaskAdmission(content).check_task(spec)
    params = sum(int(np.prod(s)) for s in program.tensor_shapes)
    monkeypatch.setattr(admission, "MAX_PARAMETERS", params - 1)
    with pytest.raises(ModelTooLarge):
        TaskAdmission(content).check_task(spec)
