"""The client mod on its own: what it signs, and the clear errors when it cannot sign."""

from __future__ import annotations

import numpy as np
from flwr.app import (  # noqa: I001
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedcoin.application.flower.client import REPLY_RECORD, SIGNING_ERROR, signing_mod
from fedcoin.application.flower.serde import weights_sha256
from fedcoin.data.tx import ClientUpdate, ContentRef
from tests.application.flower_support import LocalGrid, client_context
from tests.helpers import key

TASK = bytes(range(32))
WEIGHTS = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float32)]


def trained(msg: Message, context: Context) -> Message:
    arrays = [w + 1 for w in msg.content["arrays"].to_numpy_ndarrays()]
    metrics = MetricRecord({"num-examples": 42})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "m": metrics}), reply_to=msg)


def app_with(mod) -> ClientApp:
    app = ClientApp(mods=[mod])
    app.train()(trained)
    app.evaluate()(
        lambda msg, ctx: Message(RecordDict({"m": MetricRecord({"a": 1.0})}), reply_to=msg)
    )
    return app


def train_message(config: dict) -> Message:
    LocalGrid({})  # sets the identity a ServerApp process has
    content = RecordDict({"arrays": ArrayRecord(WEIGHTS), "config": ConfigRecord(config)})
    return Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)


def test_the_mod_signs_exactly_what_the_chain_verifies(tmp_path) -> None:
    client = key("mod-client")
    client.save(tmp_path / "c.pem")
    context = client_context(7, 0, 1)
    context.node_config["fedcoin-key"] = str(tmp_path / "c.pem")
    reply = app_with(signing_mod())(
        train_message({"fedcoin-task-id": TASK.hex(), "fedcoin-round": 3}), context
    )
    assert not reply.has_error()
    record = reply.content.config_records[REPLY_RECORD]
    assert record["pubkey"] == client.public
    sha = weights_sha256([w + 1 for w in WEIGHTS])
    update = ClientUpdate(client.public, ContentRef(sha, 1, ""), 42, record["signature"])
    assert update.signature_ok(TASK, 3)
    assert not update.signature_ok(TASK, 2)
    other = ClientUpdate(client.public, ContentRef(weights_sha256(WEIGHTS), 1, ""), 42,
                         record["signature"])  # fmt: skip
    assert not other.signature_ok(TASK, 3)


def test_without_a_key_or_a_task_the_reply_is_a_clear_error(tmp_path) -> None:
    context = client_context(7, 0, 1)
    no_key = app_with(signing_mod())(
        train_message({"fedcoin-task-id": TASK.hex(), "fedcoin-round": 1}), context
    )
    assert no_key.has_error() and no_key.error.code == SIGNING_ERROR
    assert "--node-config 'fedcoin-key=" in no_key.error.reason
    context.node_config["fedcoin-key"] = str(tmp_path / "absent.pem")
    missing = app_with(signing_mod())(
        train_message({"fedcoin-task-id": TASK.hex(), "fedcoin-round": 1}), context
    )
    assert missing.has_error() and "key file not found" in missing.error.reason
    no_task = app_with(signing_mod(key("k")))(train_message({"server-round": 1}), context)
    assert no_task.has_error() and "names no FedCoin task" in no_task.error.reason
    bad_round = app_with(signing_mod(key("k")))(
        train_message({"fedcoin-task-id": TASK.hex(), "fedcoin-round": 0}), context
    )
    assert bad_round.has_error() and "bad FedCoin task" in bad_round.error.reason


def test_evaluation_messages_pass_through_unsigned() -> None:
    LocalGrid({})
    content = RecordDict({"arrays": ArrayRecord(WEIGHTS), "config": ConfigRecord({})})
    message = Message(content=content, dst_node_id=7, message_type=MessageType.EVALUATE)
    reply = app_with(signing_mod(key("k")))(message, client_context(7, 0, 1))
    assert not reply.has_error() and REPLY_RECORD not in reply.content.config_records
