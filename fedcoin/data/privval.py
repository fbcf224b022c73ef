"""The private validator: signs votes and proposals, never two conflicting ones, crash or not.

A validator that signs two different blocks at one height, round and step is slashed (DESIGN §5),
and so is one that restarts after ``kill -9`` and votes again differently. Like CometBFT's file
private validator, this one keeps the last (height, round, step) it signed, with the block id and
the digest, in a small file, and writes it **before** it signs: the new state goes to a temporary
file, is fsynced, renamed over the old one and the directory fsynced. Whatever instant the
process dies at, the file on disk names the last thing that may have been signed.

What it signs, given the last state ``L`` and a request ``R`` (``step``: proposal 1, prevote 2,
precommit 3):
- ``(R.height, R.round, R.step) > (L.height, L.round, L.step)``: persist ``R``, then sign;
- equal, and the same digest: sign again (Ed25519 is deterministic: the same signature);
- anything else (lower, or equal with another block or pol_round): refuse (``DoubleSignRefused``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

from fedcoin.data.encoding import HASH, U8, U32, U64, Record, optional, wire
from fedcoin.data.vote import TAG_PROPOSAL, TAG_VOTE, Proposal, Vote, VoteType
from fedcoin.errors import DecodeError, DoubleSignRefused, PrivValStateError

MAX_STATE_BYTES = 1024


class Step(IntEnum):
    """Signing steps in the order a round takes them."""

    NONE = 0
    PROPOSAL = 1
    PREVOTE = 2
    PRECOMMIT = 3


_STEP_OF_VOTE = {VoteType.PREVOTE: Step.PREVOTE, VoteType.PRECOMMIT: Step.PRECOMMIT}


class Signer(Protocol):
    """What the private validator needs from a key (``keys.PrivateKey`` is one)."""

    @property
    def public(self) -> bytes: ...

    def sign(self, tag: bytes, digest: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class LastSignState(Record):
    """The last message this validator may have signed; the file holds its encoding."""

    height: int = wire(U64)
    """Height of the last signed message (0: nothing signed yet)."""
    round: int = wire(U32)
    """Its round."""
    step: int = wire(U8)
    """Its ``Step``."""
    block_id: bytes | None = wire(optional(HASH))
    """The block it named, or nil."""
    digest: bytes | None = wire(optional(HASH))
    """The digest of its sign payload, to recognise an identical request."""

    @property
    def hrs(self) -> tuple[int, int, int]:
        return (self.height, self.round, self.step)


FRESH = LastSignState(0, 0, Step.NONE, None, None)


class FilePrivValidator:
    """Signs for one key, guarded by the last-sign state kept in ``path``."""

    def __init__(self, key: Signer, path: str | os.PathLike[str]) -> None:
        self._key = key
        self._path = Path(path)
        self._last = _load(self._path)

    @property
    def public(self) -> bytes:
        return self._key.public

    @property
    def last(self) -> LastSignState:
        return self._last

    def sign_vote(self, chain_id: str, vote: Vote) -> Vote:
        """Return ``vote`` signed, or raise ``DoubleSignRefused`` if it conflicts."""
        if vote.validator != self._key.public:
            raise ValueError("the vote names another validator")
        step = _STEP_OF_VOTE.get(VoteType(vote.type)) if vote.well_formed else None
        if step is None:
            raise ValueError(f"not a vote type: {vote.type}")
        digest = vote.digest(chain_id)
        self._guard(LastSignState(vote.height, vote.round, step, vote.block_id, digest))
        return vote.with_signature(self._key.sign(TAG_VOTE, digest))

    def sign_proposal(self, chain_id: str, proposal: Proposal) -> Proposal:
        """Return ``proposal`` signed, or raise ``DoubleSignRefused`` if it conflicts."""
        if proposal.proposer != self._key.public:
            raise ValueError("the proposal names another proposer")
        digest = proposal.digest(chain_id)
        self._guard(
            LastSignState(proposal.height, proposal.round, Step.PROPOSAL, proposal.block_id, digest)
        )
        return proposal.with_signature(self._key.sign(TAG_PROPOSAL, digest))

    def _guard(self, request: LastSignState) -> None:
        last = self._last
        # Signing the very same message again is harmless (same bytes, same signature)
        if request.hrs == last.hrs and request.digest == last.digest:
            return
        # Never go back, and never sign something else at the same height, round and step
        if request.hrs <= last.hrs:
            raise DoubleSignRefused(
                f"already signed at height {last.height} round {last.round} step "
                f"{Step(last.step).name}; refusing height {request.height} round "
                f"{request.round} step {Step(request.step).name}"
            )
        # Persist before signing: a crash after this line cannot lead to a conflicting signature
        _store(self._path, request)
        self._last = request


def _load(path: Path) -> LastSignState:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return FRESH
    except OSError as exc:
        raise PrivValStateError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_STATE_BYTES:
        raise PrivValStateError(f"{path} is {len(data)} bytes, not a private-validator state")
    try:
        return LastSignState.decode(data)
    except DecodeError as exc:
        raise PrivValStateError(f"{path} is corrupt ({exc}); refusing to sign") from None


def _store(path: Path, state: LastSignState) -> None:
    """Write ``state`` atomically and durably: temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise PrivValStateError(f"cannot persist {path}: {exc.strerror}; not signing") from None
