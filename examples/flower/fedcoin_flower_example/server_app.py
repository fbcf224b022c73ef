"""The ServerApp: FedAvg whose rounds are FedCoin rounds (FedCoinFedAvg).

Run config (``--run-config``): ``fedcoin-node`` (a full node's API URL), ``fedcoin-key`` (the FL
server's key file; the task's publisher and server), ``task-file`` (where the task id is kept,
so a restarted job resumes its task), ``num-server-rounds``, ``price-fc`` (per round),
``min-clients``, ``report`` (a JSON file with every settled round's SVs and pay).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedcoin.application.flower.ledger import TaskOffer
from fedcoin.application.flower.strategy import FedCoinFedAvg
from fedcoin.data.keys import PrivateKey
from fedcoin_flower_example.task import build_model, validation_set

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds = int(cfg["num-server-rounds"])
    clients = int(cfg["min-clients"])
    model = build_model()
    offer = TaskOffer(
        architecture=model.to_json(),
        initial_weights=model.get_weights(),
        validation=validation_set(),
        rounds=rounds,
        price_per_round=int(Decimal(str(cfg["price-fc"])) * 1_000_000),
        max_clients=max(clients, int(cfg.get("max-clients", clients))),
    )
    strategy = FedCoinFedAvg(
        node_url=str(cfg["fedcoin-node"]),
        server_key=PrivateKey.load(Path(str(cfg["fedcoin-key"])).expanduser()),
        offer=offer,
        task_file=Path(str(cfg["task-file"])).expanduser(),
        fraction_evaluate=0.0,
        min_train_nodes=clients,
        min_available_nodes=clients,
    )
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.get_weights()), num_rounds=rounds)
    report = str(cfg.get("report", ""))
    if report:
        rows = [vars(s) for s in strategy.settled]
        out = {"task_id": (strategy.task_id or b"").hex(), "rounds": rows}
        Path(report).expanduser().write_text(json.dumps(out, indent=2))
