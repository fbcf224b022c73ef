"""A minimal block-producing harness for network tests: nodes with a chain, no consensus loop.

Each ``NetNode`` has a memory chain store, the table-driven verifier, a ``ChainLink`` and a
counting transaction handler, and a ``P2PNode`` on 127.0.0.1 with a port from the OS.
``produce`` builds a block on the node's head, commits it with a real certificate (precommits
of more than 2/3 of the test validators, ``tests.helpers.certify``) and gossips it as a signed
``ProposalMessage``. Network tests care about carrying, relaying and bounding frames, not about
voting: a receiver takes the certificate from ``CERTIFICATES`` (one per block, shared by the
process, as if the precommits had been gossiped) and commits the block through its
``ChainLink``; a block this oracle does not know (forged) is rejected, one of a height ahead
makes the receiver sync committed blocks from the sender. Waiting is on facts:
``wait_until`` re-checks a predicate whenever any node's state changes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from fedcoin.application.chain_link import ChainLink
from fedcoin.consensus.chain import Chain, Imported
from fedcoin.consensus.validators import SignatureCache
from fedcoin.data.block import Block
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import TAG_HELLO
from fedcoin.data.store import MemoryChainStore
from fedcoin.data.tx import Transaction, Transfer, make_tx
from fedcoin.data.vote import TAG_PROPOSAL, CommitCertificate, Proposal
from fedcoin.errors import FedCoinError, Ignore, NeedsSync, Reject, UnknownParent
from fedcoin.network.messages import (
    PROTOCOL_VERSION,
    Auth,
    Hello,
    Message,
    ProposalMessage,
    TxMessage,
    auth_digest,
    decode_frames,
    decode_message,
    encode_message,
)
from fedcoin.network.node import NetConfig, Notifier, P2PNode
from fedcoin.network.peers import PeerLimits
from fedcoin.network.transport import TransportError, WebSocketConnection, connect
from tests.helpers import CHAIN_ID, VOTE_CHECK, TableVerifier, certify, key, make_genesis, reveal_of

TIMEOUT = 20.0
#: The certificate of every block any ``NetNode`` produced (the gossiped precommits' stand-in).
CERTIFICATES: dict[bytes, CommitCertificate] = {}


class NetNode:
    def __init__(
        self,
        name: str,
        genesis: Genesis,
        *,
        limits: PeerLimits | None = None,
        notifier: Notifier | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
        bootstrap: Sequence[str] = (),
        discover: bool = False,
        vote_check: SignatureCache | None = None,
        **config: Any,
    ) -> None:
        self.name = name
        self.key = key(f"node-{name}")
        self.genesis = genesis
        self.store = MemoryChainStore(genesis)
        check = VOTE_CHECK if vote_check is None else vote_check
        self.chain = Chain(self.store, genesis, TableVerifier(), vote_check=check)
        self.link = ChainLink(self.chain, clock_ms=lambda: 2_000_000_000_000)
        config = NetConfig(
            chain_id=genesis.chain_id,
            genesis=genesis.block().hash,
            bootstrap=tuple(bootstrap),
            discover=discover,
            max_message_bytes=max_message_bytes,
            limits=limits or PeerLimits(),
            **config,
        )
        self.p2p = P2PNode(config, self.link, self.key, notifier=notifier)
        self.txs: Counter[bytes] = Counter()
        self.blocks: Counter[bytes] = Counter()
        #: How often the router handed each message id to a handler (the seen-cache's job
        #: is to make this at most one per node).
        self.handled: Counter[bytes] = Counter()
        self.p2p.register(TxMessage, self._on_tx)
        self.p2p.register(ProposalMessage, self._on_block)

    async def _on_tx(self, message: Message, peer: object) -> None:
        if not isinstance(message, TxMessage):
            raise Reject("not a tx")
        self.handled[message.tx.id] += 1
        if not message.tx.signature_ok():
            raise Reject("bad transaction signature")
        if message.tx.id in self.txs:
            raise Ignore("known tx")
        self.txs[message.tx.id] += 1

    async def _on_block(self, message: Message, peer: object) -> None:
        if not isinstance(message, ProposalMessage):
            raise Reject("not a proposal")
        block = message.block
        self.handled[block.hash] += 1
        certificate = CERTIFICATES.get(block.hash)
        if certificate is None or message.proposal.block_id != block.hash:
            raise Reject("no certificate for this block")
        try:
            result = await self.link.commit(block, certificate)
        except UnknownParent:
            raise NeedsSync(f"block {block.height} is ahead of us") from None
        except FedCoinError as exc:
            raise Reject(str(exc)) from None
        if result.outcome is Imported.KNOWN:
            raise Ignore("known block")
        self.blocks[block.hash] += 1

    @property
    def address(self) -> str:
        return self.p2p.listen

    @property
    def head(self) -> bytes:
        return self.chain.head.hash

    async def produce(self, txs: Sequence[Transaction] = (), *, gossip: bool = True) -> Block:
        """Build a block on our head (a self-transfer if no txs given), commit it with a
        certificate and gossip it as this node's proposal."""
        parent = self.chain.head
        state = self.chain.head_state()
        proposer = self.key
        if not txs:
            nonce = state.account(proposer.address).nonce
            txs = [make_tx(proposer, CHAIN_ID, nonce, Transfer(proposer.address, 1))]
        block, _ = self.chain.propose(
            proposer.public, reveal_of(proposer, state), txs=txs,
            timestamp_ms=parent.timestamp_ms + self.genesis.params.min_block_interval_ms,
        )  # fmt: skip
        certificate = certify(block, state)
        CERTIFICATES[block.hash] = certificate
        await self.link.commit(block, certificate)
        self.blocks[block.hash] += 1
        if gossip:
            self.p2p.broadcast(self.proposal_of(block))
        return block

    def proposal_of(self, block: Block) -> ProposalMessage:
        proposal = Proposal(block.height, 0, -1, block.hash, self.key.public, bytes(64))
        signed = proposal.with_signature(self.key.sign(TAG_PROPOSAL, proposal.digest(CHAIN_ID)))
        return ProposalMessage(signed, block)


def net_genesis() -> Genesis:
    """A genesis where every test node's key holds coins (so it can make blocks with txs)."""
    names = [f"node-{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + [f"node-{i}" for i in range(20)]
    return make_genesis({key(n): 10**12 for n in names})  # every node key is a validator


class Network:
    """Several ``NetNode``s in one process, started and stopped together."""

    def __init__(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.nodes: list[NetNode] = []
        self.notifier = Notifier()

    async def __aenter__(self) -> Network:
        await self.stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.__aexit__(None, None, None)

    async def add(self, node: NetNode) -> NetNode:
        node.p2p.notifier = self.notifier  # one wake-up source for the whole network
        await self.stack.enter_async_context(node.p2p)
        self.nodes.append(node)
        return node

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever any node's state changes."""
        await self.notifier.wait_for(predicate, timeout)

    async def link(self, a: NetNode, b: NetNode) -> None:
        """Connect a → b and wait until both sides have finished the handshake."""
        assert await a.p2p.connect_to(b.address), f"{a.name} could not connect to {b.name}"
        await self.wait_until(lambda: a.key.public.hex() in b.p2p.peers)


def other_genesis(genesis: Genesis) -> Genesis:
    return replace(genesis, chain_id=genesis.chain_id + "-other")


async def handshake_as(
    address: str, name: str, genesis: Genesis, *, listen: str = "", max_bytes: int = 1 << 22
) -> WebSocketConnection:
    """A hand-driven peer: dial ``address``, Hello (advertising ``listen``) and Auth as
    ``name``. The node may refuse us: then reading the connection soon returns None."""
    conn = await connect(address, max_bytes=max_bytes, timeout=5, send_timeout=5)
    me = key(name)
    head = genesis.block().hash
    hello = Hello(PROTOCOL_VERSION, genesis.chain_id, head, me.public, listen, head, 0, b"\5" * 32)
    await conn.send(encode_message(hello))
    first = await conn.recv()
    assert first is not None  # the node's own Hello
    theirs = decode_message(first, 1 << 26)
    assert isinstance(theirs, Hello)
    with contextlib.suppress(TransportError):  # a node that refused us may be gone already
        await conn.send(
            encode_message(Auth(me.sign(TAG_HELLO, auth_digest(theirs.nonce, me.public))))
        )
    return conn


async def read_until_closed(conn: WebSocketConnection) -> list[Message]:
    """Every message the node sends until it hangs up on us; then release our side."""
    got = []
    while (frame := await conn.recv()) is not None:
        got += decode_frames(frame, 1 << 26)
    await conn.close()
    return got
