"""The real PoSap verifier inside apply_block: content, FedAvg, shares, payouts by median SV."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedcoin.consensus.posap import PosapVerifier, make_share
from fedcoin.consensus.shapley import fixed_point_estimate
from fedcoin.consensus.utility import fedavg
from fedcoin.data.block import MAX_SHARES, PosapSection
from fedcoin.data.content import MemoryContent
from fedcoin.data.tensors import encode_bundle, encode_dataset, encode_weights
from fedcoin.data.tx import ClientUpdate, PublishTask, SubmitRound
from fedcoin.errors import (
    BadTxInBlock,
    NotFedAvg,
    RoundContentUnavailable,
    ShareContentUnavailable,
    TableEntryMismatch,
    WrongTensorShapes,
)
from tests.helpers import (
    ALICE,
    CLIENTS,
    MINER,
    MINER2,
    MINER3,
    MINERS,
    SERVER,
    ChainBuilder,
    make_genesis,
    make_spec,
    tx,
)

pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


@pytest.fixture(scope="module")
def fl_round():
    """A small real round: digits validation set, an MLP bundle, 4 clients' weights."""
    from fedcoin.application.datasets import load_digits_dataset, split_validation
    from fedcoin.application.training import build_mlp

    train, val = split_validation(load_digits_dataset(), 0.2, seed=0)
    arch, initial = build_mlp(64, 10, hidden=16, seed=0)
    rng = np.random.default_rng(0)
    # Clients: the initial model nudged along a common direction, one of them wildly off.
    direction = [rng.normal(0, 0.3, w.shape) for w in initial]
    clients = []
    for i in range(4):
        scale = 3.0 if i == 3 else 1.0
        clients.append([(w + scale * d + rng.normal(0, 0.05, w.shape)).astype(np.float32)
                        for w, d in zip(initial, direction, strict=False)])  # fmt: skip
    return arch, initial, clients, val


def setup_chain(fl_round, *, drop: int | None = None, bad_global: bool = False, reshape=None):
    arch, initial, clients, val = fl_round
    if reshape is not None:  # every client (hence the FedAvg) changed the same way
        clients = [[reshape(w) for w in c] for c in clients]
    content = MemoryContent()
    model = content.put(encode_bundle(arch, initial))
    validation = content.put(encode_dataset(val.x, val.y))
    refs = [content.put(encode_weights(w)) for w in clients]
    samples = [100, 120, 80, 90]
    global_w = fedavg(clients, samples)
    if bad_global:
        global_w = [w * 1.01 for w in global_w]
    global_ref = content.put(encode_weights(global_w))
    if drop is not None:
        del content.blobs[refs[drop].sha256]
    verifier = PosapVerifier(content)
    chain = ChainBuilder(make_genesis(), verifier=verifier)  # type: ignore[arg-type]
    spec = make_spec(model=model, validation=validation, min_clients=2, max_clients=4)
    publish = tx(ALICE, 0, PublishTask(spec))
    chain.add([publish])
    updates = tuple(
        ClientUpdate.create(c, publish.id, 1, r, s)
        for c, r, s in zip(CLIENTS, refs, samples, strict=False)
    )
    submit = tx(SERVER, 0, SubmitRound(publish.id, 1, updates, global_ref))
    return chain, verifier, submit, content


def queue_round(chain: ChainBuilder, verifier: PosapVerifier, submit, *miners):
    """Include the round; return its SV task and one honest share per miner."""
    chain.add([submit])
    sv_task = chain.state.queue[0]
    task = chain.state.tasks[sv_task.task_id]
    game = verifier.game(sv_task, task)
    return sv_task, tuple(make_share(sv_task, task.spec.posap, game, m) for m in miners)


def test_round_with_real_content_settles_by_median(fl_round) -> None:
    chain, verifier, submit, _ = setup_chain(fl_round)
    sv_task, shares = queue_round(chain, verifier, submit, MINER, MINER2, MINER3)
    applied = chain.add(posap=PosapSection(sv_task.sv_task_id, shares))
    assert applied.payout is not None
    assert applied.payout.sv == shares[0].estimate  # exact tables: every miner agrees
    sv = applied.payout.sv
    pays = [p for _, p in applied.payout.clients]
    # pay follows the positive SV
    order_sv = sorted(range(4), key=lambda i: max(sv[i], 0))
    assert [pays[i] for i in order_sv] == sorted(pays)
    assert chain.state.supply == chain.state.total_held()


def test_missing_weights_refuse_the_round(fl_round) -> None:
    chain, _, submit, _ = setup_chain(fl_round, drop=2)
    with pytest.raises(BadTxInBlock) as err:
        chain.make([submit])
    assert isinstance(err.value.__cause__, RoundContentUnavailable)


def test_global_model_that_is_not_fedavg_refuses_the_round(fl_round) -> None:
    chain, _, submit, _ = setup_chain(fl_round, bad_global=True)
    with pytest.raises(BadTxInBlock) as err:
        chain.make([submit])
    assert isinstance(err.value.__cause__, NotFedAvg)


def test_falsified_share_refuses_the_block(fl_round) -> None:
    chain, verifier, submit, _ = setup_chain(fl_round)
    sv_task, (honest,) = queue_round(chain, verifier, submit, MINER)
    table = list(honest.table)
    full = (1 << 4) - 1
    table[full] = (full, table[full][1] + 30)  # claims the grand coalition is far better
    forged = replace(honest, table=tuple(table), estimate=fixed_point_estimate(4, table)).signed(
        MINER
    )
    with pytest.raises(TableEntryMismatch):
        chain.make(posap=PosapSection(sv_task.sv_task_id, (forged,)))


def test_share_cannot_be_checked_without_content(fl_round) -> None:
    chain, verifier, submit, content = setup_chain(fl_round)
    sv_task, (share,) = queue_round(chain, verifier, submit, MINER)
    fresh = PosapVerifier(MemoryContent())  # a node that has none of the blobs
    chain.verifier = fresh  # type: ignore[assignment]
    with pytest.raises(ShareContentUnavailable):
        chain.make(posap=PosapSection(sv_task.sv_task_id, (share,)))
    assert content.blobs


@pytest.mark.parametrize(
    "reshape",
    [lambda w: w.reshape(-1), lambda w: w.astype(np.float64), lambda w: w[..., :1]],
    ids=["flattened", "float64", "truncated"],
)
def test_round_whose_tensors_do_not_fit_the_model_is_refused(fl_round, reshape) -> None:
    """Consistent but wrong shapes or dtypes pass FedAvg; they must not reach the SV queue,
    where building the game would fail on every miner."""
    chain, _, submit, _ = setup_chain(fl_round, reshape=reshape)
    with pytest.raises(BadTxInBlock) as err:
        chain.make([submit])
    assert isinstance(err.value.__cause__, WrongTensorShapes)
    assert not chain.state.queue


def test_a_block_carries_at_most_max_shares_the_same_on_every_node(fl_round) -> None:
    chain, verifier, submit, _ = setup_chain(fl_round)
    miners = MINERS[: MAX_SHARES + 1]  # genesis validators: only they may write shares
    sv_task, shares = queue_round(chain, verifier, submit, *miners)
    block, _ = chain.make(posap=PosapSection(sv_task.sv_task_id, shares))
    assert block.posap is not None
    keep = sorted(s.miner_pubkey for s in shares)[:MAX_SHARES]
    assert [s.miner_pubkey for s in block.posap.shares] == keep
    reversed_block, _ = chain.make(posap=PosapSection(sv_task.sv_task_id, shares[::-1]))
    assert reversed_block.posap == block.posap
    applied = chain.add(posap=PosapSection(sv_task.sv_task_id, shares))
    assert applied.payout is not None and len(applied.payout.miners) == MAX_SHARES
