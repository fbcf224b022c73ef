"""The full node (a miner): chain store, content, P2P, HTTP API, mempool and the PoSap loop.

``async with FullNode(config) as node`` opens the SQLite store and content store under the
data directory, serves peers and the API on one port, and runs the mining loop; leaving the
block (or SIGINT/SIGTERM in ``main.py full``) stops everything. Each block is one SQLite
transaction, so stopping at any moment loses no block that was acknowledged.

The mining loop, woken by a new head, transaction or share (or a short tick):
- an SV task heads the queue → make sure its content is here (local store, IPFS, peers),
  compute this node's share off the event loop, gossip it, collect others' (each verified
  on arrival) for ``share_window_ms``, then propose the settling block; void the round when
  ``posap_timeout_ms`` passed with no share at all;
- otherwise, with transactions waiting, propose a transaction-only block once
  ``min_block_interval_ms`` has passed since the head.
Each miner adds its own stagger (up to the window or interval again), drawn from the head's
hash and its key, so miners take turns instead of proposing competing blocks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from fedcoin.application.api import add_api_routes
from fedcoin.application.chain_link import ChainLink, wall_clock_ms
from fedcoin.application.content import ContentResolver, IpfsClient
from fedcoin.application.mempool import Mempool
from fedcoin.consensus.chain import Chain, Imported, ImportResult
from fedcoin.consensus.posap import PosapVerifier, make_share
from fedcoin.consensus.rules import build_block
from fedcoin.data.block import Block, BlockHeader, PosapSection, Share
from fedcoin.data.content import DEFAULT_MAX_BLOB, ContentStore
from fedcoin.data.encoding import sha256
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import PrivateKey, address_of, format_address
from fedcoin.data.state import State, SvTask, TaskState
from fedcoin.data.store import SqliteChainStore
from fedcoin.data.tx import ContentRef, PublishTask, SubmitRound, Transaction
from fedcoin.errors import (
    BadTxInBlock,
    ContentMissing,
    FedCoinError,
    Ignore,
    Reject,
    RuleViolation,
    ShareError,
)
from fedcoin.network.messages import BlockMessage, Message, ShareMessage, TxMessage
from fedcoin.network.node import NetConfig, Notifier, P2PNode, wait_event

log = logging.getLogger("fedcoin.node")
TICK_SECONDS = 0.1


@dataclass
class FullNodeConfig:
    data_dir: Path
    """Chain store (``chain.sqlite``) and content (``content/``) live here."""
    genesis: Genesis
    """The network."""
    key: PrivateKey
    """The node's key: its P2P identity and the address it mines to."""
    host: str = "127.0.0.1"
    """Interface for peers and the API."""
    port: int = 0
    """Port for peers and the API; 0 asks the OS."""
    bootstrap: tuple[str, ...] = ()
    """Peers to keep connected (``host:port``)."""
    discover: bool = True
    """Dial peers learnt from other peers."""
    ipfs_api: str | None = None
    """IPFS HTTP API multiaddr (``/ip4/127.0.0.1/tcp/5001``) to fetch content by CID."""
    max_content_bytes: int = DEFAULT_MAX_BLOB
    """Largest blob accepted (uploads, fetches)."""
    mine: bool = True
    """Compute shares and propose blocks (False: a validating node only)."""
    clock_ms: Callable[[], int] = wall_clock_ms
    """Milliseconds since the epoch."""
    notifier: Notifier | None = None
    """Share one with other nodes in the same process (tests, simulations)."""


class FullNode:
    def __init__(self, config: FullNodeConfig) -> None:
        self.config = config
        self.genesis = config.genesis
        self.key = config.key
        self.notifier = config.notifier or Notifier()
        self.wake = asyncio.Event()
        self.shares: dict[bytes, dict[bytes, Share]] = {}
        self.first_share_ms: dict[bytes, int] = {}
        self._stack = contextlib.AsyncExitStack()
        self._mining: asyncio.Task[None] | None = None

    # --- lifetime ---------------------------------------------------------------------------
    async def __aenter__(self) -> FullNode:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SqliteChainStore(cfg.data_dir / "chain.sqlite", self.genesis)
        self._stack.callback(self.store.close)
        self.content = ContentStore(cfg.data_dir / "content", cfg.max_content_bytes)
        ipfs = IpfsClient(cfg.ipfs_api) if cfg.ipfs_api else None
        self.resolver = ContentResolver(self.content, self._peer_addresses, ipfs)
        self._stack.push_async_callback(self.resolver.close)
        self.verifier = PosapVerifier(self.resolver)
        self.chain = Chain(self.store, self.genesis, self.verifier)
        self.link = ChainLink(self.chain, cfg.clock_ms)
        self.link.prepare = self._prefetch
        self.link.on_imported.append(self._on_imported)
        self.mempool = Mempool(self.genesis, self.verifier)
        self.mempool.on_change = self._poke
        app = web.Application(client_max_size=cfg.max_content_bytes + 64 * 1024)
        add_api_routes(app, self, max_content=cfg.max_content_bytes)
        net = NetConfig(
            chain_id=self.genesis.chain_id,
            genesis=self.genesis.block().hash,
            host=cfg.host,
            port=cfg.port,
            bootstrap=cfg.bootstrap,
            discover=cfg.discover,
            max_message_bytes=max(16 * 1024 * 1024, 2 * cfg.max_content_bytes),
        )
        self.p2p = P2PNode(net, self.link, self.key, app=app, notifier=self.notifier)
        self.p2p.register(BlockMessage, self._on_block)
        self.p2p.register(TxMessage, self._on_tx)
        self.p2p.register(ShareMessage, self._on_share)
        await self._stack.enter_async_context(self.p2p)
        if cfg.mine:
            self._mining = asyncio.create_task(self._mine(), name="mining")
        head = self.chain.head
        log.info(
            "full node %s serving on %s, head %s at height %d",
            format_address(self.key.address), self.address, head.hash.hex()[:12], head.height,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._mining is not None:
            self._mining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mining
        height = self.store.head().height
        await self._stack.aclose()
        log.info("full node stopped at height %d", height)

    @property
    def address(self) -> str:
        return self.p2p.listen

    @property
    def url(self) -> str:
        return f"http://{self.p2p.listen}"

    def _peer_addresses(self) -> Iterable[str]:
        seen = [p.hello.listen for p in self.p2p.peers.values() if p.hello and p.hello.listen]
        return seen + [a for a in self.config.bootstrap if a not in seen]

    def _poke(self) -> None:
        self.wake.set()
        self.notifier.notify()

    def status(self) -> dict[str, Any]:
        head = self.chain.head
        return {
            "chain_id": self.genesis.chain_id,
            "genesis": self.genesis.block().hash.hex(),
            "node": format_address(self.key.address),
            "address": self.address,
            "head": head.hash.hex(),
            "height": head.height,
            "weight": head.weight,
            "timestamp_ms": head.timestamp_ms,
            "peers": sorted(p.name for p in self.p2p.peers.values()),
            "mempool": len(self.mempool),
            "pending_sv_tasks": len(self.chain.head_state().queue),
        }

    # --- content ----------------------------------------------------------------------------
    @staticmethod
    def sv_refs(sv: SvTask, task: TaskState) -> list[ContentRef]:
        return [
            task.spec.model,
            task.spec.validation,
            sv.prev_global,
            *(u.weights for u in sv.updates),
        ]

    def _round_refs(
        self, body: SubmitRound, state: State, block: Block | None = None
    ) -> list[ContentRef]:
        refs = [u.weights for u in body.updates] + [body.global_model]
        task = state.tasks.get(body.task_id)
        if task is not None:
            refs.append(task.spec.model)
        elif block is not None:
            for tx in block.txs:
                if isinstance(tx.body, PublishTask) and tx.id == body.task_id:
                    refs.append(tx.body.spec.model)
        return refs

    async def _prefetch(self, block: Block) -> None:
        """Fetch everything validating ``block`` will read."""
        parent = self.store.get_header(block.parent)
        if parent is None:
            return  # the import will report the unknown parent
        state = self.store.get_state(parent.hash)
        refs: list[ContentRef] = []
        for tx in block.txs:
            if isinstance(tx.body, SubmitRound):
                refs += self._round_refs(tx.body, state, block)
        if block.posap is not None and block.posap.shares and state.queue:
            sv = state.queue[0]
            refs += self.sv_refs(sv, state.tasks[sv.task_id])
        await self.resolver.ensure(refs)

    # --- gossip handlers --------------------------------------------------------------------
    async def _on_block(self, message: Message, peer: object) -> None:
        await self.link.on_block(message, peer)

    def _on_imported(self, block: Block, result: ImportResult) -> None:
        if result.outcome is Imported.HEAD:
            state = self.chain.head_state()
            self.mempool.refresh(state, block.height, self.config.clock_ms())
            queued = {sv.sv_task_id for sv in state.queue}
            for sv_id in list(self.shares):
                if sv_id not in queued:
                    del self.shares[sv_id]
                    self.first_share_ms.pop(sv_id, None)
        self._poke()

    async def _admit(self, tx: Transaction) -> None:
        """Fetch what a round needs, then add to the mempool; raise what the tx breaks."""
        head, state = self.chain.head, self.chain.head_state()
        if isinstance(tx.body, SubmitRound):
            await self.resolver.ensure(self._round_refs(tx.body, state))
        self.mempool.add(tx, state, head.height, self.config.clock_ms())

    async def submit_tx(self, tx: Transaction) -> None:
        """Admit a transaction to the mempool and gossip it; raise the rule it breaks."""
        if tx.id in self.mempool:
            return
        await self._admit(tx)
        self.p2p.broadcast(TxMessage(tx))
        log.info(
            "accepted %s %s from %s", tx.kind_name, tx.id.hex()[:12], format_address(tx.sender)
        )

    async def _on_tx(self, message: Message, peer: object) -> None:
        if not isinstance(message, TxMessage):
            raise Reject("not a transaction")
        tx = message.tx
        if tx.id in self.mempool:
            raise Ignore("known transaction")
        try:
            await self._admit(tx)
        except ContentMissing as exc:
            raise Ignore(str(exc)) from None
        except RuleViolation as exc:
            # A nonce already used or a balance already spent is just late, not malicious.
            if exc.rule in ("NonceMismatch", "InsufficientBalance", "RoundPending", "WrongRound"):
                raise Ignore(str(exc)) from None
            raise Reject(str(exc)) from None
        except FedCoinError as exc:
            raise Ignore(str(exc)) from None

    async def _on_share(self, message: Message, peer: object) -> None:
        if not isinstance(message, ShareMessage):
            raise Reject("not a share")
        share = message.share
        state = self.chain.head_state()
        sv = next((s for s in state.queue if s.sv_task_id == share.sv_task_id), None)
        if sv is None:
            raise Ignore("share for an SV task that is not pending here")
        pool = self.shares.setdefault(sv.sv_task_id, {})
        if share.miner_pubkey in pool:
            raise Ignore("already have this miner's share")
        task = state.tasks[sv.task_id]
        try:
            await self.resolver.ensure(self.sv_refs(sv, task))
        except ContentMissing as exc:
            raise Ignore(str(exc)) from None
        if not share.signature_ok() or len(share.estimate) != sv.n:
            raise Reject("malformed or unsigned share")
        try:
            await asyncio.to_thread(
                self.verifier.verify_share, sv, task, share, self.chain.head.hash
            )
        except ShareError as exc:
            raise Reject(str(exc)) from None
        pool[share.miner_pubkey] = share
        self.first_share_ms.setdefault(sv.sv_task_id, self.config.clock_ms())
        log.info(
            "share for round %d from %s", sv.round, format_address(address_of(share.miner_pubkey))
        )
        self._poke()

    # --- mining -----------------------------------------------------------------------------
    async def _mine(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self._mine_step()
            except FedCoinError as exc:
                log.warning("mining step failed: %s", exc)
            await wait_event(self.wake, TICK_SECONDS)

    async def _mine_step(self) -> None:
        now = self.config.clock_ms()
        head, state = self.chain.head, self.chain.head_state()
        if state.queue:
            sv = state.queue[0]
            task = state.tasks[sv.task_id]
            params = task.spec.posap
            pool = self.shares.setdefault(sv.sv_task_id, {})
            if self.key.public not in pool:
                try:
                    await self.resolver.ensure(self.sv_refs(sv, task))
                except ContentMissing as exc:
                    log.warning("cannot value round %d yet: %s", sv.round, exc)
                else:
                    game = await asyncio.to_thread(self.verifier.game, sv, task)
                    share = await asyncio.to_thread(make_share, sv, params, game, self.key)
                    if self.chain.head.hash != head.hash:
                        return  # the chain moved while we computed; start over
                    pool[self.key.public] = share
                    self.first_share_ms.setdefault(sv.sv_task_id, self.config.clock_ms())
                    self.p2p.broadcast(ShareMessage(share))
                    log.info(
                        "computed share for round %d of task %s", sv.round, sv.task_id.hex()[:12]
                    )
                    return
            since = self.first_share_ms.get(sv.sv_task_id)
            wait = params.share_window_ms + self._stagger(head, params.share_window_ms)
            if pool and since is not None and now >= since + wait:
                shares = tuple(sorted(pool.values(), key=lambda s: s.miner_pubkey))
                await self._propose(state, head, now, PosapSection(sv.sv_task_id, shares))
            elif not pool and now >= sv.queued_ms + params.posap_timeout_ms:
                await self._propose(state, head, now, PosapSection(sv.sv_task_id, ()))
        else:
            interval = self.genesis.params.min_block_interval_ms
            if len(self.mempool) and now >= head.timestamp_ms + interval + self._stagger(
                head, interval
            ):
                await self._propose(state, head, now, None)

    def _stagger(self, head: BlockHeader, span_ms: int) -> int:
        """This miner's turn on ``head``: a delay in [0, span_ms) drawn from the head's hash
        and the miner's key, different for every block. Whoever draws the shortest proposes
        first and the others usually see its block before their own turn, instead of every
        miner proposing at once and the forks resolving by hash."""
        draw = int.from_bytes(sha256(head.hash + self.key.public)[:4], "big")
        return draw % max(span_ms, 1)

    async def _propose(
        self, state: State, head: BlockHeader, now: int, posap: PosapSection | None
    ) -> None:
        txs = self.mempool.select(self.genesis.params.max_block_txs)
        timestamp = max(now, head.timestamp_ms + 1)
        for _ in range(len(txs) + len(posap.shares if posap else ()) + 1):
            try:
                block, applied = await asyncio.to_thread(
                    build_block, state, head, self.genesis, self.verifier, self.key,
                    timestamp_ms=timestamp, txs=txs, posap=posap,
                )  # fmt: skip
            except BadTxInBlock as exc:
                bad = txs[exc.details["index"]]
                log.info("dropping %s from the mempool: %s", bad.id.hex()[:12], exc)
                self.mempool.drop(bad.id)
                txs = self.mempool.select(self.genesis.params.max_block_txs)
                continue
            except ShareError:
                if posap is None:
                    raise
                posap = PosapSection(posap.sv_task_id, tuple(self._still_valid(state, head, posap)))
                continue
            if self.chain.head.hash != head.hash:
                return  # someone else's block arrived meanwhile
            result = await self.link.adopt(block, applied)
            if result.outcome is Imported.HEAD:
                self.p2p.broadcast(BlockMessage(block))
                what = "settles" if posap and posap.shares else "voids" if posap else "carries"
                log.info(
                    "proposed block %d (%s, %d txs, %d shares)", block.height, what, len(block.txs),
                    len(posap.shares) if posap else 0,
                )  # fmt: skip
            return

    def _still_valid(self, state: State, head: BlockHeader, posap: PosapSection) -> Iterable[Share]:
        sv = state.queue[0]
        task = state.tasks[sv.task_id]
        for share in posap.shares:
            try:
                self.verifier.verify_share(sv, task, share, head.hash)
            except ShareError as exc:
                log.warning("dropping a share that no longer verifies: %s", exc)
                self.shares.get(sv.sv_task_id, {}).pop(share.miner_pubkey, None)
                continue
            yield share
