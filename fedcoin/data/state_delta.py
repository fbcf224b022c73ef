"""What one block changed in the state: how the SQLite store keeps states between snapshots."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedcoin.data.state import Account, Stake, State, TaskState


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What one block changed: the new values of touched accounts, tasks and stakes, and every
    other (small) part of the state whole."""

    accounts: dict[bytes, Account]
    tasks: dict[bytes, TaskState]
    stakes: dict[bytes, Stake]
    rest: State
    """The child state with empty account, task and stake maps."""

    @classmethod
    def between(cls, parent: State, child: State) -> StateDelta:
        """The entries of ``child`` that differ from ``parent``'s."""
        pa, pt, ps = parent.accounts, parent.tasks, parent.stakes
        accounts = {
            a: v for a, v in child.accounts.items() if pa.get(a) is not v and pa.get(a) != v
        }
        tasks = {t: v for t, v in child.tasks.items() if pt.get(t) is not v and pt.get(t) != v}
        stakes = {k: v for k, v in child.stakes.items() if ps.get(k) is not v and ps.get(k) != v}
        return cls(accounts, tasks, stakes, replace(child, accounts={}, tasks={}, stakes={}))

    def apply(self, parent: State) -> State:
        accounts = {**parent.accounts, **self.accounts} if self.accounts else parent.accounts
        tasks = {**parent.tasks, **self.tasks} if self.tasks else parent.tasks
        stakes = {**parent.stakes, **self.stakes} if self.stakes else parent.stakes
        return replace(self.rest, accounts=accounts, tasks=tasks, stakes=stakes)

    def encode(self) -> bytes:
        return replace(
            self.rest, accounts=self.accounts, tasks=self.tasks, stakes=self.stakes
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> StateDelta:
        s = State.decode(data)
        return cls(s.accounts, s.tasks, s.stakes, replace(s, accounts={}, tasks={}, stakes={}))
