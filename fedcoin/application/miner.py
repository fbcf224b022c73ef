"""The share worker of a validator: compute this node's PoSap share, gossip it, collect others'.

Woken by a new committed block or a share (or a short tick): when an SV task heads the queue,
make sure its content is here (local store, IPFS, peers), compute this node's share off the
event loop and gossip it. Others' shares are verified on arrival (``full_node``) and kept in
``SharePools``; the consensus driver's proposer reads them when it builds a block
(``bft_ledger``). Proposing is the driver's: there is no mining loop and no stagger any more.

The loop runs under ``supervised``: no error ends it. ``SharePools`` holds the shares heard
for pending SV tasks, bounded: at most ``MAX_SHARES`` per task (the lowest miner keys, the
same choice ``build_block`` makes) and at most ``MAX_POOLS`` tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedcoin.application.content import ContentResolver
from fedcoin.application.supervise import supervised
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.posap import PosapVerifier, make_share
from fedcoin.data.block import MAX_SHARES, BlockHeader, Share
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import State, SvTask, TaskState
from fedcoin.data.tx import ContentRef
from fedcoin.errors import ContentMissing, FedCoinError
from fedcoin.network.messages import Message, ShareMessage

log = logging.getLogger("fedcoin.miner")
TICK_SECONDS = 0.1
MAX_POOLS = 16


def sv_refs(sv: SvTask, task: TaskState) -> list[ContentRef]:
    """Everything valuing an SV task reads."""
    return [task.spec.model, task.spec.validation, sv.prev_global, *(u.weights for u in sv.updates)]


class SharePools:
    """Verified shares per pending SV task, bounded, and when the first one came."""

    def __init__(self) -> None:
        self.pools: dict[bytes, dict[bytes, Share]] = {}
        self.first_ms: dict[bytes, int] = {}
        self.unvaluable: set[bytes] = set()
        """SV tasks this node failed to value (it waits for others' shares or the timeout)."""

    def pool(self, sv_task_id: bytes) -> dict[bytes, Share]:
        return self.pools.get(sv_task_id, {})

    def wants(self, sv_task_id: bytes, miner: bytes) -> bool:
        """Would a share by ``miner`` be kept (new, and among the lowest ``MAX_SHARES`` keys)?"""
        pool = self.pools.get(sv_task_id)
        if pool is None:
            return len(self.pools) < MAX_POOLS
        if miner in pool:
            return False
        return len(pool) < MAX_SHARES or miner < max(pool)

    def add(self, share: Share, now_ms: int) -> bool:
        """Keep ``share`` if wanted, dropping the highest key beyond ``MAX_SHARES``."""
        if not self.wants(share.sv_task_id, share.miner_pubkey):
            return False
        pool = self.pools.setdefault(share.sv_task_id, {})
        pool[share.miner_pubkey] = share
        if len(pool) > MAX_SHARES:
            del pool[max(pool)]
        self.first_ms.setdefault(share.sv_task_id, now_ms)
        return True

    def discard(self, sv_task_id: bytes, miner: bytes) -> None:
        self.pools.get(sv_task_id, {}).pop(miner, None)

    def keep_only(self, sv_task_ids: Iterable[bytes]) -> None:
        """Forget pools of SV tasks no longer pending."""
        keep = set(sv_task_ids)
        for sv_id in [s for s in self.pools if s not in keep]:
            del self.pools[sv_id]
        for sv_id in [s for s in self.first_ms if s not in keep]:
            del self.first_ms[sv_id]
        self.unvaluable &= keep


@dataclass
class Miner:
    key: PrivateKey
    chain: Chain
    verifier: PosapVerifier
    resolver: ContentResolver
    shares: SharePools
    broadcast: Callable[[Message], None]
    clock_ms: Callable[[], int]
    wake: asyncio.Event
    validator: bool | None = None
    """Whether the key was a member of the set at the last step (None before the first)."""

    async def run(self) -> None:
        await supervised("share step", self.step, self.wake, TICK_SECONDS, log)

    def is_member(self, state: State) -> bool:
        """Only validators propose and write shares; log once each time membership changes."""
        member = state.is_validator(self.key.public)
        if member != self.validator:
            if member:
                log.info("key %s is a validator: writing shares", self.key_text)
            else:
                log.info("key %s is not a validator: writing no shares", self.key_text)
            self.validator = member
        return member

    @property
    def key_text(self) -> str:
        return self.key.public.hex()[:16]

    async def step(self) -> None:
        head = self.chain.head
        state = self.chain.store.get_state(head.hash)  # that head's state, not a newer one
        if not self.is_member(state) or not state.queue:
            return
        sv = state.queue[0]
        if (
            self.key.public not in self.shares.pool(sv.sv_task_id)
            and sv.sv_task_id not in self.shares.unvaluable
        ):
            await self.value(sv, state.tasks[sv.task_id], head)

    async def value(self, sv: SvTask, task: TaskState, head: BlockHeader) -> bool:
        """Compute and gossip this node's share; True when it was gossiped."""
        try:
            await self.resolver.ensure(sv_refs(sv, task))
        except ContentMissing as exc:
            log.warning("cannot value round %d yet: %s", sv.round, exc)
            return False
        try:
            game = await asyncio.to_thread(self.verifier.game, sv, task)
            share = await asyncio.to_thread(make_share, sv, task.spec.posap, game, self.key)
        except Exception as exc:
            # Content that cannot be valued will not improve by retrying every tick: wait for
            # others' shares or void the round at the timeout.
            self.shares.unvaluable.add(sv.sv_task_id)
            if not isinstance(exc, FedCoinError):
                raise
            log.warning("cannot value round %d: %s", sv.round, exc)
            return False
        if self.chain.head.hash != head.hash and not any(
            s.sv_task_id == sv.sv_task_id for s in self.chain.head_state().queue
        ):
            return False  # settled while we computed
        self.shares.add(share, self.clock_ms())
        self.broadcast(ShareMessage(share))
        log.info("computed share for round %d of task %s", sv.round, sv.task_id.hex()[:12])
        return True
