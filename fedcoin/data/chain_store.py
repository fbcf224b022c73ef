"""The chain store contract, and the in-memory store.

A store keeps the committed chain only (DESIGN §3): each committed block with its commit
certificate, its receipt and the state after it, indexed by height; the head is the last
committed block. ``commit`` is the one write: block, certificate, state, receipt and the new head
together, or nothing. There are no side branches and no reorganisations.

Both stores keep a task index: for each task, the blocks that publish it, submit one of its rounds
or settle (or void) one, so the API reads a task's rounds without walking the chain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.genesis import Genesis
from fedcoin.data.state import State
from fedcoin.data.task_index import task_touches
from fedcoin.data.vote import CommitCertificate
from fedcoin.errors import StoreError


class ChainStore(ABC):
    """Committed blocks by hash and by height, their certificates and states, the head."""

    @property
    @abstractmethod
    def genesis_hash(self) -> bytes: ...

    @abstractmethod
    def commit(
        self,
        block: Block,
        state: State,
        certificate: CommitCertificate,
        *,
        receipt: bytes = b"",
        settled: tuple[bytes, ...] = (),
    ) -> None:
        """Store ``block`` (a child of the head) with its certificate, post-state and receipt, and
        make it the head, in one transaction. ``StoreError`` if it does not extend the head."""

    @abstractmethod
    def get_block(self, block_hash: bytes) -> Block | None: ...

    @abstractmethod
    def get_receipt(self, block_hash: bytes) -> bytes | None: ...

    @abstractmethod
    def get_state(self, block_hash: bytes) -> State:
        """The state after a stored block; ``StoreError`` if the block is unknown."""

    @abstractmethod
    def get_certificate(self, height: int) -> CommitCertificate | None:
        """The certificate block ``height`` was committed with (None for genesis and beyond)."""

    @abstractmethod
    def head_hash(self) -> bytes: ...

    @abstractmethod
    def canonical_hash(self, height: int) -> bytes | None:
        """The hash of the committed block at ``height``."""

    @abstractmethod
    def committed_range(
        self, after_height: int, limit: int
    ) -> list[tuple[Block, CommitCertificate]]:
        """Up to ``limit`` committed blocks above ``after_height`` with their certificates."""

    @abstractmethod
    def task_blocks(self, task_id: bytes) -> list[tuple[int, bytes]]:
        """(height, hash) of the committed blocks that touch a task, by height."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    # Conveniences built on the primitives -----------------------------------------------
    def has_block(self, block_hash: bytes) -> bool:
        return self.get_block(block_hash) is not None

    def get_header(self, block_hash: bytes) -> BlockHeader | None:
        block = self.get_block(block_hash)
        return block.header if block is not None else None

    def head(self) -> BlockHeader:
        header = self.get_header(self.head_hash())
        if header is None:
            raise StoreError("head block missing from store")
        return header

    def head_state(self) -> State:
        return self.get_state(self.head_hash())

    def block_at(self, height: int) -> Block | None:
        found = self.canonical_hash(height)
        return self.get_block(found) if found is not None else None

    def _check_extends_head(self, block: Block, certificate: CommitCertificate) -> None:
        head = self.head()
        if block.parent != head.hash or block.height != head.height + 1:
            raise StoreError(f"block {block.hash.hex()} does not extend the head {head.hash.hex()}")
        if certificate.height != block.height or certificate.block_id != block.hash:
            raise StoreError(f"certificate does not name block {block.hash.hex()}")


class MemoryChainStore(ChainStore):
    """Everything in dicts and lists: fast, gone at exit."""

    def __init__(self, genesis: Genesis) -> None:
        block = genesis.block()
        self._genesis = block.hash
        self._blocks: dict[bytes, Block] = {block.hash: block}
        self._states: dict[bytes, State] = {block.hash: genesis.state()}
        self._receipts: dict[bytes, bytes] = {block.hash: b""}
        self._canonical: list[bytes] = [block.hash]
        self._certificates: dict[int, CommitCertificate] = {}
        self._task_blocks: dict[bytes, list[bytes]] = {}

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis

    def commit(
        self,
        block: Block,
        state: State,
        certificate: CommitCertificate,
        *,
        receipt: bytes = b"",
        settled: tuple[bytes, ...] = (),
    ) -> None:
        self._check_extends_head(block, certificate)
        touched = task_touches(block, settled)
        self._blocks[block.hash] = block
        self._states[block.hash] = state
        self._receipts[block.hash] = receipt
        self._certificates[block.height] = certificate
        for task_id in touched:
            self._task_blocks.setdefault(task_id, []).append(block.hash)
        self._canonical.append(block.hash)

    def get_block(self, block_hash: bytes) -> Block | None:
        return self._blocks.get(block_hash)

    def get_receipt(self, block_hash: bytes) -> bytes | None:
        return self._receipts.get(block_hash)

    def get_state(self, block_hash: bytes) -> State:
        try:
            return self._states[block_hash]
        except KeyError:
            raise StoreError(f"no state for block {block_hash.hex()}") from None

    def get_certificate(self, height: int) -> CommitCertificate | None:
        return self._certificates.get(height)

    def head_hash(self) -> bytes:
        return self._canonical[-1]

    def canonical_hash(self, height: int) -> bytes | None:
        return self._canonical[height] if 0 <= height < len(self._canonical) else None

    def committed_range(
        self, after_height: int, limit: int
    ) -> list[tuple[Block, CommitCertificate]]:
        first = max(after_height + 1, 1)
        hashes = self._canonical[first : first + max(limit, 0)]
        return [(self._blocks[h], self._certificates[first + i]) for i, h in enumerate(hashes)]

    def task_blocks(self, task_id: bytes) -> list[tuple[int, bytes]]:
        return sorted((self._blocks[h].height, h) for h in self._task_blocks.get(task_id, []))
