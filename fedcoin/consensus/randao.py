"""The randomness beacon (DESIGN §5): reveals along a registered hash chain, and the mix.

A validator registers ``tip = H^K(secret)`` (``stake.randao_tip``). Each block its creator makes
carries ``randao_reveal = r`` with ``sha256(r) == tip``; the tip becomes ``r`` and the mix
becomes ``sha256("fedcoin/mix/v1" || mix || r)``. ``mix[0]`` is the genesis configuration hash
(the genesis block's ``parent``: the block's own hash commits to the genesis state, so the state
cannot hold it). The state keeps only the latest mix; a consumer that needs the mix of a past
height reads the state after that height from the store.
"""

from __future__ import annotations

from fedcoin.consensus.stake import RANDAO_LENGTH, randao_tip
from fedcoin.data.encoding import sha256
from fedcoin.errors import RandaoExhausted

TAG_MIX = b"fedcoin/mix/v1"


def next_mix(mix: bytes, reveal: bytes) -> bytes:
    """``mix[h] = sha256("fedcoin/mix/v1" || mix[h-1] || r)``."""
    return sha256(TAG_MIX + mix + reveal)


def reveal_ok(reveal: bytes, tip: bytes) -> bool:
    return sha256(reveal) == tip


def randao_reveal_for(secret: bytes, tip: bytes, length: int = RANDAO_LENGTH) -> bytes:
    """The preimage of ``tip`` on the hash chain of ``secret``: one walk of at most ``length``
    hashes (a few milliseconds, once per height). ``RandaoExhausted`` when ``tip`` is not on the
    chain or is the secret itself."""
    previous = secret
    for _ in range(length):
        value = sha256(previous)
        if value == tip:
            return previous
        previous = value
    raise RandaoExhausted(f"tip {tip.hex()[:16]} has no preimage on this chain")


class RandaoChain:
    """One validator's hash chain, with checkpoints: the next reveal costs at most ``every``
    hashes instead of a walk from the secret (what a node keeps next to its key)."""

    def __init__(self, secret: bytes, length: int = RANDAO_LENGTH, every: int = 100) -> None:
        if length < 1 or every < 1:
            raise ValueError("length and every must be positive")
        self.secret, self.length, self.every = secret, length, every
        self._checkpoints: list[bytes] = []
        value = secret
        for i in range(length + 1):
            if i % every == 0:
                self._checkpoints.append(value)
            value = sha256(value)
        self._last: tuple[bytes, int] | None = None

    @property
    def tip(self) -> bytes:
        """``H^length(secret)``: what a first ``Bond`` or the genesis registers."""
        return self.value_at(self.length)

    def value_at(self, index: int) -> bytes:
        """``H^index(secret)``, from the checkpoint below it."""
        if not 0 <= index <= self.length:
            raise ValueError(f"index {index} is off the chain")
        return randao_tip(self._checkpoints[index // self.every], index % self.every)

    def reveal_for(self, tip: bytes) -> bytes:
        """The preimage of ``tip`` (the key's current tip in the state)."""
        if self._last is not None and self._last[0] == tip:
            index = self._last[1]
        else:
            index = self._find(tip)
        if index <= 0:
            raise RandaoExhausted(f"tip {tip.hex()[:16]} has no preimage on this chain")
        reveal = self.value_at(index - 1)
        self._last = (reveal, index - 1)
        return reveal

    def _find(self, tip: bytes) -> int:
        value = self.secret
        for i in range(self.length + 1):
            if value == tip:
                return i
            value = sha256(value)
        raise RandaoExhausted(f"tip {tip.hex()[:16]} is not on this chain")
