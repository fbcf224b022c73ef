"""The genesis file: chain id, allocations and chain parameters, and the block they make.

The genesis block's ``parent`` field is the hash of the canonical encoding of the genesis
configuration, so the genesis block hash — the network's identity — commits to the chain id,
every allocation and every parameter.

File format (JSON; amounts in base units, 1 FC = 1_000_000; keys and tips in hex)::

    {"chain_id": "fedcoin-local", "timestamp_ms": 0,
     "allocations": {"fc…": 1000000000},
     "validators": [{"pubkey": "ab…", "bond": 10000000, "randao_tip": "cd…"}],
     "params": {"min_fee": 0, "block_reward": 0, "min_bond": 1000000, ...}}

Every listed validator is in the first epoch's set, with power = its bond: genesis is rejected
unless each bond is at least ``min_bond`` and there are at most ``max_validators`` of them, so
the first set needs no selection. Bonds are not balances: they count in the supply apart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedcoin.data.block import BLOCK_VERSION, ZERO_HASH, Block, BlockHeader
from fedcoin.data.encoding import (
    ADDRESS,
    HASH,
    PUBKEY,
    U32,
    U64,
    Record,
    list_of,
    nested,
    sha256,
    text,
    tuple_of,
    wire,
)
from fedcoin.data.keys import format_address, parse_address
from fedcoin.data.state import Account, Stake, State, powers_hash, powers_of
from fedcoin.data.vote import MAX_VALIDATORS
from fedcoin.errors import DecodeError, GenesisError

UNIT = 1_000_000
"""Base units per FC."""
MAX_OPEN_SV = 256
"""Largest ``max_open_sv`` (a block's receipt lists at most this many settled rounds)."""
MAX_FRAUD_PROOFS = 64
"""Largest ``max_fraud_proofs``: each costs every node an exact evaluation."""


@dataclass(frozen=True, slots=True)
class ChainParams(Record):
    """Consensus parameters fixed at genesis."""

    min_fee: int = wire(U64)
    """Smallest fee a transaction may pay."""
    block_reward: int = wire(U64)
    """Minted to the proposer of every block (default 0: the FL budget pays the miners)."""
    min_block_interval_ms: int = wire(U64)
    """A transaction-only block comes at least this long after its parent."""
    future_tolerance_ms: int = wire(U64)
    """How far ahead of the receiver's clock a block timestamp may be."""
    max_block_txs: int = wire(U32)
    """Most transactions in one block."""
    min_bond: int = field(default=UNIT, metadata={"codec": U64})
    """Smallest bond that makes a key eligible for the validator set."""
    max_validators: int = field(default=100, metadata={"codec": U32})
    """Most members of one epoch's set (the top bonds)."""
    epoch_blocks: int = field(default=10, metadata={"codec": U32})
    """Blocks per epoch; the next set is computed at the end of an epoch's last block."""
    unbonding_blocks: int = field(default=100, metadata={"codec": U32})
    """Blocks an Unbond entry stays slashable before it is released to the balance."""
    jail_blocks: int = field(default=100, metadata={"codec": U32})
    """Blocks after jailing before a Bond may return the key to eligibility."""
    evidence_max_age: int = field(default=50, metadata={"codec": U32})
    """Most blocks between an equivocation and the block that includes its evidence."""
    slash_bps: int = field(default=1_000, metadata={"codec": U32})
    """Part of the bond (and of later unbonding entries) an equivocation costs, in 1/10 000."""
    slash_reward_bps: int = field(default=1_000, metadata={"codec": U32})
    """Part of a slash paid to the creator of the block with the evidence; the rest is burned."""
    max_open_sv: int = field(default=4, metadata={"codec": U32})
    """Most SV tasks open on the chain at once (a round beyond that waits in the mempool)."""
    fraud_blocks: int = field(default=20, metadata={"codec": U32})
    """Blocks after a settlement during which a FraudProof against its table is accepted."""
    fraud_deposit: int = field(default=UNIT, metadata={"codec": U64})
    """What a FraudProof's sender escrows: returned if proven, burned if not."""
    slash_fraud_bps: int = field(default=1_000, metadata={"codec": U32})
    """Part of the bond a proven-wrong table costs each of its revealers, in 1/10 000."""
    max_fraud_proofs: int = field(default=4, metadata={"codec": U32})
    """Most FraudProof transactions one block may carry (each costs one exact evaluation)."""


DEFAULT_PARAMS = ChainParams(
    min_fee=0,
    block_reward=0,
    min_block_interval_ms=1_000,
    future_tolerance_ms=15_000,
    max_block_txs=5_000,
)


def check_stake_params(params: ChainParams) -> None:
    """The inequalities between the stake windows that apply now (DESIGN §5)."""
    if params.min_bond < 1:
        raise GenesisError("min_bond must be at least 1")
    if not 1 <= params.max_validators <= MAX_VALIDATORS:
        raise GenesisError(f"max_validators must be between 1 and {MAX_VALIDATORS}")
    if params.epoch_blocks < 1:
        raise GenesisError("epoch_blocks must be at least 1")
    if params.jail_blocks < 1:
        raise GenesisError("jail_blocks must be at least 1")
    # Stake that leaves must stay slashable for longer than the power snapshotted from it lasts
    if params.unbonding_blocks <= params.epoch_blocks:
        raise GenesisError("unbonding_blocks must be greater than epoch_blocks")
    # ... and for longer than evidence against it may arrive
    if not 1 <= params.evidence_max_age < params.unbonding_blocks:
        raise GenesisError("evidence_max_age must be at least 1 and below unbonding_blocks")
    if params.slash_bps > 10_000 or params.slash_reward_bps > 10_000:
        raise GenesisError("slash_bps and slash_reward_bps are parts of 10 000")
    # A proven-wrong table costs its revealers something; a fraud claim costs its sender something
    if not 1 <= params.slash_fraud_bps <= 10_000 or params.fraud_deposit < 1:
        raise GenesisError("slash_fraud_bps must be 1 to 10 000 and fraud_deposit at least 1")
    # SV tasks can open, and what one block settles or evaluates is bounded
    if not 1 <= params.max_open_sv <= MAX_OPEN_SV:
        raise GenesisError(f"max_open_sv must be between 1 and {MAX_OPEN_SV}")
    if not 1 <= params.max_fraud_proofs <= MAX_FRAUD_PROOFS:
        raise GenesisError(f"max_fraud_proofs must be between 1 and {MAX_FRAUD_PROOFS}")
    # Settled tables stay slashable for longer than a fraud proof may arrive
    if not 1 <= params.fraud_blocks < params.unbonding_blocks:
        raise GenesisError("fraud_blocks must be at least 1 and below unbonding_blocks")


@dataclass(frozen=True, slots=True)
class GenesisValidator(Record):
    """A validator of the first epoch."""

    pubkey: bytes = wire(PUBKEY)
    """Its Ed25519 public key (not an address: votes and blocks are checked against it)."""
    bond: int = wire(U64)
    """Base units bonded at genesis; its power in the first epoch."""
    randao_tip: bytes = wire(HASH)
    """H^K(secret): the first randao reveal must hash to it."""


@dataclass(frozen=True, slots=True)
class Genesis(Record):
    """Everything that defines a network."""

    chain_id: str = wire(text(64))
    """Name of the network; transactions carry it."""
    timestamp_ms: int = wire(U64)
    """Timestamp of the genesis block."""
    allocations: tuple[tuple[bytes, int], ...] = wire(list_of(tuple_of(ADDRESS, U64), 100_000))
    """(address, base units) credited at genesis, sorted by address."""
    params: ChainParams = wire(nested(ChainParams))
    """Consensus parameters."""
    validators: tuple[GenesisValidator, ...] = field(
        default=(), metadata={"codec": list_of(nested(GenesisValidator), MAX_VALIDATORS)}
    )
    """The first epoch's set, sorted by public key."""

    def state(self) -> State:
        accounts = {addr: Account(amount, 0) for addr, amount in self.allocations}
        stakes = {v.pubkey: Stake(v.bond, v.randao_tip, 0) for v in self.validators}
        supply = sum(amount for _, amount in self.allocations) + sum(
            v.bond for v in self.validators
        )
        powers = tuple(sorted((v.pubkey, v.bond) for v in self.validators))
        # Every member new: priorities all 0 (proposer.genesis_set); mix[0] = the config hash
        members = tuple((pk, power, 0) for pk, power in powers)
        recent = ((1, powers),)
        return State(accounts, {}, (), supply, stakes, (), members, self.config_hash, recent, ())

    @property
    def config_hash(self) -> bytes:
        """sha256 of the configuration: the genesis block's ``parent`` and the randao ``mix[0]``."""
        return sha256(self.encode())

    def check_validators(self) -> None:
        """Every listed validator qualifies, so all of them form the first set."""
        keys = [v.pubkey for v in self.validators]
        if not keys:
            raise GenesisError("genesis must list at least one validator")
        if len(set(keys)) != len(keys):
            raise GenesisError("genesis lists a validator twice")
        if len(keys) > self.params.max_validators:
            raise GenesisError(f"more than max_validators={self.params.max_validators} validators")
        for v in self.validators:
            if v.bond < self.params.min_bond:
                raise GenesisError(
                    f"validator {v.pubkey.hex()} bonds {v.bond} < min_bond {self.params.min_bond}"
                )

    def block(self) -> Block:
        """The genesis block; its hash identifies the network."""
        state = self.state()
        header = BlockHeader(
            version=BLOCK_VERSION,
            height=0,
            parent=self.config_hash,
            timestamp_ms=self.timestamp_ms,
            proposer_pubkey=bytes(32),
            tx_root=ZERO_HASH,
            state_root=state.root(),
            validators_hash=powers_hash(powers_of(state.validators)),
            next_validators_hash=powers_hash(powers_of(state.validators)),
            randao_reveal=ZERO_HASH,
            last_commit_hash=ZERO_HASH,
            evidence_root=ZERO_HASH,
        )
        return Block(header, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "allocations": {format_address(a): amount for a, amount in self.allocations},
            "params": {f.name: getattr(self.params, f.name) for f in fields(self.params)},
            "validators": [
                {"pubkey": v.pubkey.hex(), "bond": v.bond, "randao_tip": v.randao_tip.hex()}
                for v in self.validators
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> Genesis:
        if not isinstance(data, dict):
            raise GenesisError("genesis must be a JSON object")
        unknown = set(data) - {"chain_id", "timestamp_ms", "allocations", "params", "validators"}
        if unknown:
            raise GenesisError(f"unknown genesis keys: {sorted(unknown)}")
        chain_id = data.get("chain_id")
        if not isinstance(chain_id, str) or not chain_id:
            raise GenesisError("genesis 'chain_id' must be a non-empty string")
        allocations: list[tuple[bytes, int]] = []
        raw_alloc = data.get("allocations", {})
        if not isinstance(raw_alloc, dict):
            raise GenesisError("genesis 'allocations' must map addresses to base units")
        for text_addr, amount in raw_alloc.items():
            try:
                addr = parse_address(text_addr)
            except ValueError as exc:
                raise GenesisError(f"genesis allocation: {exc}") from None
            if type(amount) is not int or amount <= 0:
                raise GenesisError(f"allocation to {text_addr} must be a positive integer")
            allocations.append((addr, amount))
        raw_params = data.get("params", {})
        if not isinstance(raw_params, dict):
            raise GenesisError("genesis 'params' must be an object")
        names = {f.name for f in fields(ChainParams)}
        if set(raw_params) - names:
            raise GenesisError(f"unknown chain params: {sorted(set(raw_params) - names)}")
        merged = {f.name: getattr(DEFAULT_PARAMS, f.name) for f in fields(ChainParams)}
        merged.update(raw_params)
        timestamp = data.get("timestamp_ms", 0)
        validators = _validators_from_json(data.get("validators", []))
        try:
            genesis = cls(
                chain_id,
                timestamp,
                tuple(sorted(allocations)),
                ChainParams(**merged),
                validators,
            )
            genesis.encode()  # range-checks every field
        except (ValueError, TypeError) as exc:
            raise GenesisError(f"invalid genesis: {exc}") from None
        if genesis.params.max_block_txs < 1:
            raise GenesisError("max_block_txs must be at least 1")
        check_stake_params(genesis.params)
        genesis.check_validators()
        return genesis

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Genesis:
        target = Path(path)
        try:
            data = json.loads(target.read_text())
        except FileNotFoundError:
            raise GenesisError(f"genesis file not found: {target}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GenesisError(f"cannot read genesis file {target}: {exc}") from None
        return cls.from_json(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _validators_from_json(raw: Any) -> tuple[GenesisValidator, ...]:
    if not isinstance(raw, list):
        raise GenesisError("genesis 'validators' must be a list")
    found: list[GenesisValidator] = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"pubkey", "bond", "randao_tip"}:
            raise GenesisError("each validator must be {pubkey, bond, randao_tip}")
        bond = entry["bond"]
        if type(bond) is not int or bond <= 0:
            raise GenesisError("a validator's bond must be a positive integer")
        try:
            pubkey = PUBKEY.unpack(bytes.fromhex(entry["pubkey"]))
            tip = HASH.unpack(bytes.fromhex(entry["randao_tip"]))
        except (TypeError, ValueError, DecodeError) as exc:
            raise GenesisError(f"genesis validator: {exc}") from None
        found.append(GenesisValidator(pubkey, bond, tip))
    return tuple(sorted(found, key=lambda v: v.pubkey))
