"""The mining loop of a full node: compute this node's PoSap share, collect others', propose.

Woken by a new head, transaction or share (or a short tick):
- an SV task heads the queue → make sure its content is here (local store, IPFS, peers),
  compute this node's share off the event loop, gossip it, collect others' (each verified
  on arrival) for ``share_window_ms``, then propose the settling block; void the round when
  ``posap_timeout_ms`` passed with no share at all (also when this node cannot value it);
- otherwise, with transactions waiting, propose a transaction-only block once
  ``min_block_interval_ms`` has passed since the head.
Each miner adds its own stagger (up to the window or interval again), drawn from the head's
hash and its key, so miners take turns instead of proposing competing blocks at once.

The loop runs under ``supervised``: no error ends it. ``SharePools`` holds the shares heard
for pending SV tasks, bounded: at most ``MAX_SHARES`` per task (the lowest miner keys, the
same choice ``build_block`` makes) and at most ``MAX_POOLS`` tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedcoin.application.chain_link import ChainLink
from fedcoin.application.content import ContentResolver
from fedcoin.application.mempool import Mempool
from fedcoin.application.supervise import supervised
from fedcoin.consensus.chain import Chain, Imported
from fedcoin.consensus.posap import PosapVerifier, make_share
from fedcoin.consensus.rules import build_block, select_shares
from fedcoin.data.block import MAX_SHARES, BlockHeader, PosapSection, Share
from fedcoin.data.encoding import sha256
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import State, SvTask, TaskState
from fedcoin.data.tx import ContentRef
from fedcoin.errors import BadTxInBlock, ContentMissing, FedCoinError, ShareError
from fedcoin.network.messages import BlockMessage, Message, ShareMessage

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
    genesis: Genesis
    chain: Chain
    link: ChainLink
    mempool: Mempool
    verifier: PosapVerifier
    resolver: ContentResolver
    shares: SharePools
    broadcast: Callable[[Message], None]
    clock_ms: Callable[[], int]
    wake: asyncio.Event
    validator: bool | None = None
    """Whether the key was a member of the set at the last step (None before the first)."""

    async def run(self) -> None:
        await supervised("mining step", self.step, self.wake, TICK_SECONDS, log)

    def is_member(self, state: State) -> bool:
        """Only validators propose and write shares; log once each time membership changes."""
        member = state.is_validator(self.key.public)
        if member != self.validator:
            if member:
                log.info("key %s is a validator: proposing and writing shares", self.key_text)
            else:
                log.info(
                    "key %s is not a validator: following the chain, not proposing", self.key_text
                )
            self.validator = member
        return member

    @property
    def key_text(self) -> str:
        return self.key.public.hex()[:16]

    async def step(self) -> None:
        now = self.clock_ms()
        head = self.chain.head
        state = self.chain.store.get_state(head.hash)  # that head's state, not a newer one
        if not self.is_member(state):
            return
        if not state.queue:
            interval = self.genesis.params.min_block_interval_ms
            if len(self.mempool) and now >= head.timestamp_ms + interval + self.stagger(
                head, interval
            ):
                await self.propose(state, head, now, None)
            return
        sv = state.queue[0]
        task = state.tasks[sv.task_id]
        params = task.spec.posap
        if (
            self.key.public not in self.shares.pool(sv.sv_task_id)
            and sv.sv_task_id not in self.shares.unvaluable
            and await self.value(sv, task, head)
        ):
            return
        pool = self.shares.pool(sv.sv_task_id)
        since = self.shares.first_ms.get(sv.sv_task_id)
        wait = params.share_window_ms + self.stagger(head, params.share_window_ms)
        if pool and since is not None and now >= since + wait:
            shares = select_shares([s for s in pool.values() if state.is_validator(s.miner_pubkey)])
            await self.propose(state, head, now, PosapSection(sv.sv_task_id, shares))
        elif not pool and now >= sv.queued_ms + params.posap_timeout_ms:
            await self.propose(state, head, now, PosapSection(sv.sv_task_id, ()))

    async def value(self, sv: SvTask, task: TaskState, head: BlockHeader) -> bool:
        """Compute and gossip this node's share; True when the step should start over."""
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
        if self.chain.head.hash != head.hash:
            return True  # the chain moved while we computed; start over
        self.shares.add(share, self.clock_ms())
        self.broadcast(ShareMessage(share))
        log.info("computed share for round %d of task %s", sv.round, sv.task_id.hex()[:12])
        return True

    def stagger(self, head: BlockHeader, span_ms: int) -> int:
        """This miner's turn on ``head``: a delay in [0, span_ms) drawn from the head's hash
        and the miner's key, different for every block. Whoever draws the shortest proposes
        first and the others usually see its block before their own turn, instead of every
        miner proposing at once and the forks resolving by hash."""
        draw = int.from_bytes(sha256(head.hash + self.key.public)[:4], "big")
        return draw % max(span_ms, 1)

    async def propose(
        self, state: State, head: BlockHeader, now: int, posap: PosapSection | None
    ) -> None:
        # Build only where the pool's nonces start: on the head it was last refreshed for (a
        # block import moves the head in a worker thread before the pool hears of it)
        if self.chain.head.hash != head.hash or self.mempool.follows not in (None, head.hash):
            return
        txs = self.mempool.select(self.genesis.params.max_block_txs)
        timestamp = max(now, head.timestamp_ms + 1)
        for _ in range(len(txs) + len(posap.shares if posap else ()) + 1):
            try:
                block, applied = await asyncio.to_thread(
                    build_block, state, head, self.genesis, self.verifier, self.key,
                    timestamp_ms=timestamp, txs=txs, posap=posap,
                )  # fmt: skip
            except BadTxInBlock as exc:
                if self.chain.head.hash != head.hash:
                    # A new head arrived while we built: the pool moved on to it, so a tx that
                    # fails on the old ``state`` is not bad. Dropping it would lose it and
                    # every later transaction of its sender.
                    return
                bad = txs[exc.details["index"]]
                log.info("dropping %s from the mempool: %s", bad.id.hex()[:12], exc)
                self.mempool.drop(bad.id)
                txs = self.mempool.select(self.genesis.params.max_block_txs)
                continue
            except ShareError:
                if posap is None:
                    raise
                posap = PosapSection(posap.sv_task_id, tuple(self.still_valid(state, head, posap)))
                continue
            if self.chain.head.hash != head.hash:
                return  # someone else's block arrived meanwhile
            result = await self.link.adopt(block, applied)
            if result.outcome is Imported.HEAD:
                self.broadcast(BlockMessage(block))
                what = "settles" if posap and posap.shares else "voids" if posap else "carries"
                log.info(
                    "proposed block %d (%s, %d txs, %d shares)", block.height, what, len(block.txs),
                    len(posap.shares) if posap else 0,
                )  # fmt: skip
            return

    def still_valid(self, state: State, head: BlockHeader, posap: PosapSection) -> Iterable[Share]:
        sv = state.queue[0]
        task = state.tasks[sv.task_id]
        for share in posap.shares:
            if not state.is_validator(share.miner_pubkey):
                self.shares.discard(sv.sv_task_id, share.miner_pubkey)
                continue
            try:
                self.verifier.verify_share(sv, task, share, head.hash)
            except ShareError as exc:
                log.warning("dropping a share that no longer verifies: %s", exc)
                self.shares.discard(sv.sv_task_id, share.miner_pubkey)
                continue
            yield share
