"""The consensus driver's boundary: what it needs of the chain, what it publishes, its hooks.

``Ledger`` is the chain as the driver sees it (``bft_ledger.ChainLedger`` adapts the real
``Chain``; tests use a fake). ``Publish`` sends a signed message to the network. ``Faults``
are the hooks for tests and the simulation: a Byzantine validator that equivocates (signing
with its raw key, never through the private validator, and only when so configured) and a
crash at a given height and round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from fedcoin.consensus.tendermint_io import Event, ProposalReceived, Timeout, VoteReceived
from fedcoin.consensus.validators import ValidatorSet
from fedcoin.data.privval import Signer
from fedcoin.data.vote import (
    TAG_PROPOSAL,
    TAG_VOTE,
    UNSIGNED,
    CommitCertificate,
    DuplicateVoteEvidence,
    Proposal,
    Vote,
)
from fedcoin.errors import ContentMissing, FedCoinError, Ignore, Reject, RuleViolation

V = TypeVar("V")
log = logging.getLogger("fedcoin.consensus")


class Ledger(Protocol[V]):
    """What the driver needs of the chain (``bft_ledger.ChainLedger`` is the real one)."""

    @property
    def chain_id(self) -> str: ...

    def committed_height(self) -> int:
        """Height of the last committed block."""

    def parent_timestamp_ms(self) -> int:
        """Timestamp of the last committed block."""

    def validator_set(self) -> ValidatorSet:
        """The set deciding ``committed_height() + 1``, with its priorities."""

    def busy(self) -> bool:
        """A transaction is pending or an SV task is open: start the next height promptly."""

    def value_id(self, value: V) -> bytes:
        """The block id (its hash)."""

    def build(
        self, height: int, *, now_ms: int, evidence: Sequence[DuplicateVoteEvidence], variant: int
    ) -> V:
        """The block this validator proposes at ``height`` (``variant`` > 0: another one, for
        the equivocation hook). Raises a ``FedCoinError`` if it cannot build one."""

    async def check(self, value: V, *, now_ms: int) -> None:
        """Raise ``RuleViolation`` if ``value`` is not a valid next block, ``ContentMissing``
        if what it references cannot be fetched (the driver then ignores the proposal)."""

    async def commit(self, value: V, certificate: CommitCertificate) -> None:
        """Store the decided block with its certificate (idempotent)."""

    def evidence_in(self, value: V) -> Sequence[DuplicateVoteEvidence]:
        """The evidence a committed block included."""


Publish = Callable[[Proposal | Vote | DuplicateVoteEvidence, object | None], None]


@dataclass(frozen=True)
class Faults:
    """Test and simulation hooks; the default is an honest validator."""

    equivocate: bool = False
    """Double-propose and double-vote, signing with ``raw_key`` (no double-sign protection)."""
    raw_key: Signer | None = None
    """The validator key, needed only by ``equivocate``."""
    crash_at: tuple[int, int] | None = None
    """Stop at this (height, round): ignore every input from then on."""


@dataclass(frozen=True, slots=True)
class StartHeight:
    """Internal event: start deciding ``height`` (the cadence timer fired, or a peer began)."""

    height: int


@dataclass(frozen=True, slots=True)
class ChainMoved:
    """Internal event: the chain committed blocks on its own (sync)."""


def raw_sign(key: Signer | None, chain_id: str, message: Proposal | Vote) -> Proposal | Vote:
    if key is None:
        raise ValueError("no key to sign with")
    if isinstance(message, Proposal):
        return message.with_signature(key.sign(TAG_PROPOSAL, message.digest(chain_id)))
    return message.with_signature(key.sign(TAG_VOTE, message.digest(chain_id)))


def conflicting_twin(
    signed: Proposal | Vote, other_block: bytes | None, known_blocks: list[bytes]
) -> Proposal | Vote | None:
    """What a Byzantine validator sends next to ``signed`` (unsigned): a proposal of
    ``other_block`` for the same round, or a vote for nil next to a vote for a block (for a
    known block next to a nil vote)."""
    if isinstance(signed, Proposal):
        if other_block is None:
            return None
        return Proposal(signed.height, signed.round, -1, other_block, signed.proposer, UNSIGNED)
    if signed.block_id is None and not known_blocks:
        return None
    block_id = known_blocks[0] if signed.block_id is None else None
    return Vote(signed.height, signed.round, signed.type, block_id, signed.validator, UNSIGNED)


async def check_block(ledger: Ledger[V], value: V, *, seconds: float, now_ms: int) -> bool:
    """``Ledger.check`` as a verdict: True valid, False breaks a rule; ``Ignore`` when the
    content cannot be fetched within ``seconds`` (not judged), ``Reject`` on an error no rule
    names (the block cannot be one to accept, and the peer sent it)."""
    block_id = ledger.value_id(value)
    try:
        async with asyncio.timeout(seconds):
            await ledger.check(value, now_ms=now_ms)
    except TimeoutError:
        raise Ignore("block content not fetched before the prevote timeout") from None
    except ContentMissing as exc:
        raise Ignore(f"block content unavailable: {exc}") from None
    except RuleViolation as exc:
        log.info("proposed block %s is invalid: %s", block_id.hex()[:12], exc)
        return False
    except FedCoinError:
        raise
    except Exception as exc:  # noqa: BLE001 - content no rule foresaw: not a valid block
        log.exception("proposed block %s could not be checked", block_id.hex()[:12])
        raise Reject(f"block could not be checked: {type(exc).__name__}") from None
    return True


class NoValue(Exception):
    """``get_value`` had no block to offer (building one failed)."""


def height_of(item: Event[V]) -> int:
    """The height a machine event belongs to (-1 for one of no height)."""
    if isinstance(item, ProposalReceived):
        return item.proposal.height
    if isinstance(item, VoteReceived):
        return item.vote.height
    if isinstance(item, Timeout):
        return item.height
    return -1


def round_of(item: Event[V]) -> int:
    """The round a machine event belongs to (-1 for one of no round)."""
    if isinstance(item, ProposalReceived):
        return item.proposal.round
    if isinstance(item, VoteReceived):
        return item.vote.round
    if isinstance(item, Timeout):
        return item.round
    return -1
