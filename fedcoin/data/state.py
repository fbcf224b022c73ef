"""Ledger state: accounts, FL tasks, the FIFO queue of pending SV tasks, total supply, and the
stake (DESIGN §5): bonds per validator key, unbonding entries, the validator set that decides the
next height (with its proposer priorities), the randao mix, the sets of the recent heights (to
check evidence and the next block's LastCommit) and the equivocations already punished.

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
    I64,
    PUBKEY,
    U8,
    U32,
    U64,
    Record,
    decode_raw,
    encode,
    list_of,
    nested,
    sha256,
    tuple_of,
    wire,
)
from fedcoin.data.tx import MAX_CLIENTS, MAX_TABLE_ENTRIES, ClientUpdate, ContentRef, TaskSpec
from fedcoin.data.vote import MAX_VALIDATORS
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

#: A validator set as the state keeps it: (public key, power, proposer priority) sorted by key.
Members = tuple[tuple[bytes, int, int], ...]
#: A set's membership without priorities: (public key, power) sorted by key.
Powers = tuple[tuple[bytes, int], ...]


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
    round_work: int = field(default=0, metadata={"codec": U64})
    """Multiply-accumulates one round's table costs (evaluations × MACs per sample ×
    validation samples), learnt at admission; it sizes the commit window."""


#: (validator public key, commitment or root), sorted by key.
KeyedHashes = tuple[tuple[bytes, bytes], ...]
#: Revealed tables: (root, U per schedule position), sorted by root.
Tables = tuple[tuple[bytes, tuple[int, ...]], ...]
#: Most distinct tables an SV task records (one per committee member at most).
MAX_TABLES = MAX_VALIDATORS


@dataclass(frozen=True, slots=True)
class SvTask(Record):
    """A round waiting for its Shapley values, and its valuation so far (DESIGN §5 "Valuation").

    The block at ``queued_height`` = q opens it; at the end of that block ``committee`` is
    snapshotted (the set of height q+1), at the end of block q+1 ``mix`` (mix[q+1], which
    seeds the schedule). Commits are accepted at heights q+2 … ``commit_end``, reveals at
    ``commit_end``+1 … ``reveal_end``; settlement runs at the end of block ``reveal_end``.
    Either window ends early at the block where the last member commits (or reveals).
    """

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
    """Height q of the block that queued it."""
    queued_ms: int = wire(U64)
    """Timestamp of the block that queued it."""
    committee: Powers = field(
        default=(), metadata={"codec": list_of(tuple_of(PUBKEY, U64), MAX_VALIDATORS)}
    )
    """(member key, power) of the set of height q+1, sorted by key; fixed for the task's life."""
    mix: bytes = field(default=bytes(32), metadata={"codec": HASH})
    """mix[q+1], the schedule's seed; zero until block q+1 is executed."""
    attempt: int = field(default=0, metadata={"codec": U8})
    """0 on the first valuation, 1 after a retry."""
    commit_end: int = field(default=0, metadata={"codec": U64})
    """Last height at which a ShareCommit is accepted."""
    reveal_end: int = field(default=0, metadata={"codec": U64})
    """Last height at which a ShareReveal is accepted; the settlement height h_s."""
    commits: KeyedHashes = field(
        default=(), metadata={"codec": list_of(tuple_of(PUBKEY, HASH), MAX_VALIDATORS)}
    )
    """(member key, commitment) of this attempt, sorted by key."""
    reveals: KeyedHashes = field(
        default=(), metadata={"codec": list_of(tuple_of(PUBKEY, HASH), MAX_VALIDATORS)}
    )
    """(member key, revealed root) of this attempt, sorted by key."""
    tables: Tables = field(
        default=(),
        metadata={"codec": list_of(tuple_of(HASH, list_of(U32, MAX_TABLE_ENTRIES)), MAX_TABLES)},
    )
    """(root, table) of every root revealed in this attempt, sorted by root."""

    @property
    def n(self) -> int:
        return len(self.updates)

    def committed(self, pubkey: bytes) -> bytes | None:
        return next((c for pk, c in self.commits if pk == pubkey), None)

    def revealed(self, pubkey: bytes) -> bytes | None:
        return next((r for pk, r in self.reveals if pk == pubkey), None)

    def table(self, root: bytes) -> tuple[int, ...] | None:
        return next((t for r, t in self.tables if r == root), None)


@dataclass(frozen=True, slots=True)
class SettledSv(Record):
    """A settled SV task, kept until its fraud window closes (DESIGN §5 step 5): its table, and
    who revealed it (they are slashed if a fraud proof shows an entry wrong)."""

    sv: SvTask = wire(nested(SvTask))
    """The SV task as it settled (its ``tables`` hold only the winning table)."""
    root: bytes = wire(HASH)
    """The winning table's root."""
    fraud_end: int = wire(U64)
    """Last height at which a FraudProof against it is accepted."""
    disproven: int = field(default=0, metadata={"codec": U8})
    """1 once a fraud proof has shown the table wrong (its revealers are slashed once)."""

    @property
    def revealers(self) -> tuple[bytes, ...]:
        return tuple(pk for pk, root in self.sv.reveals if root == self.root)


@dataclass(frozen=True, slots=True)
class Stake(Record):
    """What one validator key has locked (DESIGN §5); bonds are not balances."""

    bond: int = wire(U64)
    """Base units bonded; the power of the next epoch's set is snapshotted from it."""
    randao_tip: bytes = wire(HASH)
    """The current tip of the key's randao hash chain."""
    jailed_until: int = wire(U64)
    """0 when not jailed; else the first height at which a Bond may un-jail the key."""


@dataclass(frozen=True, slots=True)
class Unbonding(Record):
    """Stake leaving a bond: still slashable until ``release``, then credited to the key."""

    pubkey: bytes = wire(PUBKEY)
    """The validator key whose bond it left."""
    amount: int = wire(U64)
    """Base units."""
    created: int = wire(U64)
    """Height of the block with the Unbond."""
    release: int = wire(U64)
    """created + unbonding_blocks: released at the end of this height's block."""


#: The sets of recent heights: (first height the set decides, its membership), oldest first.
RecentSets = tuple[tuple[int, Powers], ...]
#: Equivocations already punished: (validator public key, height of the infraction), sorted.
Punished = tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class _PowersRecord(Record):
    members: Powers = wire(list_of(tuple_of(PUBKEY, U64), MAX_VALIDATORS))


def powers_hash(powers: Powers) -> bytes:
    """The hash a header's ``validators_hash`` carries: ``[[pubkey, power], …]`` sorted by key
    (the same as ``ValidatorSet.hash``; the data layer needs it for the genesis header)."""
    return sha256(encode(_PowersRecord(powers).to_wire()))


def powers_of(members: Members) -> Powers:
    return tuple((pk, power) for pk, power, _ in members)


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
    """Coins in existence: genesis allocations and bonds plus minted rewards."""
    stakes: dict[bytes, Stake] = field(default_factory=dict)
    """Validator public key → its stake; absent means no bond."""
    unbonding: tuple[Unbonding, ...] = ()
    """Entries not yet released, in creation order."""
    validators: Members = ()
    """The set that decides the next height: (public key, power, priority) sorted by key; power
    is snapshotted at the epoch boundary, priorities advance one step per height."""
    mix: bytes = bytes(32)
    """The randao mix after this block (``mix[0]`` = the genesis hash)."""
    recent_sets: RecentSets = ()
    """(first height, membership) of every set that decided a height evidence may still name."""
    punished: Punished = ()
    """(validator, infraction height) already slashed, until the infraction ages out."""
    settled: tuple[SettledSv, ...] = ()
    """Settled SV tasks whose fraud window is still open, in settlement order."""

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
            [[pk, st.to_wire()] for pk, st in sorted(self.stakes.items())],
            [u.to_wire() for u in self.unbonding],
            [[pk, power, priority] for pk, power, priority in self.validators],
            self.mix,
            [[first, [[pk, power] for pk, power in powers]] for first, powers in self.recent_sets],
            [[pk, height] for pk, height in self.punished],
            [s.to_wire() for s in self.settled],
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, raw: Any) -> State:
        try:
            (
                accounts_raw,
                tasks_raw,
                queue_raw,
                supply,
                stakes_raw,
                unbonding_raw,
                members,
                mix,
                recent_raw,
                punished_raw,
                settled_raw,
            ) = raw
            accounts = {
                ADDRESS.unpack(a): Account(U64.unpack(b), U64.unpack(n)) for a, b, n in accounts_raw
            }
            tasks = {HASH.unpack(tid): TaskState.from_wire(t) for tid, t in tasks_raw}
            queue = tuple(SvTask.from_wire(sv) for sv in queue_raw)
            stakes = {PUBKEY.unpack(pk): Stake.from_wire(st) for pk, st in stakes_raw}
            unbonding = tuple(Unbonding.from_wire(u) for u in unbonding_raw)
            validators = tuple(
                (PUBKEY.unpack(pk), U64.unpack(p), I64.unpack(q)) for pk, p, q in members
            )
            recent = tuple(
                (U64.unpack(first), tuple((PUBKEY.unpack(pk), U64.unpack(p)) for pk, p in powers))
                for first, powers in recent_raw
            )
            punished = tuple((PUBKEY.unpack(pk), U64.unpack(h)) for pk, h in punished_raw)
            settled = tuple(SettledSv.from_wire(s) for s in settled_raw)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"State: {exc}") from exc
        return cls(
            accounts,
            tasks,
            queue,
            U64.unpack(supply),
            stakes,
            unbonding,
            validators,
            HASH.unpack(mix),
            recent,
            punished,
            settled,
        )

    @classmethod
    def decode(cls, data: bytes) -> State:
        return cls.from_wire(decode_raw(data))

    def root(self) -> bytes:
        return sha256(self.encode())

    def total_held(self) -> int:
        """Balances + bonds + unbonding + escrows; equals ``supply`` when coins are conserved."""
        return (
            sum(a.balance for a in self.accounts.values())
            + sum(st.bond for st in self.stakes.values())
            + sum(u.amount for u in self.unbonding)
            + sum(t.escrow for t in self.tasks.values())
        )

    def is_validator(self, pubkey: bytes) -> bool:
        """``pubkey`` is a member of this epoch's set."""
        return any(pk == pubkey for pk, _, _ in self.validators)

    def powers_at(self, height: int) -> Powers | None:
        """The membership that decided ``height``, if the state still keeps it."""
        found: Powers | None = None
        for first, powers in self.recent_sets:
            if first <= height:
                found = powers
        return found

    def bond_of(self, pubkey: bytes) -> int:
        found = self.stakes.get(pubkey)
        return 0 if found is None else found.bond

    def pending_for(self, task_id: bytes) -> bool:
        return any(sv.task_id == task_id for sv in self.queue)


class Draft:
    """A mutable overlay on a ``State``; ``freeze`` makes the next ``State``."""

    __slots__ = (
        "_accounts",
        "_stakes",
        "_tasks",
        "base",
        "queue",
        "supply",
        "unbonding",
        "validators",
        "mix",
        "recent_sets",
        "punished",
        "settled",
    )

    def __init__(self, base: State) -> None:
        self.base = base
        self._accounts: dict[bytes, Account] = {}
        self._tasks: dict[bytes, TaskState] = {}
        self._stakes: dict[bytes, Stake] = {}
        self.queue: list[SvTask] = list(base.queue)
        self.supply = base.supply
        self.unbonding: list[Unbonding] = list(base.unbonding)
        self.validators: Members = base.validators
        self.mix = base.mix
        self.recent_sets: RecentSets = base.recent_sets
        self.punished: Punished = base.punished
        self.settled: list[SettledSv] = list(base.settled)

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

    def open_for(self, task_id: bytes) -> int:
        """How many SV tasks of ``task_id`` are open."""
        return sum(sv.task_id == task_id for sv in self.queue)

    def stake(self, pubkey: bytes) -> Stake | None:
        found = self._stakes.get(pubkey)
        return found if found is not None else self.base.stakes.get(pubkey)

    def set_stake(self, pubkey: bytes, stake: Stake) -> None:
        self._stakes[pubkey] = stake

    def bonds(self) -> dict[bytes, Stake]:
        """Every stake as this draft sees it."""
        return {**self.base.stakes, **self._stakes}

    def freeze(self) -> State:
        accounts = self.base.accounts
        if self._accounts:
            accounts = {**accounts, **self._accounts}
        tasks = self.base.tasks
        if self._tasks:
            tasks = {**tasks, **self._tasks}
        stakes = self.base.stakes
        if self._stakes:
            stakes = {**stakes, **self._stakes}
        return State(
            accounts,
            tasks,
            tuple(self.queue),
            self.supply,
            stakes,
            tuple(self.unbonding),
            self.validators,
            self.mix,
            self.recent_sets,
            self.punished,
            tuple(self.settled),
        )
