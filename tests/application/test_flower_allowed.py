"""The Flower strategy leaves out replies the chain would refuse the whole round for: unlisted
clients of a consortium task (ClientNotAllowed), claims above max_samples (TooManySamples)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is a declared dependency")

from fedcoin.application.flower.ledger import SignedUpdate, TaskOffer  # noqa: E402
from fedcoin.application.flower.serde import weights_blob  # noqa: E402
from fedcoin.application.flower.strategy import FedCoinFedAvg  # noqa: E402
from fedcoin.data.tx import ClientUpdate, ContentRef  # noqa: E402
from tests.application.cluster import CLIENT_KEYS, SERVER_KEY  # noqa: E402

TASK = b"\x07" * 32


def signed(index: int, value: float, samples: int = 10) -> SignedUpdate:
    weights = [np.full((2, 2), value, np.float32)]
    blob = weights_blob(weights)
    ref = ContentRef(hashlib.sha256(blob).digest(), len(blob), "")
    update = ClientUpdate.create(CLIENT_KEYS[index], TASK, 1, ref, samples)
    return SignedUpdate(update.client_pubkey, update.signature, samples, weights, blob)


@pytest.mark.parametrize("listed", [(), (0,)])
def test_unlisted_clients_are_left_out_of_a_consortium_round(listed: tuple[int, ...]) -> None:
    offer = TaskOffer(
        architecture="{}", initial_weights=[np.zeros((2, 2), np.float32)], validation=None,  # type: ignore[arg-type]
        rounds=1, price_per_round=1, allowed_clients=tuple(CLIENT_KEYS[i].public for i in listed),
    )  # fmt: skip
    s = FedCoinFedAvg(node_url="http://127.0.0.1:9", server_key=SERVER_KEY, offer=offer)
    s.task_id, s.round, s.global_weights = TASK, 0, [np.zeros((2, 2), np.float32)]
    assert s._problem(signed(0, 1.0), set(), set()) is None
    outsider = s._problem(signed(1, 2.0), set(), set())
    if listed:
        assert outsider is not None and "allowed_clients" in outsider
    else:  # an open task takes anyone
        assert outsider is None


def test_updates_claiming_more_than_max_samples_are_left_out() -> None:
    # the chain would refuse the whole round with TooManySamples
    offer = TaskOffer(
        architecture="{}", initial_weights=[np.zeros((2, 2), np.float32)], validation=None,  # type: ignore[arg-type]
        rounds=1, price_per_round=1, max_samples=100,
    )  # fmt: skip
    s = FedCoinFedAvg(node_url="http://127.0.0.1:9", server_key=SERVER_KEY, offer=offer)
    s.task_id, s.round, s.global_weights = TASK, 0, [np.zeros((2, 2), np.float32)]
    assert s._problem(signed(0, 1.0, samples=100), set(), set()) is None
    over = s._problem(signed(1, 2.0, samples=101), set(), set())
    assert over is not None and "101" in over
