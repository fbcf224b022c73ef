"""The genesis file: chain id, allocations and chain parameters, and the block they make.

The genesis block's ``parent`` field is the hash of the canonical encoding of the genesis
configuration, so the genesis block hash — the network's identity — commits to the chain id,
every allocation and every parameter.

File format (JSON; amounts in base units, 1 FC = 1_000_000)::

    {"chain_id": "fedcoin-local", "timestamp_ms": 0,
     "allocations": {"fc…": 1000000000},
     "params": {"min_fee": 0, "block_reward": 0, ...}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedcoin.data.block import BLOCK_VERSION, ZERO_HASH, Block, BlockHeader
from fedcoin.data.encoding import (
    ADDRESS,
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
from fedcoin.data.state import Account, State
from fedcoin.errors import GenesisError

UNIT = 1_000_000
"""Base units per FC."""


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


DEFAULT_PARAMS = ChainParams(
    min_fee=0,
    block_reward=0,
    min_block_interval_ms=1_000,
    future_tolerance_ms=15_000,
    max_block_txs=5_000,
)


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

    def state(self) -> State:
        accounts = {addr: Account(amount, 0) for addr, amount in self.allocations}
        return State(accounts, {}, (), sum(amount for _, amount in self.allocations))

    def block(self) -> Block:
        """The genesis block; its hash identifies the network."""
        header = BlockHeader(
            version=BLOCK_VERSION,
            height=0,
            parent=sha256(self.encode()),
            timestamp_ms=self.timestamp_ms,
            proposer_pubkey=bytes(32),
            tx_root=ZERO_HASH,
            posap_root=ZERO_HASH,
            state_root=self.state().root(),
            weight=0,
            signature=bytes(64),
        )
        return Block(header, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "allocations": {format_address(a): amount for a, amount in self.allocations},
            "params": {f.name: getattr(self.params, f.name) for f in fields(self.params)},
        }

    @classmethod
    def from_json(cls, data: Any) -> Genesis:
        if not isinstance(data, dict):
            raise GenesisError("genesis must be a JSON object")
        unknown = set(data) - {"chain_id", "timestamp_ms", "allocations", "params"}
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
        try:
            genesis = cls(chain_id, timestamp, tuple(sorted(allocations)), ChainParams(**merged))
            genesis.encode()  # range-checks every field
        except (ValueError, TypeError) as exc:
            raise GenesisError(f"invalid genesis: {exc}") from None
        if genesis.params.max_block_txs < 1:
            raise GenesisError("max_block_txs must be at least 1")
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
