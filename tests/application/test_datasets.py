"""Offline FL data: loaders and seeded partitioners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcoin.application.datasets import (
    ClientKind,
    corrupt_labels,
    load_digits_dataset,
    load_mnist_npz,
    make_clients,
    partition_dirichlet,
    partition_iid,
    split_validation,
)
from fedcoin.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_digits_load_offline(digits) -> None:
    assert digits.x.shape == (1797, 64) and digits.classes == 10
    assert 0.0 <= digits.x.min() and digits.x.max() <= 1.0


def test_validation_split_is_disjoint_and_seeded(digits) -> None:
    train, val = split_validation(digits, 0.2, seed=3)
    assert len(train) + len(val) == len(digits)
    assert abs(len(val) - 359) <= 1
    again, _ = split_validation(digits, 0.2, seed=3)
    assert np.array_equal(train.x, again.x)


def test_iid_partition_covers_everything_once(digits) -> None:
    parts = partition_iid(digits, 5, seed=1)
    assert sum(len(p) for p in parts) == len(digits)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_dirichlet_small_alpha_skews_labels(digits) -> None:
    skewed = partition_dirichlet(digits, 5, alpha=0.1, seed=0)
    even = partition_dirichlet(digits, 5, alpha=100.0, seed=0)
    assert sum(len(p) for p in skewed) == len(digits)
    assert all(len(p) > 0 for p in skewed)

    def top_label_share(parts) -> float:
        return float(np.mean([np.bincount(p.y, minlength=10).max() / len(p) for p in parts]))

    assert top_label_share(skewed) > top_label_share(even) + 0.2
    with pytest.raises(ConfigError):
        partition_dirichlet(digits, 5, alpha=0, seed=0)


def test_label_noise_changes_about_the_asked_fraction(digits) -> None:
    noisy = corrupt_labels(digits, 0.5, seed=0)
    changed = float(np.mean(noisy.y != digits.y))
    assert 0.45 < changed < 0.55
    assert np.array_equal(noisy.x, digits.x)


def test_client_kinds_in_order(digits) -> None:
    shards = make_clients(digits, clients=6, noisy=2, free_riders=1, duplicates=1, seed=0)
    kinds = [s.kind for s in shards]
    assert kinds == [ClientKind.HONEST] * 2 + [ClientKind.NOISY] * 2 + [
        ClientKind.FREE_RIDER,
        ClientKind.DUPLICATE,
    ]
    assert np.array_equal(shards[-1].data.x, shards[0].data.x)
    with pytest.raises(ConfigError):
        make_clients(digits, clients=2, noisy=2, free_riders=1)


def test_mnist_npz_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    images = rng.integers(0, 256, (25, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 25)
    np.savez(path, x_train=images[:20], y_train=labels[:20], x_test=images[20:], y_test=labels[20:])
    train, test = load_mnist_npz(path)
    assert train.x.shape == (20, 784) and test.x.shape == (5, 784)
    assert train.x.max() <= 1.0
    with pytest.raises(ConfigError, match="not found"):
        load_mnist_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(ConfigError, match="x_train"):
        load_mnist_npz(bad)
