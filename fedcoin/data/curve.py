"""Which Ed25519 public-key encodings are points of small order.

The curve has eight points whose order divides the cofactor 8: the identity, one point of
order 2, two of order 4 and four of order 8. A public key at one of them is worthless as a
signer's identity: the identity key verifies a signature with ``R`` = identity and ``S`` = 0 for
every message, and the others do so for a fixed fraction of messages. A point is encoded by its
y coordinate (255 bits, little-endian) and the sign of x in the top bit; y values 0 and 1 also
have a non-canonical encoding y + p. Comparing y mod p, with the sign bit masked, catches every
encoding of the eight points, canonical or not (the list libsodium refuses, derived rather than
copied: see tests/data/test_curve.py, which checks each by scalar multiplication).
"""

from __future__ import annotations

#: The field prime of Curve25519.
P = 2**255 - 19
#: y of the order-8 points (x = ±…, y = ±Y8). p - Y8 is the other pair's y.
Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
#: y coordinates of the eight small-order points: order 4 (y = 0), identity (1), order 2
#: (p - 1), order 8 (Y8 and p - Y8).
SMALL_ORDER_Y = frozenset({0, 1, P - 1, Y8, P - Y8})
_Y_MASK = (1 << 255) - 1


def is_small_order(pubkey: bytes) -> bool:
    """True when the 32 bytes encode a point of order 1, 2, 4 or 8 (in any encoding)."""
    if len(pubkey) != 32:
        return False
    y = int.from_bytes(pubkey, "little") & _Y_MASK
    return y % P in SMALL_ORDER_Y
