"""A Flower app whose clients are paid through FedCoin (see examples/flower/README.md)."""
