"""The ClientApp: trains the job's model on this client's data; the FedCoin mod signs the reply.

Run each client as its own SuperNode with its own key and data:

    flower-supernode --insecure --superlink 127.0.0.1:9093 --port 9101 \\
        --node-config 'fedcoin-key="/abs/client1.pem" data-path="/abs/client1.npz"'
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcoin.application.flower.client import fedcoin_mod
from fedcoin_flower_example.task import build_model, load_client_data, train

app = ClientApp(mods=[fedcoin_mod])


def local_update(msg: Message, context: Context) -> Message:
    """Train from the server's arrays on this client's data; reply with the new arrays."""
    x, y = load_client_data(dict(context.node_config))
    return fit_reply(msg, x, y, int(context.run_config.get("local-epochs", 2)))


def fit_reply(msg: Message, x: np.ndarray, y: np.ndarray, epochs: int) -> Message:
    model = build_model()
    model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    server_round = int(msg.content["config"]["server-round"])
    loss = train(model, x, y, epochs, seed=server_round)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.get_weights()),
            # num-examples is the client's FedAvg weight: the mod signs it with the weights
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)


app.train()(local_update)
