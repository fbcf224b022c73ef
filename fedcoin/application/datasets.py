"""Offline data for FL games: loaders and seeded partitioners into client shards.

- ``load_digits_dataset``: scikit-learn's bundled 8×8 digits (1 797 images, no download).
- ``load_mnist_npz``: MNIST from a local ``.npz`` with ``x_train, y_train, x_test, y_test``.
- ``split_validation``: a held-out validation set (it defines U(S) for PoSap).
- Partitioners: IID, Dirichlet non-IID (``alpha``), and client kinds — honest, label noise,
  free rider (trains nothing, returns the global model), duplicate (a copy of another's shard).

Every function takes its seed as an argument and uses its own ``numpy.random.Generator``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcoin.errors import ConfigError


class ClientKind(enum.StrEnum):
    HONEST = "honest"
    NOISY = "noisy"
    FREE_RIDER = "free-rider"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    """Features, float32, one row per sample."""
    y: np.ndarray
    """Integer labels."""
    classes: int
    """Number of classes."""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.classes)


@dataclass(frozen=True)
class ClientShard:
    kind: ClientKind
    """How the client behaves."""
    data: Dataset
    """Its local training data (labels already corrupted for a noisy client)."""


def load_digits_dataset() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return Dataset(x, bunch.target.astype(np.int64), 10)


def load_mnist_npz(path: str | Path) -> tuple[Dataset, Dataset]:
    """(train, test) from a local ``mnist.npz``; flattens and scales images to [0, 1]."""
    target = Path(path)
    if not target.is_file():
        raise ConfigError(f"MNIST file not found: {target} (expected an .npz with x_train, …)")
    try:
        with np.load(target, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError(
            f"{target} is not an MNIST .npz with x_train, y_train, x_test, y_test: {exc}"
        ) from None

    def prep(x: np.ndarray, y: np.ndarray) -> Dataset:
        flat = x.reshape(x.shape[0], -1).astype(np.float32)
        if flat.max(initial=0) > 1.0:
            flat /= 255.0
        return Dataset(flat, y.astype(np.int64), int(max(y.max(initial=0), 9)) + 1)

    return prep(arrays["x_train"], arrays["y_train"]), prep(arrays["x_test"], arrays["y_test"])


def from_arrays(x: np.ndarray, y: np.ndarray) -> Dataset:
    if len(x) != len(y):
        raise ConfigError("x and y must have one label per sample")
    return Dataset(
        np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64), int(np.max(y)) + 1
    )


def load_task_data(
    dataset: str, mnist_path: str | Path | None, seed: int
) -> tuple[Dataset, Dataset]:
    """(train, validation) for a named dataset: ``digits`` (bundled, 20 % held out by
    ``seed``) or ``mnist`` (its own test set from a local ``.npz``)."""
    if dataset == "mnist":
        if mnist_path is None:
            raise ConfigError("--dataset mnist needs --mnist-path FILE")
        return load_mnist_npz(mnist_path)
    if dataset != "digits":
        raise ConfigError(f"unknown dataset {dataset!r} (digits or mnist)")
    return split_validation(load_digits_dataset(), 0.2, seed)


def split_validation(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, validation), shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    cut = int(round(len(data) * (1.0 - fraction)))
    return data.subset(order[:cut]), data.subset(order[cut:])


def partition_iid(data: Dataset, clients: int, seed: int) -> list[Dataset]:
    rng = np.random.default_rng(seed)
    return [data.subset(part) for part in np.array_split(rng.permutation(len(data)), clients)]


def partition_dirichlet(data: Dataset, clients: int, alpha: float, seed: int) -> list[Dataset]:
    """Label-skewed shards: each class is split among clients by Dirichlet(alpha) proportions.

    Small ``alpha`` is very non-IID. Every client gets at least one sample.
    """
    if alpha <= 0:
        raise ConfigError("Dirichlet alpha must be positive")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(clients)]
    for label in range(data.classes):
        idx = rng.permutation(np.flatnonzero(data.y == label))
        if len(idx) == 0:
            continue
        props = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(chunk.tolist())
    # No empty client: move one sample from the largest shard.
    for client in range(clients):
        if not parts[client]:
            donor = max(range(clients), key=lambda c: len(parts[c]))
            parts[client].append(parts[donor].pop())
    return [data.subset(np.array(sorted(p))) for p in parts]


def corrupt_labels(data: Dataset, fraction: float, seed: int) -> Dataset:
    """Replace the labels of ``fraction`` of the samples with a different random class."""
    rng = np.random.default_rng(seed)
    y = data.y.copy()
    flip = rng.random(len(y)) < fraction
    y[flip] = (y[flip] + rng.integers(1, data.classes, flip.sum())) % data.classes
    return Dataset(data.x, y, data.classes)


def make_clients(
    train: Dataset,
    *,
    clients: int,
    noisy: int = 0,
    free_riders: int = 0,
    duplicates: int = 0,
    non_iid_alpha: float | None = None,
    noise_fraction: float = 0.8,
    seed: int = 0,
) -> list[ClientShard]:
    """Shards for ``clients`` clients; the last ones are the noisy, free-riding and duplicate
    clients, in that order, so honest clients come first."""
    special = noisy + free_riders + duplicates
    if special > clients:
        raise ConfigError(f"{special} special clients but only {clients} clients")
    if duplicates and clients - duplicates < 1:
        raise ConfigError("a duplicate client needs an original to copy")
    originals = clients - duplicates
    shards = (
        partition_dirichlet(train, originals, non_iid_alpha, seed)
        if non_iid_alpha is not None
        else partition_iid(train, originals, seed)
    )
    out: list[ClientShard] = []
    honest = originals - noisy - free_riders
    for i, shard in enumerate(shards):
        if i < honest:
            out.append(ClientShard(ClientKind.HONEST, shard))
        elif i < honest + noisy:
            out.append(
                ClientShard(ClientKind.NOISY, corrupt_labels(shard, noise_fraction, seed + i))
            )
        else:
            out.append(ClientShard(ClientKind.FREE_RIDER, shard))
    for d in range(duplicates):
        out.append(ClientShard(ClientKind.DUPLICATE, out[d % max(honest, 1)].data))
    return out
