"""The randomness beacon (DESIGN §5): reveals along a registered hash chain, and the mix.

A validator registers ``tip = H^K(secret)`` (``stake.randao_tip``). Each block its creator makes
carries ``randao_reveal = r`` with ``sha256(r) == tip``; the tip becomes ``r`` and the mix
becomes ``sha256("fedcoin/mix/v1" || mix || r)``. ``mix[0]`` is the genesis configuration hash
(the genesis block's ``parent``: the block's own hash commits to the genesis state, so the state
cannot hold it). The state keeps only the latest mix; a consumer that needs the mix of a past
height reads the state after that height from the store.
"""

from __future__ import annotations

from collections import OrderedDict

from fedcoin.consensus.stake import RANDAO_LENGTH
from fedcoin.data.encoding import sha256
from fedcoin.errors import RandaoExhausted

TAG_MIX = b"fedcoin/mix/v1"


def next_mix(mix: bytes, reveal: bytes) -> bytes:
    """``mix[h] = sha256("fedcoin/mix/v1" || mix[h-1] || r)``."""
    return sha256(TAG_MIX + mix + reveal)


def reveal_ok(reveal: bytes, tip: bytes) -> bool:
    return sha256(reveal) == tip


#: secret → (tip, index of the tip along the chain): the last answer, so the next one (whose tip
#: is the previous reveal) costs one walk from the secret and no search. Bounded.
_CURSORS: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
_CURSOR_LIMIT = 256


def _walk(secret: bytes, steps: int) -> bytes:
    value = secret
    for _ in range(steps):
        value = sha256(value)
    return value


def randao_reveal_for(secret: bytes, tip: bytes, length: int = RANDAO_LENGTH) -> bytes:
    """The preimage of ``tip`` along the hash chain of ``secret`` (at most ``length`` hashes).

    Raises ``RandaoExhausted`` when ``tip`` is not on the chain or is the secret itself.
    """
    known = _CURSORS.get(secret)
    index: int | None = None
    if known is not None and known[0] == tip:
        index = known[1]
    else:
        value = secret
        for i in range(1, length + 1):
            value = sha256(value)
            if value == tip:
                index = i
                break
    if index is None or index == 0:
        raise RandaoExhausted(f"tip {tip.hex()[:16]} has no preimage on this chain")
    reveal = _walk(secret, index - 1)
    _CURSORS[secret] = (reveal, index - 1)
    _CURSORS.move_to_end(secret)
    while len(_CURSORS) > _CURSOR_LIMIT:
        _CURSORS.popitem(last=False)
    return reveal
