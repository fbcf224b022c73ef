"""Ledger state: accounts, FL tasks, the FIFO queue of pending SV tasks, total supply.

``State`` is immutable by convention: rules never mutate one. They open a ``Draft`` over it,
change the draft, and ``freeze`` it into a new ``State`` that shares every untouched entry with
its base (so a block costs a copy of two dicts, not of every account). The state root is the
hash of the canonical encoding of the whole state (DESIGN §9 notes the limit of that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from fedcoin.data.encoding import (
    ADDRESS,
    HASH,
    U8,
    U32,
    U64,
    Record,
    decode_raw,
    encode,
    list_of,
    nested,
    sha256,
    wire,
)
from fedcoin.data.tx import MAX_CLIENTS, ClientUpdate, ContentRef, TaskSpec
from fedcoin.errors import DecodeError


class TaskStatus(IntEnum):
    OPEN = 0
    """Rounds may be submitted."""
    DONE = 1
    """Every round was submitted and settled or voided."""
    CLOSED = 2
    """The publisher closed it; the escrow left was refunded."""


@dataclass(frozen=True, slots=True)
class Account(Record):
    """An address's coins and the nonce its next transaction must carry."""

    balance: int = wire(U64)
    """Base units."""
    nonce: int = wire(U64)
    """Count of transactions the address has sent."""


EMPTY_ACCOUNT = Account(0, 0)


@dataclass(frozen=True, slots=True)
class TaskState(Record):
    """An FL task as the contract sees it."""

    spec: TaskSpec = wire(nested(TaskSpec))
    """The published spec."""
    publisher: bytes = wire(ADDRESS)
    """Who escrowed the budget and gets the refunds."""
    escrow: int = wire(U64)
    """Base units still held for the task."""
    rounds_done: int = wire(U32)
    """Rounds submitted so far."""
    status: int = wire(U8)
    """A TaskStatus."""
    global_model: ContentRef = wire(nested(ContentRef))
    """Latest global model; the model bundle before round 1."""
    created_height: int = wire(U64)
    """Height of the block that published the task."""


@dataclass(frozen=True, slots=True)
class SvTask(Record):
    """A round waiting for its Shapley values: the PoSap work of the next block."""

    sv_task_id: bytes = wire(HASH)
    """Id of the SubmitRound transaction that queued it."""
    task_id: bytes = wire(HASH)
    """The task."""
    round: int = wire(U32)
    """The round."""
    updates: tuple[ClientUpdate, ...] = wire(list_of(nested(ClientUpdate), MAX_CLIENTS))
    """The players, in order: client i is bit i of a coalition mask."""
    prev_global: ContentRef = wire(nested(ContentRef))
    """model(∅): the global model before this round (the model bundle for round 1)."""
    global_model: ContentRef = wire(nested(ContentRef))
    """model(N): the FedAvg of all updates."""
    price: int = wire(U64)
    """What the round pays out when settled."""
    queued_height: int = wire(U64)
    """Height of the block that queued it."""
    queued_ms: int = wire(U64)
    """Timestamp of the block that queued it; the PoSap timeout counts from here."""

    @property
    def n(self) -> int:
        return len(self.updates)


@dataclass(frozen=True, slots=True)
class State:
    """The ledger after some block."""

    accounts: dict[bytes, Account] = field(default_factory=dict)
    """Address → account; absent means balance 0, nonce 0."""
    tasks: dict[bytes, TaskState] = field(default_factory=dict)
    """Task id → task."""
    queue: tuple[SvTask, ...] = ()
    """Pending SV tasks, oldest first."""
    supply: int = 0
    """Coins in existence: genesis allocations plus minted rewards."""

    def account(self, address: bytes) -> Account:
        return self.accounts.get(address, EMPTY_ACCOUNT)

    def balance(self, address: bytes) -> int:
        return self.account(address).balance

    def to_wire(self) -> list[Any]:
        return [
            [[a, acc.balance, acc.nonce] for a, acc in sorted(self.accounts.items())],
            [[tid, t.to_wire()] for tid, t in sorted(self.tasks.items())],
            [sv.to_wire() for sv in self.queue],
            self.supply,
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, raw: Any) -> State:
        try:
            accounts_raw, tasks_raw, queue_raw, supply = raw
            accounts = {
                ADDRESS.unpack(a): Account(U64.unpack(b), U64.unpack(n)) for a, b, n in accounts_raw
            }
            tasks = {HASH.unpack(tid): TaskState.from_wire(t) for tid, t in tasks_raw}
            queue = tuple(SvTask.from_wire(sv) for sv in queue_raw)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"State: {exc}") from exc
        return cls(accounts, tasks, queue, U64.unpack(supply))

    @classmethod
    def decode(cls, data: bytes) -> State:
        return cls.from_wire(decode_raw(data))

    def root(self) -> bytes:
        return sha256(self.encode())

    def total_held(self) -> int:
        """Coins on accounts plus coins escrowed in tasks; equals ``supply`` when conserved."""
        return sum(a.balance for a in self.accounts.values()) + sum(
            t.escrow for t in self.tasks.values()
        )

    def pending_for(self, task_id: bytes) -> bool:
        return any(sv.task_id == task_id for sv in self.queue)


class Draft:
    """A mutable overlay on a ``State``; ``freeze`` makes the next ``State``."""

    __slots__ = ("_accounts", "_tasks", "base", "queue", "supply")

    def __init__(self, base: State) -> None:
        self.base = base
        self._accounts: dict[bytes, Account] = {}
        self._tasks: dict[bytes, TaskState] = {}
        self.queue: list[SvTask] = list(base.queue)
        self.supply = base.supply

    def account(self, address: bytes) -> Account:
        found = self._accounts.get(address)
        return found if found is not None else self.base.account(address)

    def set_account(self, address: bytes, account: Account) -> None:
        self._accounts[address] = account

    def credit(self, address: bytes, amount: int) -> None:
        if amount:
            acc = self.account(address)
            self._accounts[address] = Account(acc.balance + amount, acc.nonce)

    def task(self, task_id: bytes) -> TaskState | None:
        found = self._tasks.get(task_id)
        return found if found is not None else self.base.tasks.get(task_id)

    def set_task(self, task_id: bytes, task: TaskState) -> None:
        self._tasks[task_id] = task

    def pending_for(self, task_id: bytes) -> bool:
        return any(sv.task_id == task_id for sv in self.queue)

    def freeze(self) -> State:
        accounts = self.base.accounts
        if self._accounts:
            accounts = {**accounts, **self._accounts}
        tasks = self.base.tasks
        if self._tasks:
            tasks = {**tasks, **self._tasks}
        return State(accounts, tasks, tuple(self.queue), self.supply)


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What one block changed: the new values of touched entries, the whole queue, the supply."""

    accounts: dict[bytes, Account]
    tasks: dict[bytes, TaskState]
    queue: tuple[SvTask, ...]
    supply: int

    @classmethod
    def between(cls, parent: State, child: State) -> StateDelta:
        """The entries of ``child`` that differ from ``parent``'s."""
        pa, pt = parent.accounts, parent.tasks
        accounts = {
            a: v for a, v in child.accounts.items() if pa.get(a) is not v and pa.get(a) != v
        }
        tasks = {t: v for t, v in child.tasks.items() if pt.get(t) is not v and pt.get(t) != v}
        return cls(accounts, tasks, child.queue, child.supply)

    def apply(self, parent: State) -> State:
        accounts = {**parent.accounts, **self.accounts} if self.accounts else parent.accounts
        tasks = {**parent.tasks, **self.tasks} if self.tasks else parent.tasks
        return State(accounts, tasks, self.queue, self.supply)

    def encode(self) -> bytes:
        return State(self.accounts, self.tasks, self.queue, self.supply).encode()

    @classmethod
    def decode(cls, data: bytes) -> StateDelta:
        s = State.decode(data)
        return cls(s.accounts, s.tasks, s.queue, s.supply)
