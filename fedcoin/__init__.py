"""FedCoin: a peer-to-peer payment system for federated learning, with Proof of Shapley."""

__version__ = "0.1.0"
