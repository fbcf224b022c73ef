"""Small-order Ed25519 keys: the list ``is_small_order`` refuses is exactly the torsion points.

The check is independent of fedcoin.data.curve: a few lines of affine Edwards arithmetic derive
the eight points of order dividing 8 as ``[L]·Q`` for random curve points ``Q`` (L is the prime
order of the base point), and every encoding of each (both signs of x, and y + p where that
still fits in 255 bits) must be refused while real keys and other points are accepted.
"""

from __future__ import annotations

import random

from fedcoin.data.curve import is_small_order
from fedcoin.data.keys import PrivateKey

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)


def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def mul(k: int, point: tuple[int, int]) -> tuple[int, int]:
    out = IDENTITY
    while k:
        if k & 1:
            out = add(out, point)
        point = add(point, point)
        k >>= 1
    return out


def x_of(y: int) -> int | None:
    """A square root x of (y² - 1) / (d y² + 1), or None when y is not on the curve."""
    u = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(u, (P + 3) // 8, P)
    if x * x % P != u:
        x = x * SQRT_M1 % P
    return x if x * x % P == u else None


def encodings(point: tuple[int, int]) -> list[bytes]:
    """Every 32-byte string that decodes to ``point``: both sign bits, and y + p if it fits."""
    x, y = point
    ys = [y] + ([y + P] if y + P < 2**255 else [])
    signs = [x & 1] if x else [0, 1]  # x = 0 has a (non-canonical) "negative zero" too
    return [(yy | (s << 255)).to_bytes(32, "little") for yy in ys for s in signs]


def torsion_points() -> set[tuple[int, int]]:
    rng = random.Random(8)
    points: set[tuple[int, int]] = set()
    while len(points) < 8:
        y = rng.randrange(P)
        x = x_of(y)
        if x is None:
            continue
        torsion = mul(L, (x, y))
        multiples = [IDENTITY]
        for _ in range(7):
            multiples.append(add(multiples[-1], torsion))
        points.update(multiples)
    return points


def test_exactly_the_eight_torsion_points_are_small_order() -> None:
    points = torsion_points()
    assert len(points) == 8
    for point in points:
        assert mul(8, point) == IDENTITY
        for enc in encodings(point):
            assert is_small_order(enc), (point, enc.hex())
    assert IDENTITY in points


def test_real_keys_and_other_points_are_not_small_order() -> None:
    for i in range(20):
        assert not is_small_order(PrivateKey.from_seed(bytes([i]) * 32).public)
    rng = random.Random(1)
    checked = 0
    while checked < 50:
        y = rng.randrange(P)
        x = x_of(y)
        if x is None:
            continue
        assert mul(8, (x, y)) != IDENTITY
        assert not any(is_small_order(e) for e in encodings((x, y)))
        checked += 1
    assert not is_small_order(b"\x01" * 31)  # wrong length: not a key at all, but not this error
