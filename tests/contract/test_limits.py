"""Protocol limits on a task spec (DESIGN §4): each hostile field of issue 11 is refused by
name, and the defaults a publisher gets from the CLI stay inside every limit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.contract import limits
from fedcoin.contract.limits import (
    MAX_BUDGET,
    MAX_COMMIT_BLOCKS,
    MAX_EXACT_CLIENTS,
    MAX_MODEL_BYTES,
    MAX_REVEAL_BLOCKS,
    MAX_ROUNDS,
    MAX_VALIDATION_BYTES,
    MIN_COMMIT_BLOCKS,
    MIN_REVEAL_BLOCKS,
    WORK_UNIT_MACS,
    evaluations_per_round,
    miners_pool,
    required_miners_pay,
)
from fedcoin.contract.task import validate_spec
from fedcoin.data.tx import DEFAULT_POSAP
from fedcoin.errors import InvalidTaskSpec
from fedcoin.incentive.payouts import split_price
from tests.helpers import ALICE, apply_tx, make_genesis, make_publish, make_spec, ref

U32 = 2**32 - 1


def posap(**fields: int) -> dict[str, object]:
    return {"posap": replace(DEFAULT_POSAP, **fields)}


HOSTILE = [
    # (spec overrides, the field the refusal names)
    (posap(budget=U32), "posap.budget"),
    (posap(budget=MAX_BUDGET + 1), "posap.budget"),
    (posap(n_exact_max=MAX_EXACT_CLIENTS + 1), "posap.n_exact_max"),
    (posap(n_exact_max=255), "posap.n_exact_max"),
    (posap(commit_blocks=0), "posap.commit_blocks"),
    (posap(commit_blocks=MIN_COMMIT_BLOCKS - 1), "posap.commit_blocks"),
    (posap(commit_blocks=MAX_COMMIT_BLOCKS + 1), "posap.commit_blocks"),
    (posap(commit_blocks=U32), "posap.commit_blocks"),
    (posap(reveal_blocks=0), "posap.reveal_blocks"),
    (posap(reveal_blocks=MIN_REVEAL_BLOCKS - 1), "posap.reveal_blocks"),
    (posap(reveal_blocks=MAX_REVEAL_BLOCKS + 1), "posap.reveal_blocks"),
    (posap(reveal_blocks=U32), "posap.reveal_blocks"),
    ({"rounds": MAX_ROUNDS + 1, "price_per_round": 1}, "rounds"),
    ({"model": ref("model", MAX_MODEL_BYTES + 1)}, "model"),
    ({"validation": ref("validation", MAX_VALIDATION_BYTES + 1)}, "validation"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "field"), HOSTILE)
def test_hostile_spec_is_refused_by_name_and_changes_nothing(overrides, field) -> None:
    genesis = make_genesis().state()
    publish = make_publish(ALICE, 0, **overrides)
    with pytest.raises(InvalidTaskSpec, match=field):
        validate_spec(publish.body.spec, 1)  # type: ignore[union-attr]
    # Applied as a block would: refused, and the state it was applied to is untouched
    with pytest.raises(InvalidTaskSpec):
        apply_tx(genesis, publish, height=1)
    assert genesis.tasks == {} and genesis == make_genesis().state()


def test_limits_themselves_are_accepted() -> None:
    edge = replace(
        DEFAULT_POSAP,
        n_exact_max=MAX_EXACT_CLIENTS,
        budget=MAX_BUDGET,
        commit_blocks=MAX_COMMIT_BLOCKS,
        reveal_blocks=MAX_REVEAL_BLOCKS,
    )
    spec = make_spec(
        posap=edge,
        rounds=MAX_ROUNDS,
        model=ref("m", MAX_MODEL_BYTES),
        validation=ref("v", MAX_VALIDATION_BYTES),
    )
    validate_spec(spec, 1)
    shortest = replace(
        DEFAULT_POSAP, commit_blocks=MIN_COMMIT_BLOCKS, reveal_blocks=MIN_REVEAL_BLOCKS
    )
    validate_spec(make_spec(posap=shortest), 1)


def test_cli_default_posap_lies_within_the_limits() -> None:
    validate_spec(make_spec(posap=DEFAULT_POSAP, max_clients=60), 1)


def test_evaluations_per_round_is_the_largest_table_a_round_can_need() -> None:
    exact = replace(DEFAULT_POSAP, n_exact_max=10, budget=1024)
    # Up to n_exact_max clients: the exact table of 2^n coalitions at the most clients
    assert evaluations_per_round(make_spec(posap=exact, max_clients=4)) == 16
    assert evaluations_per_round(make_spec(posap=exact, max_clients=10)) == 1024
    # Beyond: the budget (but never less than the largest exact table below it)
    sampled = replace(exact, budget=4096)
    assert evaluations_per_round(make_spec(posap=sampled, max_clients=20)) == 4096
    small = replace(exact, n_exact_max=10, budget=200)
    assert evaluations_per_round(make_spec(posap=small, max_clients=20)) == 1024
    # A budget of at least 2^n makes the table exact: 2^n entries
    tiny = replace(exact, n_exact_max=2, budget=100)
    assert evaluations_per_round(make_spec(posap=tiny, max_clients=5)) == 32


@pytest.mark.parametrize("price", [1, 7, 9_999, 10_000_001, 2**64 - 1])
@pytest.mark.parametrize("split", [(7000, 1000, 2000), (3333, 3333, 3334), (0, 0, 10_000)])
def test_miners_pool_is_what_settlement_pays_the_miners(price, split) -> None:
    spec = make_spec(price_per_round=price, split_bps=split)
    assert miners_pool(spec) == split_price(price, split)[2]


def test_required_pay_rounds_up_to_a_whole_unit() -> None:
    assert required_miners_pay(0) == 0
    assert required_miners_pay(1) == limits.MIN_PAY_PER_WORK
    assert required_miners_pay(WORK_UNIT_MACS) == limits.MIN_PAY_PER_WORK
    assert required_miners_pay(WORK_UNIT_MACS + 1) == 2 * limits.MIN_PAY_PER_WORK
