"""Pay a Flower job's clients through FedCoin (needs the optional extra ``fedcoin[flower]``).

- ``client.fedcoin_mod``: a ClientApp mod that signs every training reply with the client's
  own FedCoin key (``node_config["fedcoin-key"]``, a key file path; the key never leaves the
  client process), binding the task, the round, the weights' hash and the sample count.
- ``strategy.FedCoinFedAvg``: a FedAvg strategy that publishes (or joins) a FedCoin task with
  the job's Keras model and validation set, submits each round's signed updates and the FedAvg
  global model to a full node, and reports every client's Shapley value and pay.
- ``serde``: a Flower ``ArrayRecord`` ↔ FedCoin's canonical weights blob, the bytes both sides
  hash.
"""
