"""The client side: a ClientApp mod that signs each training reply with the client's own key.

Register it with ``ClientApp(mods=[fedcoin_mod])`` and start the SuperNode with
``--node-config 'fedcoin-key="/path/to/client.pem"'``. The server's training message names the
FedCoin task and round in its ConfigRecord (``fedcoin-task-id``, ``fedcoin-round``, set by
``FedCoinFedAvg``); after the ClientApp trained, the mod signs
``(task id, round, sha256(weights blob), samples)`` — exactly the ``ClientUpdate`` digest the
chain verifies — and adds the public key and the signature in a ConfigRecord ``fedcoin``. The
server cannot alter the weights or the sample count, re-attribute the update to another key, or
replay it in another task or round: the chain rejects each with the rule it breaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, MessageType

from fedcoin.application.flower.serde import BadArrays, weights_of_record, weights_sha256
from fedcoin.data.keys import PrivateKey
from fedcoin.data.tx import ClientUpdate, ContentRef
from fedcoin.errors import FedCoinError

log = logging.getLogger("fedcoin.flower")

KEY_CONFIG = "fedcoin-key"
"""``node_config`` entry: path of the client's FedCoin key file."""
TASK_CONFIG = "fedcoin-task-id"
"""Training ConfigRecord entry: the task id, 64 hex digits."""
ROUND_CONFIG = "fedcoin-round"
"""Training ConfigRecord entry: the FedCoin round the reply is for."""
REPLY_RECORD = "fedcoin"
"""The reply's ConfigRecord with ``pubkey`` and ``signature`` (raw bytes)."""
SAMPLES_KEY = "num-examples"
"""The reply's MetricRecord entry with the training sample count (FedAvg's weight)."""
SIGNING_ERROR = 0xFC01
"""Flower error code of a reply the mod could not sign."""

CallNext = Callable[[Message, Context], Message]
Mod = Callable[[Message, Context, CallNext], Message]


class SigningError(FedCoinError):
    """The mod cannot sign this reply; the message says what to fix."""


def task_and_round(message: Message) -> tuple[bytes, int]:
    """The FedCoin task id and round a training message asks for."""
    for record in message.content.config_records.values():
        if TASK_CONFIG in record and ROUND_CONFIG in record:
            task_hex, round_ = record[TASK_CONFIG], record[ROUND_CONFIG]
            try:
                task_id = bytes.fromhex(str(task_hex))
            except ValueError:
                task_id = b""
            if len(task_id) != 32 or type(round_) is not int or round_ < 1:
                raise SigningError(f"bad FedCoin task {task_hex!r} or round {round_!r}")
            return task_id, round_
    raise SigningError(f"the training message names no FedCoin task ({TASK_CONFIG!r})")


def reply_samples(reply: Message, samples_key: str = SAMPLES_KEY) -> int:
    metrics = [r for r in reply.content.metric_records.values() if samples_key in r]
    if len(metrics) != 1:
        raise SigningError(f"the reply needs one MetricRecord with {samples_key!r}")
    value = metrics[0][samples_key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < 1:
        raise SigningError(f"{samples_key!r} must be a positive integer, got {value!r}")
    return value


def sign_reply(
    reply: Message, key: PrivateKey, task_id: bytes, round_: int, samples_key: str = SAMPLES_KEY
) -> None:
    """Add the ``fedcoin`` ConfigRecord: this key's signature of the reply's update."""
    records = list(reply.content.array_records.values())
    if len(records) != 1:
        raise SigningError("the reply needs exactly one ArrayRecord")
    weights = weights_of_record(records[0])
    samples = reply_samples(reply, samples_key)
    ref = ContentRef(weights_sha256(weights), 0, "")
    update = ClientUpdate.create(key, task_id, round_, ref, samples)
    reply.content.config_records[REPLY_RECORD] = ConfigRecord(
        {"pubkey": update.client_pubkey, "signature": update.signature}
    )


def signing_mod(
    key: PrivateKey | Callable[[Context], PrivateKey] | None = None,
    samples_key: str = SAMPLES_KEY,
) -> Mod:
    """A mod signing with the key file named by ``node_config['fedcoin-key']``.

    ``key`` overrides that: a key, or a function of the context giving one (the simulation
    engine has no per-node config, so a simulated client derives its key from its partition).
    """
    loaded: dict[str, PrivateKey] = {}

    def client_key(context: Context) -> PrivateKey:
        if isinstance(key, PrivateKey):
            return key
        if key is not None:
            return key(context)
        path = context.node_config.get(KEY_CONFIG)
        if not isinstance(path, str) or not path:
            raise SigningError(
                f"no FedCoin key: start the SuperNode with --node-config '{KEY_CONFIG}=\"PATH\"'"
            )
        if path not in loaded:
            loaded[path] = PrivateKey.load(Path(path).expanduser())
        return loaded[path]

    def mod(message: Message, context: Context, call_next: CallNext) -> Message:
        if message.metadata.message_type != MessageType.TRAIN:
            return call_next(message, context)
        try:
            signer = client_key(context)
            task_id, round_ = task_and_round(message)
        except FedCoinError as exc:
            log.error("FedCoin mod: %s", exc)
            return Message(Error(SIGNING_ERROR, str(exc)), reply_to=message)
        reply = call_next(message, context)
        if reply.has_error():
            return reply
        try:
            sign_reply(reply, signer, task_id, round_, samples_key)
        except (FedCoinError, BadArrays) as exc:
            log.error("FedCoin mod: cannot sign the reply: %s", exc)
            return Message(Error(SIGNING_ERROR, f"cannot sign the reply: {exc}"), reply_to=message)
        return reply

    return mod


fedcoin_mod: Mod = signing_mod()
"""The mod to register: signs with the key file of ``node_config['fedcoin-key']``."""
