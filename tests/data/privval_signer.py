"""Helper process for the double-sign test: a validator that signs, then dies before sending.

Run as ``python -m tests.data.privval_signer STATE MODE``:
- ``signed``: sign a prevote for block X at height 5, round 0; print ``signed <hex>``; then
  wait forever (the vote is never broadcast) until the test kills the process with SIGKILL.
- ``persisted``: the key blocks inside ``sign`` — after the state was persisted, before any
  signature exists; print ``persisted`` and wait to be killed.
- ``loop``: sign prevotes and precommits for ever-increasing heights, printing each.
"""

from __future__ import annotations

import sys
import time

from fedcoin.data.keys import PrivateKey
from fedcoin.data.privval import FilePrivValidator
from fedcoin.data.vote import UNSIGNED, Vote, VoteType

CHAIN = "fedcoin-test"
SEED = b"\x2a" * 32
BLOCK_X = b"\x0a" * 32


class StallingKey:
    """A key that announces it was asked to sign, then never returns."""

    def __init__(self, key: PrivateKey) -> None:
        self.public = key.public

    def sign(self, tag: bytes, digest: bytes) -> bytes:
        print("persisted", flush=True)
        while True:
            time.sleep(60)


def main(path: str, mode: str) -> None:
    key = PrivateKey.from_seed(SEED)
    if mode == "persisted":
        validator = FilePrivValidator(StallingKey(key), path)
    else:
        validator = FilePrivValidator(key, path)
    if mode == "loop":
        height = 1
        while True:
            for type_ in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                vote = Vote(height, 0, type_, BLOCK_X, key.public, UNSIGNED)
                validator.sign_vote(CHAIN, vote)
                print(f"signed {height} {type_}", flush=True)
            height += 1
    vote = Vote(5, 0, VoteType.PREVOTE, BLOCK_X, key.public, UNSIGNED)
    signed = validator.sign_vote(CHAIN, vote)
    print(f"signed {signed.signature.hex()}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
