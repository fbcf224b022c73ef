"""The full node: chain store, content, P2P, HTTP API, mempool, consensus and the valuation worker.

``async with FullNode(config) as node`` opens the SQLite store and content store under the
data directory, serves peers and the API on one port, and runs Tendermint (``node_consensus``:
the driver, its private validator and its gossip handlers) and, on a validator, the PoSap
valuation worker (``miner``: tables, ``ShareCommit`` and ``ShareReveal`` transactions); leaving
the block (or SIGINT/SIGTERM in ``main.py full``) stops everything. Each committed block is one
SQLite transaction, so stopping at any moment loses no block that was committed. A node whose
key is not in the validator set follows: it commits what the validators decide (or syncs it,
with certificates) and serves the API.

Transactions are admitted signatures first (off the event loop), before any content fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from fedcoin.application.api import add_api_routes
from fedcoin.application.chain_link import ChainLink, wall_clock_ms
from fedcoin.application.content import ContentResolver, IpfsClient
from fedcoin.application.mempool import Mempool, check_signatures
from fedcoin.application.miner import Miner, TableCache, sv_refs
from fedcoin.application.node_consensus import ConsensusConfig, NodeConsensus
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.posap import LazyWorker, PosapVerifier
from fedcoin.consensus.validators import SignatureCache
from fedcoin.contract.task import validate_spec
from fedcoin.data.block import Block
from fedcoin.data.content import DEFAULT_MAX_BLOB, ContentStore
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import PrivateKey, format_address
from fedcoin.data.state import State
from fedcoin.data.store import SqliteChainStore
from fedcoin.data.tx import (
    ContentRef,
    FraudProof,
    PublishTask,
    ShareReveal,
    SubmitRound,
    Transaction,
)
from fedcoin.errors import (
    ContentMissing,
    FedCoinError,
    Ignore,
    Reject,
    RuleViolation,
    StartupError,
)
from fedcoin.network.messages import Message, TxMessage
from fedcoin.network.node import NetConfig, Notifier, P2PNode

log = logging.getLogger("fedcoin.node")
#: Rules a gossiped transaction breaks by being late, not malicious: ignored, not penalised.
LATE_RULES = frozenset(
    {"NonceMismatch", "InsufficientBalance", "RoundPending", "WrongRound", "TooManyOpenSv",
     "OutsideWindow", "DuplicateCommit", "DuplicateReveal", "UnknownSvTask", "UnknownSettledSv",
     "AlreadyDisproven"}
)  # fmt: skip


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
    advertise: str = ""
    """``host:port`` peers should dial to reach this node ("": the listen address)."""
    bootstrap: tuple[str, ...] = ()
    """Peers to keep connected (``host:port``)."""
    discover: bool = True
    """Dial peers learnt from other peers."""
    ipfs_api: str | None = None
    """IPFS HTTP API multiaddr (``/ip4/127.0.0.1/tcp/5001``) to fetch content by CID."""
    max_content_bytes: int = DEFAULT_MAX_BLOB
    """Largest blob accepted (uploads, fetches)."""
    mine: bool = True
    """Sign as a validator and value SV tasks when the key is in the set (False: follow only,
    never sign)."""
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    """Local consensus timeouts, heartbeat and test hooks."""
    vote_check: SignatureCache | None = None
    """Verified vote signatures; nodes of one process (a simulation) share one."""
    tables: TableCache | None = None
    """Computed PoSap tables; nodes of one process (a simulation) share one, so a table all
    honest validators compute identically is computed once (None: the node's own)."""
    clock_ms: Callable[[], int] = wall_clock_ms
    """Milliseconds since the epoch."""
    notifier: Notifier | None = None
    """Share one with other nodes in the same process (tests, simulations)."""
    link_delay_ms: float = 0.0
    """Benchmark hook: emulated network latency on every frame from a peer (0: none)."""


async def connect_ipfs(api: str) -> IpfsClient:
    """An IPFS client whose daemon answered; ``StartupError`` naming the address if not."""

    def probe() -> IpfsClient:
        with warnings.catch_warnings():  # urllib3's FutureWarning is noise to a user here
            warnings.simplefilter("ignore")
            ipfs = IpfsClient(api)
            ipfs.client.version()
            return ipfs

    try:
        ipfs = await asyncio.to_thread(probe)
    except Exception as exc:  # noqa: BLE001 - the client raises many types; all mean "down"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise StartupError(f"IPFS daemon at {api} is not answering: {reason}") from None
    return ipfs


class FullNode:
    def __init__(self, config: FullNodeConfig) -> None:
        self.config = config
        self.genesis = config.genesis
        self.key = config.key
        self.notifier = config.notifier or Notifier()
        self.wake = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._mining: asyncio.Task[None] | None = None
        self.miner: Miner | None = None
        self.consensus: NodeConsensus | None = None

    # --- lifetime ---------------------------------------------------------------------------
    async def __aenter__(self) -> FullNode:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()  # close what did open: no half-started node
            raise
        return self

    async def _start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SqliteChainStore(cfg.data_dir / "chain.sqlite", self.genesis)
        self._stack.callback(self.store.close)
        self.content = ContentStore(cfg.data_dir / "content", cfg.max_content_bytes)
        ipfs = await connect_ipfs(cfg.ipfs_api) if cfg.ipfs_api else None
        self.resolver = ContentResolver(self.content, self._peer_addresses, ipfs)
        self._stack.push_async_callback(self.resolver.close)
        # sampled tables' estimates run in a worker process, off this process's GIL
        estimator = LazyWorker()
        self._stack.callback(estimator.shutdown)
        self.verifier = PosapVerifier(self.resolver, estimator=estimator)
        vote_check = cfg.vote_check if cfg.vote_check is not None else SignatureCache()
        self.chain = Chain(self.store, self.genesis, self.verifier, vote_check=vote_check)
        self.mempool = Mempool(
            self.genesis, self.verifier, on_change=self._poke, follows=self.chain.head.hash
        )
        self.link = ChainLink(
            self.chain, cfg.clock_ms, prepare=self._prefetch, on_committed=[self._on_committed]
        )
        app = web.Application(client_max_size=cfg.max_content_bytes + 64 * 1024)
        add_api_routes(app, self, max_content=cfg.max_content_bytes)
        net = NetConfig(
            chain_id=self.genesis.chain_id,
            genesis=self.genesis.block().hash,
            host=cfg.host,
            port=cfg.port,
            advertise=cfg.advertise,
            bootstrap=cfg.bootstrap,
            discover=cfg.discover,
            max_message_bytes=max(16 * 1024 * 1024, 2 * cfg.max_content_bytes),
            link_delay_ms=cfg.link_delay_ms,
        )
        self.p2p = P2PNode(net, self.link, self.key, app=app, notifier=self.notifier)
        self.p2p.register(TxMessage, self._on_tx)
        try:
            await self._stack.enter_async_context(self.p2p)
        except OSError as exc:
            where = f"{cfg.host}:{cfg.port}"
            raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self.consensus = NodeConsensus(
            chain=self.chain, link=self.link, mempool=self.mempool,
            p2p=self.p2p, key=self.key, validator=cfg.mine, data_dir=cfg.data_dir,
            config=cfg.consensus, vote_check=vote_check, prepare=self._prefetch,
            clock_ms=cfg.clock_ms,
        )  # fmt: skip
        self._stack.push_async_callback(self.consensus.stop)
        self.consensus.start()
        if cfg.mine:
            self.miner = Miner(
                self.key, self.chain, self.verifier, self.resolver, self.mempool,
                self.submit_tx, self.wake, cfg.tables or TableCache(), self._halted,
            )  # fmt: skip
            self._mining = asyncio.create_task(self.miner.run(), name="valuation")
        head = self.chain.head
        log.info(
            "full node %s serving on %s, head %s at height %d",
            format_address(self.key.address), self.address, head.hash.hex()[:12], head.height,
        )  # fmt: skip

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

    def _halted(self) -> bool:
        return self.consensus is not None and self.consensus.driver.crashed

    def _poke(self) -> None:
        self.wake.set()
        self.notifier.notify()
        if self.consensus is not None:
            self.consensus.driver.poke()

    def status(self) -> dict[str, Any]:
        head = self.chain.head
        return {
            "chain_id": self.genesis.chain_id,
            "genesis": self.genesis.block().hash.hex(),
            "node": format_address(self.key.address),
            "address": self.address,
            "head": head.hash.hex(),
            "height": head.height,
            "timestamp_ms": head.timestamp_ms,
            "peers": sorted(p.name for p in self.p2p.peers.values()),
            "mempool": len(self.mempool),
            "pending_sv_tasks": len(self.chain.head_state().queue),
        }

    # --- content ----------------------------------------------------------------------------
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
            elif isinstance(tx.body, PublishTask):
                refs += [tx.body.spec.model, tx.body.spec.validation]
        # PoSap: a reveal is checked against the game's largest U, a fraud proof and a
        # settlement may evaluate coalitions: all read the SV task's content
        named = {
            t.body.sv_task_id for t in block.txs if isinstance(t.body, ShareReveal | FraudProof)
        }
        settling = [sv for sv in state.queue if sv.commit_end < block.height <= sv.reveal_end]
        for sv in [*state.queue, *(s.sv for s in state.settled)]:
            task = state.tasks.get(sv.task_id)
            if task is not None and (sv.sv_task_id in named or sv in settling):
                refs += sv_refs(sv, task)
        await self.resolver.ensure(refs)

    # --- gossip handlers --------------------------------------------------------------------
    def _on_committed(self, block: Block, synced: bool) -> None:
        state = self.chain.head_state()
        self.mempool.refresh(state, block.height, self.config.clock_ms(), head=block.hash)
        if synced and self.consensus is not None:
            self.consensus.driver.chain_moved()
        self._poke()

    async def _admit(self, tx: Transaction) -> None:
        """Check signatures (off the event loop), then fetch what a round needs, then add to
        the mempool; raise what the tx breaks. Nothing is fetched for an unsigned tx."""
        await asyncio.to_thread(check_signatures, tx)
        if isinstance(tx.body, SubmitRound):
            await self.resolver.ensure(self._round_refs(tx.body, self.chain.head_state()))
            task = self.chain.head_state().tasks.get(tx.body.task_id)
            if task is not None:  # the FedAvg check is numpy work: do it off the event loop
                await asyncio.to_thread(self.verifier.check_round, task, tx.body)
        elif isinstance(tx.body, PublishTask):  # fetch and keep the task's content, then check it
            validate_spec(tx.body.spec, self.chain.head.height + 1)  # no fetch for a bad spec
            await self.resolver.ensure([tx.body.spec.model, tx.body.spec.validation])
            await asyncio.to_thread(self.verifier.check_task, tx.body.spec)
        head, state = self.chain.head, self.chain.head_state()
        self.mempool.add(tx, state, head.height, self.config.clock_ms(), signature_checked=True)

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
            if exc.rule in LATE_RULES:
                raise Ignore(str(exc)) from None
            raise Reject(str(exc)) from None
        except FedCoinError as exc:
            raise Ignore(str(exc)) from None
        except Exception as exc:
            log.exception("transaction %s could not be checked", tx.id.hex()[:12])
            raise Reject(f"transaction could not be checked: {type(exc).__name__}") from None
