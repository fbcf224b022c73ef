"""The FL task contract: one test per rule of publish, submit round and close."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcoin.contract.limits import MAX_SAMPLES
from fedcoin.data.state import State, TaskStatus
from fedcoin.data.tx import ClientUpdate, SubmitRound
from fedcoin.errors import (
    BadUpdateSignature,
    ClientCountOutOfRange,
    ClientNotAllowed,
    DuplicateClient,
    DuplicateWeights,
    InsufficientBalance,
    InvalidTaskSpec,
    InvalidUpdate,
    NotFedAvg,
    NotPublisher,
    NotTaskServer,
    RoundContentUnavailable,
    RoundPending,
    TaskExpired,
    TaskNotClosable,
    TaskNotOpen,
    TooManySamples,
    UnknownTask,
    WrongRound,
)
from tests.helpers import (
    ALICE,
    BOB,
    CLIENTS,
    FC,
    SERVER,
    TableVerifier,
    apply_tx,
    global_ref,
    make_close,
    make_genesis,
    make_publish,
    make_spec,
    make_submit,
    make_updates,
    ref,
    tx,
)


def published(**overrides: object) -> tuple[State, bytes]:
    publish = make_publish(ALICE, 0, **overrides)
    return apply_tx(make_genesis().state(), publish, height=1), publish.id


def drop_queue(state: State) -> State:
    """As if the pending round had been settled (the block rules do that)."""
    return replace(state, queue=())


# --- publish ------------------------------------------------------------------------------
def test_publish_escrows_rounds_times_price() -> None:
    state, task_id = published(rounds=3, price_per_round=10 * FC)
    assert state.balance(ALICE.address) == 970 * FC
    task = state.tasks[task_id]
    assert task.escrow == 30 * FC and task.status == TaskStatus.OPEN
    assert task.publisher == ALICE.address and task.rounds_done == 0
    assert state.total_held() == state.supply


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"rounds": 0}, "rounds"),
        ({"price_per_round": 0}, "price_per_round"),
        ({"split_bps": (7000, 1000, 1000)}, "split_bps"),
        ({"min_clients": 0}, "min_clients"),
        ({"min_clients": 5, "max_clients": 4}, "min_clients"),
        ({"max_clients": 61}, "max_clients"),
        ({"deadline_height": 1}, "deadline_height"),
        ({"model": ref("m", size=0)}, "non-empty"),
        ({"max_samples": 0}, "max_samples"),
        ({"max_samples": MAX_SAMPLES + 1}, "max_samples"),
    ],
)
def test_publish_refuses_malformed_spec(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidTaskSpec, match=reason):
        published(**overrides)


def test_publish_refuses_sampling_budget_below_border() -> None:
    posap = replace(make_spec().posap, n_exact_max=4, budget=10)
    with pytest.raises(InvalidTaskSpec, match="budget"):
        published(posap=posap, max_clients=8)


def test_publish_needs_balance_for_escrow() -> None:
    with pytest.raises(InsufficientBalance):
        published(rounds=1000, price_per_round=10 * FC)


# --- submit round -------------------------------------------------------------------------
def test_submit_round_queues_an_sv_task_and_moves_global_model() -> None:
    state, task_id = published()
    submit = make_submit(task_id, 1, 0)
    after = apply_tx(state, submit, height=2)
    task = after.tasks[task_id]
    assert task.rounds_done == 1 and task.global_model == global_ref(task_id, 1)
    (sv,) = after.queue
    assert sv.sv_task_id == submit.id and sv.round == 1 and sv.n == 3
    assert sv.prev_global == make_spec().model and sv.price == 10 * FC


def test_submit_unknown_task() -> None:
    state, _ = published()
    with pytest.raises(UnknownTask):
        apply_tx(state, make_submit(b"\x07" * 32, 1, 0))


def test_only_the_server_submits() -> None:
    state, task_id = published()
    with pytest.raises(NotTaskServer):
        apply_tx(state, make_submit(task_id, 1, 0, sender=BOB))


def test_rounds_come_in_order() -> None:
    state, task_id = published()
    with pytest.raises(WrongRound):
        apply_tx(state, make_submit(task_id, 2, 0))


def test_two_rounds_open_at_a_time() -> None:
    state, task_id = published()
    state = apply_tx(state, make_submit(task_id, 1, 0))
    state = apply_tx(state, make_submit(task_id, 2, 1))  # the next round trains meanwhile
    with pytest.raises(RoundPending):
        apply_tx(state, make_submit(task_id, 3, 2))
    apply_tx(drop_queue(state), make_submit(task_id, 3, 2))


def test_no_round_after_the_last() -> None:
    state, task_id = published(rounds=1)
    state = drop_queue(apply_tx(state, make_submit(task_id, 1, 0)))
    assert state.tasks[task_id].status == TaskStatus.DONE
    with pytest.raises(TaskNotOpen):
        apply_tx(state, make_submit(task_id, 2, 1))


def test_no_round_after_deadline() -> None:
    state, task_id = published(deadline_height=10)
    apply_tx(state, make_submit(task_id, 1, 0), height=10)
    with pytest.raises(TaskExpired):
        apply_tx(state, make_submit(task_id, 1, 0), height=11)


@pytest.mark.parametrize("n", [1, 4])
def test_client_count_within_bounds(n: int) -> None:
    state, task_id = published(min_clients=2, max_clients=3)
    with pytest.raises(ClientCountOutOfRange):
        apply_tx(state, make_submit(task_id, 1, 0, n=n))


def submit_with(task_id: bytes, updates: tuple[ClientUpdate, ...]):
    return tx(SERVER, 0, SubmitRound(task_id, 1, updates, global_ref(task_id, 1)))


def test_each_client_once() -> None:
    state, task_id = published()
    u = make_updates(task_id, 1, 2)
    with pytest.raises(DuplicateClient):
        apply_tx(state, submit_with(task_id, (u[0], u[1], u[0])))


def test_no_two_updates_share_a_weights_hash() -> None:
    # a copy of another client's update under a new key is refused, not paid as a player
    state, task_id = published()
    u = make_updates(task_id, 1, 2)
    copy = ClientUpdate.create(CLIENTS[5], task_id, 1, u[0].weights, 50)
    with pytest.raises(DuplicateWeights) as caught:
        apply_tx(state, submit_with(task_id, (*u, copy)))
    assert "same weights.sha256" in str(caught.value)
    assert state.tasks[task_id].rounds_done == 0 and state.queue == ()


def test_consortium_task_refuses_unlisted_clients() -> None:
    listed = tuple(c.public for c in CLIENTS[:3])
    state, task_id = published(allowed_clients=listed)
    apply_tx(state, make_submit(task_id, 1, 0))  # the three listed clients are accepted
    outsider = ClientUpdate.create(CLIENTS[5], task_id, 1, ref("outsider"), 50)
    with pytest.raises(ClientNotAllowed) as caught:
        apply_tx(state, submit_with(task_id, (*make_updates(task_id, 1, 2), outsider)))
    assert "allowed_clients" in str(caught.value)


def test_open_task_takes_any_client() -> None:
    state, task_id = published()
    assert make_spec().allowed_clients == ()
    anyone = ClientUpdate.create(CLIENTS[5], task_id, 1, ref("anyone"), 50)
    after = apply_tx(state, submit_with(task_id, (*make_updates(task_id, 1, 2), anyone)))
    assert after.tasks[task_id].rounds_done == 1


def test_samples_must_be_positive() -> None:
    state, task_id = published()
    zero = ClientUpdate.create(CLIENTS[5], task_id, 1, ref("z"), 0)
    with pytest.raises(InvalidUpdate):
        apply_tx(state, submit_with(task_id, (*make_updates(task_id, 1, 2), zero)))


def test_samples_at_most_max_samples() -> None:
    state, task_id = published(max_samples=100)
    at_cap = ClientUpdate.create(CLIENTS[5], task_id, 1, ref("cap"), 100)
    after = apply_tx(state, submit_with(task_id, (*make_updates(task_id, 1, 2), at_cap)))
    assert after.tasks[task_id].rounds_done == 1
    over = ClientUpdate.create(CLIENTS[5], task_id, 1, ref("over"), 101)
    with pytest.raises(TooManySamples) as caught:
        apply_tx(state, submit_with(task_id, (*make_updates(task_id, 1, 2), over)))
    assert "max_samples" in str(caught.value) and "101" in str(caught.value)


def test_update_signed_for_another_round_is_refused() -> None:
    state, task_id = published()
    stale = make_updates(task_id, 2, 3)  # signed for round 2, submitted as round 1
    with pytest.raises(BadUpdateSignature):
        apply_tx(state, submit_with(task_id, stale))


def test_update_signed_for_another_task_is_refused() -> None:
    state, task_id = published()
    replayed = make_updates(b"\x01" * 32, 1, 3)
    with pytest.raises(BadUpdateSignature):
        apply_tx(state, submit_with(task_id, replayed))


def test_update_with_tampered_samples_is_refused() -> None:
    state, task_id = published()
    u = make_updates(task_id, 1, 3)
    inflated = replace(u[0], samples=u[0].samples * 10)
    with pytest.raises(BadUpdateSignature):
        apply_tx(state, submit_with(task_id, (inflated, u[1], u[2])))


def test_round_content_must_be_available() -> None:
    state, task_id = published()
    missing = make_updates(task_id, 1, 3)[1].weights.sha256
    with pytest.raises(RoundContentUnavailable):
        apply_tx(state, make_submit(task_id, 1, 0), verifier=TableVerifier(missing={missing}))


def test_global_model_must_be_fedavg() -> None:
    state, task_id = published()
    body = SubmitRound(task_id, 1, make_updates(task_id, 1, 3), ref("not-the-average"))
    with pytest.raises(NotFedAvg):
        apply_tx(state, tx(SERVER, 0, body))


# --- close --------------------------------------------------------------------------------
def test_close_after_all_rounds_refunds_the_rest() -> None:
    state, task_id = published(rounds=1)
    state = drop_queue(apply_tx(state, make_submit(task_id, 1, 0)))
    # The test skipped settlement, so the round's price is still in escrow and comes back.
    after = apply_tx(state, make_close(ALICE, task_id, 1))
    assert after.tasks[task_id].status == TaskStatus.CLOSED
    assert after.tasks[task_id].escrow == 0
    assert after.balance(ALICE.address) == 1_000 * FC


def test_close_after_deadline() -> None:
    state, task_id = published(deadline_height=10)
    with pytest.raises(TaskNotClosable):
        apply_tx(state, make_close(ALICE, task_id, 1), height=10)
    after = apply_tx(state, make_close(ALICE, task_id, 1), height=11)
    assert after.balance(ALICE.address) == 1_000 * FC


def test_close_waits_for_pending_round() -> None:
    state, task_id = published(rounds=1)
    state = apply_tx(state, make_submit(task_id, 1, 0))
    with pytest.raises(TaskNotClosable, match="pending"):
        apply_tx(state, make_close(ALICE, task_id, 1))


def test_only_publisher_closes() -> None:
    state, task_id = published(deadline_height=10)
    with pytest.raises(NotPublisher):
        apply_tx(state, make_close(BOB, task_id, 0), height=11)


def test_close_unknown_task() -> None:
    state, _ = published()
    with pytest.raises(UnknownTask):
        apply_tx(state, make_close(ALICE, b"\x03" * 32, 1))


def test_close_twice_is_refused() -> None:
    state, task_id = published(deadline_height=10)
    state = apply_tx(state, make_close(ALICE, task_id, 1), height=11)
    with pytest.raises(TaskNotOpen):
        apply_tx(state, make_close(ALICE, task_id, 2), height=12)
