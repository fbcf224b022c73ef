"""The real PoSap oracle inside apply_block: content, FedAvg, tables, settlement on a real game."""

from __future__ import annotations

import numpy as np
import pytest

from fedcoin.consensus.posap import PosapVerifier
from fedcoin.consensus.table import table_estimate, table_root
from fedcoin.consensus.utility import fedavg
from fedcoin.consensus.valuation import schedule_of
from fedcoin.data.content import MemoryContent
from fedcoin.data.tensors import encode_bundle, encode_dataset, encode_weights
from fedcoin.data.tx import ClientUpdate, PublishTask, SubmitRound
from fedcoin.errors import (
    BadTxInBlock,
    NotFedAvg,
    RoundContentUnavailable,
    ShareContentUnavailable,
    WrongTensorShapes,
)
from tests.helpers import (
    ALICE,
    CLIENTS,
    MINER,
    MINER2,
    MINER3,
    SERVER,
    ChainBuilder,
    commit_txs,
    honest_table,
    make_genesis,
    make_spec,
    open_sv,
    reveal_txs,
    tx,
)

COMMITTEE = [MINER, MINER2, MINER3]

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
    genesis = make_genesis(validators=COMMITTEE)
    chain = ChainBuilder(genesis, verifier=verifier)  # type: ignore[arg-type]
    spec = make_spec(model=model, validation=validation, min_clients=2, max_clients=4)
    publish = tx(ALICE, 0, PublishTask(spec))
    chain.add([publish])
    updates = tuple(
        ClientUpdate.create(c, publish.id, 1, r, s)
        for c, r, s in zip(CLIENTS, refs, samples, strict=False)
    )
    submit = tx(SERVER, 0, SubmitRound(publish.id, 1, updates, global_ref))
    return chain, verifier, submit, content


def queue_round(chain: ChainBuilder, submit) -> bytes:
    """Include the round and wait for its schedule; return the SV task id."""
    chain.add([submit])
    while open_sv(chain.state, submit.id).mix == bytes(32):
        chain.add()
    return submit.id


def test_round_with_real_content_settles_through_commits_and_reveals(fl_round) -> None:
    chain, verifier, submit, _ = setup_chain(fl_round)
    sv_id = queue_round(chain, submit)
    sv = open_sv(chain.state, sv_id)
    task = chain.state.tasks[sv.task_id]
    schedule = schedule_of(sv, task.spec)
    table = honest_table(verifier, chain.state, sv_id)
    (payout,) = chain.value(sv_id).payouts
    game = verifier.game(sv, task)
    assert payout.sv == table_estimate(4, schedule, table, game.null_players)
    sv_values = payout.sv
    pays = [p for _, p in payout.clients]
    # pay follows the positive SV
    order_sv = sorted(range(4), key=lambda i: max(sv_values[i], 0))
    assert [pays[i] for i in order_sv] == sorted(pays)
    assert {a for a, _ in payout.miners} == {k.address for k in COMMITTEE}
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


def test_a_falsified_table_is_a_minority_root_slashed_by_one_exact_evaluation(fl_round) -> None:
    chain, verifier, submit, _ = setup_chain(fl_round)
    sv_id = queue_round(chain, submit)
    honest = honest_table(verifier, chain.state, sv_id)
    full = (1 << 4) - 1
    forged = list(honest)
    forged[full] += 30  # claims the grand coalition is far better
    bond = chain.state.bond_of(MINER3.public)
    (payout,) = chain.value(sv_id, {MINER: honest, MINER2: honest, MINER3: forged}).payouts
    assert MINER3.address not in {a for a, _ in payout.miners}
    assert chain.state.bond_of(MINER3.public) < bond
    assert chain.state.settled[0].root == table_root(sv_id, honest)


def test_a_reveal_cannot_be_checked_without_the_content(fl_round) -> None:
    chain, verifier, submit, content = setup_chain(fl_round)
    sv_id = queue_round(chain, submit)
    table = honest_table(verifier, chain.state, sv_id)
    tables = dict.fromkeys(COMMITTEE, table)
    chain.add(commit_txs(chain.state, sv_id, tables))
    chain.verifier = PosapVerifier(MemoryContent())  # type: ignore[assignment]  # has no blobs
    with pytest.raises(ShareContentUnavailable):
        chain.make(reveal_txs(chain.state, sv_id, tables))
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
