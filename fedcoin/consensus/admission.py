"""Admission of a task (DESIGN §4, first bullet): the content checks of a ``PublishTask``.

``contract.task.validate_spec`` bounds a spec's fields; what it names must be checked too,
before the task opens, so that nothing a round of it later puts in the SV queue can stop a
validator and the publisher cannot cause a void:

1. the model bundle and the validation set are available (content-addressed: sha256 and size);
2. both decode;
3. the bundle compiles with the exact evaluator and its initial weights respect the evaluator's
   bounds (shapes, float32, finite, ``|Q(w)| ≤ W_MAX``), within ``MAX_PARAMETERS``;
4. the validation set is float32 without NaN/Inf, ``|x_q| ≤ X_MAX``, matches the model's input
   shape and output (labels it can score), and holds at most ``MAX_VALIDATION_SAMPLES``; with it,
   the first layer's accumulator bound holds;
5. one coalition's evaluation costs at most ``MAX_EVALUATION_MACS``;
6. the miners' pool of a round pays ``MIN_PAY_PER_WORK`` for the round's work.

Steps 1–5 depend only on the two blobs: ``TaskAdmission`` remembers the pairs that passed, so
the mempool, the proposer and block import re-check a task for the price of step 6.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from math import prod

from fedcoin.consensus.quantize import compile_bundle, quantize_validation
from fedcoin.contract.limits import (
    MAX_EVALUATION_MACS,
    MAX_PARAMETERS,
    MAX_VALIDATION_SAMPLES,
    miners_pool,
    required_miners_pay,
    round_work,
)
from fedcoin.data.content import ContentSource, resolve
from fedcoin.data.tensors import decode_bundle, decode_dataset
from fedcoin.data.tx import ContentRef, TaskSpec
from fedcoin.errors import (
    DecodeError,
    MinersUnderpaid,
    ModelTooLarge,
    TaskContentUnavailable,
    TaskWorkTooLarge,
    UndecodableTaskContent,
    ValidationSetTooLarge,
)

CONTENT_REMEMBERED = 64


@dataclass(frozen=True, slots=True)
class TaskContent:
    """What admission learnt of a (model, validation) pair that passed steps 1–5."""

    macs_per_sample: int
    """Multiply-accumulates of one forward pass of one sample."""
    samples: int
    """Size of the validation set."""


def _ref_key(ref: ContentRef) -> bytes:
    """What names a blob for ``resolve``: its sha256 and its size (not the cid hint)."""
    return ref.sha256 + ref.size.to_bytes(8, "big")


def _blob(content: ContentSource, ref: ContentRef, which: str) -> bytes:
    data = resolve(content, ref)  # sha256 and size
    # The blob is available, with its hash and size
    if data is None:
        raise TaskContentUnavailable(which=which, sha256=ref.sha256)
    return data


def check_content(model: ContentRef, validation: ContentRef, content: ContentSource) -> TaskContent:
    """Steps 1–5: raise the ``ContractError`` the model or the validation set breaks."""
    model_blob = _blob(content, model, "model")
    validation_blob = _blob(content, validation, "validation")
    try:
        architecture, weights = decode_bundle(model_blob)
        x, y = decode_dataset(validation_blob)
    except DecodeError as exc:
        raise UndecodableTaskContent(reason=str(exc)) from None
    # The bundle compiles with the exact evaluator; its weights are within its bounds
    try:
        program = compile_bundle(architecture, weights)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        # a JSON shape the compiler's named checks did not foresee: refused all the same
        raise UndecodableTaskContent(reason=f"architecture: {type(exc).__name__}") from None
    # The model has at most MAX_PARAMETERS weights
    parameters = sum(prod(shape) for shape in program.tensor_shapes)
    if parameters > MAX_PARAMETERS:
        raise ModelTooLarge(params=parameters, limit=MAX_PARAMETERS)
    # The validation set is bounded (checked before its values are quantised)
    samples = int(x.shape[0]) if x.ndim else 0
    if samples > MAX_VALIDATION_SAMPLES:
        raise ValidationSetTooLarge(samples=samples, limit=MAX_VALIDATION_SAMPLES)
    # It fits the model: float32 inputs of its shape, finite and within X_MAX, scorable labels
    quantize_validation(program, x, y)
    # One coalition's evaluation is bounded
    if program.macs * samples > MAX_EVALUATION_MACS:
        raise TaskWorkTooLarge(macs=program.macs * samples, limit=MAX_EVALUATION_MACS)
    return TaskContent(program.macs, samples)


def check_pay(spec: TaskSpec, facts: TaskContent) -> int:
    """Step 6: the miners' pool of one round pays for the round's work; return that work."""
    work = round_work(spec, facts.macs_per_sample, facts.samples)
    needed = required_miners_pay(work)
    pool = miners_pool(spec)
    # miners ≥ MIN_PAY_PER_WORK · work(task)
    if pool < needed:
        raise MinersUnderpaid(miners=pool, needed=needed, work_macs=work)
    return work


class TaskAdmission:
    """The content checks of ``PublishTask`` against a content source, with a memory of the
    (model, validation) pairs that passed. Safe to call from worker threads."""

    def __init__(self, content: ContentSource, remembered: int = CONTENT_REMEMBERED) -> None:
        self.content = content
        self.remembered = remembered
        self.passed: OrderedDict[tuple[bytes, bytes], TaskContent] = OrderedDict()
        self._lock = threading.Lock()

    def check_task(self, spec: TaskSpec) -> int:
        """Raise the ``ContractError`` a task's content or pay breaks; when it may open, return
        one round's work in multiply-accumulates."""
        key = (_ref_key(spec.model), _ref_key(spec.validation))
        with self._lock:
            facts = self.passed.get(key)
            if facts is not None:
                self.passed.move_to_end(key)
        if facts is None:
            facts = check_content(spec.model, spec.validation, self.content)
            with self._lock:
                self.passed[key] = facts
                while len(self.passed) > self.remembered:
                    self.passed.popitem(last=False)
        return check_pay(spec, facts)
