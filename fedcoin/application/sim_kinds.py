"""The simulator's client kinds (issue 12): who manipulates, and how.

``make_roster`` turns the ``simulate`` flags into the FL server's clients: their shards, keys,
the sample counts they report and a ``Behaviour`` for the ones that do not simply train.

- ``free-rider``: sends the global model g unchanged (paid exactly 0 by the null-player game);
- ``delta-free-rider``: sends g plus the last global change, ``g + (g − g_prev)`` (round 1,
  with no change yet: like a disguised free rider);
- ``disguised-free-rider``: sends g plus small Gaussian noise (σ = 10⁻³);
- ``sybil i/K``: client 0's data split over K keys, each trained separately;
- ``server-copy``: a copy of client 0's update plus noise of its own spread, under a key of the
  FL server (``--allowed-clients`` lists only the real clients, so the chain refuses it);
- ``inflate×X``: the last honest client reports X times its samples;
- ``label-flipper``: trains on labels shifted by one class; ``noisy``: 80 % random labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fedcoin.application.datasets import ClientKind, ClientShard, Dataset, make_clients
from fedcoin.application.fl_server import Behaviour
from fedcoin.data.keys import PrivateKey
from fedcoin.errors import ConfigError

DISGUISE_SIGMA = 1e-3
Weights = list[np.ndarray]


@dataclass(frozen=True)
class KindCounts:
    """How many clients of each manipulating kind (the ``simulate`` flags)."""

    noisy: int = 0
    free_riders: int = 0
    delta_free_riders: int = 0
    disguised_free_riders: int = 0
    label_flippers: int = 0
    sybil_split: int = 0
    """K ≥ 2: client 0 splits its data over K keys (0: nobody splits)."""
    server_copies: int = 0
    """K: noised copies of client 0's update under the FL server's own keys."""
    inflate_samples: int = 0
    """X ≥ 2: the last honest client reports X× its samples (0: nobody inflates)."""


@dataclass
class Roster:
    shards: list[ClientShard]
    keys: list[PrivateKey]
    kinds: list[str]
    claims: list[int]
    allowed: tuple[bytes, ...]
    """The real clients' keys: what a consortium task (``--allowed-clients``) lists."""
    behaviours: dict[int, str] = field(default_factory=dict)
    seed: int = 0

    def behave(self) -> Behaviour:
        rng = np.random.default_rng(self.seed + 7)
        kinds = self.behaviours

        def act(i: int, g: Weights, prev: Weights | None, done: list[Weights]) -> Weights | None:
            kind = kinds.get(i)
            if kind == "delta-free-rider" and prev is not None:
                return [
                    (2 * a.astype(np.float64) - b).astype(np.float32)
                    for a, b in zip(g, prev, strict=True)
                ]
            if kind in ("disguised-free-rider", "delta-free-rider"):  # delta: no change yet
                return [(t + rng.normal(0, DISGUISE_SIGMA, t.shape)).astype(np.float32) for t in g]
            if kind == "server-copy":
                return [
                    (o + rng.normal(0, float(np.std(o - t)) + 1e-9, o.shape)).astype(np.float32)
                    for o, t in zip(done[0], g, strict=True)
                ]
            return None

        return act


def key_for(seed: int, role: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(f"fedcoin/sim/{seed}/{role}".encode()).digest())


def make_roster(
    train: Dataset, clients: int, counts: KindCounts, non_iid: float | None, seed: int
) -> Roster:
    """The clients in order: honest (client 0 first), label flippers, noisy, free riders."""
    c = counts
    riders = c.free_riders + c.delta_free_riders + c.disguised_free_riders
    if c.free_riders > 1:
        raise ConfigError("at most one exact free rider: two would send the same weights")
    if c.sybil_split == 1 or c.inflate_samples == 1 or min(vars(c).values()) < 0:
        raise ConfigError("--sybil-split and --inflate-samples take at least 2, counts ≥ 0")
    if c.noisy + riders + c.label_flippers + (c.sybil_split > 0) > clients:
        raise ConfigError("more manipulating clients than clients")
    base = make_clients(
        train, clients=clients, noisy=c.noisy, free_riders=riders, non_iid_alpha=non_iid,
        seed=seed,
    )  # fmt: skip
    kinds = [str(s.kind) for s in base]
    honest = clients - c.noisy - riders
    for j in range(c.label_flippers):  # the last honest clients flip their labels
        i = honest - 1 - j
        d = base[i].data
        base[i] = ClientShard(ClientKind.HONEST, Dataset(d.x, (d.y + 1) % d.classes, d.classes))
        kinds[i] = "label-flipper"
    first_rider = clients - riders
    behaviours: dict[int, str] = {}
    for j in range(riders):
        if j >= c.free_riders:
            disguised = j >= c.free_riders + c.delta_free_riders
            kinds[first_rider + j] = "disguised-free-rider" if disguised else "delta-free-rider"
    keys = [key_for(seed, f"client-{i}") for i in range(clients)]
    claims = [len(s.data) for s in base]
    allowed = tuple(k.public for k in keys)
    inflater = honest - c.label_flippers - 1
    if c.inflate_samples and inflater >= 1:
        claims[inflater] *= c.inflate_samples
        kinds[inflater] = f"inflate×{c.inflate_samples}"
    if c.sybil_split:  # client 0 splits its data over K keys; only its first key is listed
        d = base[0].data
        parts = np.array_split(np.arange(len(d)), c.sybil_split)
        split = [ClientShard(ClientKind.HONEST, d.subset(p)) for p in parts]
        extra = [key_for(seed, f"sybil-{j}") for j in range(1, c.sybil_split)]
        base[0:1] = split
        keys[1:1] = extra
        claims[0:1] = [len(p) for p in parts]
        kinds[0:1] = [f"sybil {j + 1}/{c.sybil_split}" for j in range(c.sybil_split)]
    for j in range(c.server_copies):
        base.append(ClientShard(ClientKind.HONEST, base[0].data))
        keys.append(key_for(seed, f"server-copy-{j}"))
        claims.append(claims[0])
        kinds.append("server-copy")
    for i, kind in enumerate(kinds):
        if kind in ("delta-free-rider", "disguised-free-rider", "server-copy"):
            behaviours[i] = kind
    return Roster(base, keys, kinds, claims, allowed, behaviours, seed)
