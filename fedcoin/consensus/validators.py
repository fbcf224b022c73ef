"""The validator set of a height: who votes, with what power, and what counts as a quorum.

DESIGN §5: power is the bond snapshotted at the last epoch boundary. The set for the next epoch
is the top ``max_validators`` bonds with ``bond ≥ min_bond``, not jailed, ties to the lower
public key (``select_validators``). A block is committed by precommits from more than 2/3 of the
power (``verify_commit``). All arithmetic is on integers: "more than 2/3 of W" is
``3·p > 2·W``, "more than 1/3" (f+1, at least one honest member) is ``3·p > W``.

Members are kept sorted by public key. Each carries its proposer priority (``proposer.py``
updates it); the set's hash covers keys and powers only, so it is the same all height long
whatever round is being played (headers carry it as ``validators_hash``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from fedcoin.data.encoding import (
    I64,
    I64_MAX,
    PUBKEY,
    U64,
    Record,
    hash_of,
    list_of,
    tuple_of,
    wire,
)
from fedcoin.data.keys import address_of
from fedcoin.data.vote import MAX_VALIDATORS, CommitCertificate, Vote
from fedcoin.errors import (
    BadVoteSignature,
    CertificateMismatch,
    CertificateNotCanonical,
    InsufficientPower,
    InvalidValidatorSet,
    UnknownValidator,
)

#: Bound on the total power, as CometBFT's: priorities then never leave int64.
MAX_TOTAL_POWER = I64_MAX // 8

#: Verifies a vote's signature under a chain id; injectable so a node can cache verifications.
VoteVerifier = Callable[[Vote, str], bool]


def check_signature(vote: Vote, chain_id: str) -> bool:
    return vote.signature_ok(chain_id)


class SignatureCache:
    """A ``VoteVerifier`` that remembers the votes it verified (bounded, oldest out first).

    Every vote reaches a node once per peer that relays it, and a one-process simulation holds
    many nodes: verifying each signature once per process instead of once per delivery is what
    keeps 32 validators within 2 cores (DESIGN §9). Only successes are remembered; the key is
    the whole vote and the chain id, so a changed field or signature is verified afresh.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._verified: OrderedDict[tuple[str, Vote], None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, vote: Vote, chain_id: str) -> bool:
        key = (chain_id, vote)
        if key in self._verified:
            self._verified.move_to_end(key)
            self.hits += 1
            return True
        self.misses += 1
        if not vote.signature_ok(chain_id):
            return False
        self._verified[key] = None
        if len(self._verified) > self.capacity:
            self._verified.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._verified)


@dataclass(frozen=True, slots=True)
class Validator(Record):
    """One member: its key, its voting power (snapshotted bond) and its proposer priority."""

    pubkey: bytes = wire(PUBKEY)
    """The validator's Ed25519 public key."""
    power: int = wire(U64)
    """Voting power, > 0."""
    priority: int = wire(I64)
    """Proposer priority (CometBFT's weighted round robin), kept in state."""

    @property
    def address(self) -> bytes:
        return address_of(self.pubkey)


@dataclass(frozen=True, slots=True)
class _Members(Record):
    """What ``validators_hash`` commits to: ``[[pubkey, power], …]`` sorted by key."""

    members: tuple[tuple[bytes, int], ...] = wire(list_of(tuple_of(PUBKEY, U64), MAX_VALIDATORS))


@dataclass(frozen=True)
class ValidatorSet:
    """The members of one height, sorted by public key, with cached lookups."""

    members: tuple[Validator, ...]

    def __post_init__(self) -> None:
        keys = [v.pubkey for v in self.members]
        # Members are sorted by key, each key once
        if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
            raise InvalidValidatorSet(reason="members must be sorted by key, without duplicates")
        # At most MAX_VALIDATORS members, and every power positive
        if len(keys) > MAX_VALIDATORS:
            raise InvalidValidatorSet(reason="too many members", count=len(keys))
        if any(v.power <= 0 for v in self.members):
            raise InvalidValidatorSet(reason="every power must be positive")
        # The total power stays below MAX_TOTAL_POWER
        if sum(v.power for v in self.members) > MAX_TOTAL_POWER:
            raise InvalidValidatorSet(reason="total power too large")

    @classmethod
    def of(cls, members: Iterable[tuple[bytes, int]]) -> ValidatorSet:
        """A set with zero priorities (use ``proposer.genesis_set`` for a chain's first set)."""
        return cls(tuple(Validator(pk, power, 0) for pk, power in sorted(members)))

    @cached_property
    def total_power(self) -> int:
        return sum(v.power for v in self.members)

    @cached_property
    def _by_key(self) -> Mapping[bytes, Validator]:
        return {v.pubkey: v for v in self.members}

    @cached_property
    def hash(self) -> bytes:
        return hash_of(_Members(tuple((v.pubkey, v.power) for v in self.members)))

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, pubkey: object) -> bool:
        return pubkey in self._by_key

    def get(self, pubkey: bytes) -> Validator | None:
        return self._by_key.get(pubkey)

    def power_of(self, pubkey: bytes) -> int:
        member = self._by_key.get(pubkey)
        return 0 if member is None else member.power

    def power_of_all(self, pubkeys: Iterable[bytes]) -> int:
        """The summed power of the distinct members among ``pubkeys`` (others count 0)."""
        return sum(self.power_of(pk) for pk in set(pubkeys))

    def has_two_thirds(self, power: int) -> bool:
        """``power`` is more than 2/3 of the total (a 2f+1 quorum)."""
        return 3 * power > 2 * self.total_power

    def has_one_third(self, power: int) -> bool:
        """``power`` is more than 1/3 of the total (f+1: at least one honest member)."""
        return 3 * power > self.total_power


def select_validators(
    bonds: Mapping[bytes, int],
    jailed: Iterable[bytes],
    *,
    max_validators: int,
    min_bond: int,
) -> list[tuple[bytes, int]]:
    """The epoch rule: the top ``max_validators`` bonds ``≥ min_bond``, not jailed, ties to the
    lower public key. Returns ``(pubkey, power)`` pairs sorted by key; power = the bond."""
    excluded = set(jailed)
    eligible = [
        (pk, bond)
        for pk, bond in bonds.items()
        if bond >= min_bond and bond > 0 and pk not in excluded
    ]
    eligible.sort(key=lambda item: (-item[1], item[0]))
    return sorted(eligible[:max_validators])


def verify_vote(vote: Vote, validators: ValidatorSet, chain_id: str, check: VoteVerifier) -> None:
    """A vote counts only if its signer is a member and its signature verifies."""
    # The voter must be a member of the height's set
    if vote.validator not in validators:
        raise UnknownValidator(validator=vote.validator, height=vote.height)
    # The signature must verify under the voter's key for this chain
    if not check(vote, chain_id):
        raise BadVoteSignature(validator=vote.validator, height=vote.height, round=vote.round)


def verify_commit(
    validators: ValidatorSet,
    chain_id: str,
    height: int,
    block_id: bytes,
    cert: CommitCertificate,
    check: VoteVerifier = check_signature,
) -> None:
    """Check that ``cert`` commits ``block_id`` at ``height`` under ``validators``; raise if not."""
    # The certificate is for this height and this block
    if cert.height != height or cert.block_id != block_id:
        raise CertificateMismatch(
            height=cert.height, expected_height=height, block=cert.block_id, expected=block_id
        )
    # Signatures are sorted by key, one per validator
    keys = [sig.validator for sig in cert.signatures]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise CertificateNotCanonical(height=height)
    # Every signature is a member's precommit for this block in the certificate's round
    for sig in cert.signatures:
        verify_vote(cert.vote_of(sig), validators, chain_id, check)
    # Together they hold more than 2/3 of the power
    power = validators.power_of_all(keys)
    if not validators.has_two_thirds(power):
        raise InsufficientPower(height=height, power=power, total=validators.total_power)
