"""The handshake: Hello both ways, then Auth both ways, all within one short deadline.

Each side signs the other's fresh nonce, so a peer holds the node key it names (bans by key
cannot be pinned on someone else). Before it completes only handshake-sized frames are read
(``HANDSHAKE_FRAME_BYTES``, checked before decoding). A peer's advertised listen address must be
a strict ``host:port``; an unspecified one (``0.0.0.0:8700``) is kept as "no address", and
``peer.hello.listen`` holds only the checked, canonical form.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from fedcoin.data.keys import TAG_HELLO, PrivateKey, verify
from fedcoin.errors import BadAddress, HandshakeRefused, Reject
from fedcoin.network.addresses import gossipable
from fedcoin.network.messages import (
    HANDSHAKE_FRAME_BYTES,
    PROTOCOL_VERSION,
    Auth,
    Hello,
    Message,
    auth_digest,
    decode_message,
    encode_message,
)
from fedcoin.network.peers import Peer
from fedcoin.network.sync import ChainView

#: The refusal two nodes dialling each other at once meet: routine, not a warning.
ALREADY_CONNECTED = "already connected"


@dataclass(frozen=True)
class Identity:
    """What this node says about itself in Hello."""

    chain_id: str
    genesis: bytes
    key: PrivateKey
    advertised: str
    """Our canonical listen address, or "" when we advertise none."""


async def handshake(
    peer: Peer,
    me: Identity,
    chain: ChainView,
    *,
    deadline: float,
    refused: Callable[[Hello, bool], str | None],
) -> None:
    """Run the handshake on ``peer``; fills in ``peer.hello`` and ``peer.advertised``.

    ``refused(hello, proven)`` names a local reason to refuse (banned, full, and once the key
    is proven, already connected) or None. ``peer.proven_key`` is set once the peer proved
    its key, even if it is then refused (the dialler learns which node an address reaches).
    Raises ``HandshakeRefused`` for everything that goes wrong, including a missed deadline.
    """
    try:
        async with asyncio.timeout(deadline):
            await _exchange(peer, me, chain, refused)
    except TimeoutError:
        raise HandshakeRefused(f"no handshake within {deadline:g} s") from None


async def _exchange(
    peer: Peer, me: Identity, chain: ChainView, refused: Callable[[Hello, bool], str | None]
) -> None:
    head, height = chain.status()
    nonce = os.urandom(32)
    mine = Hello(
        PROTOCOL_VERSION, me.chain_id, me.genesis, me.key.public, me.advertised,
        head, height, nonce,
    )  # fmt: skip
    await peer.conn.send(encode_message(mine))
    hello = await _expect(peer, Hello)
    assert isinstance(hello, Hello)
    if hello.protocol != PROTOCOL_VERSION:
        raise HandshakeRefused(f"protocol {hello.protocol}, we speak {PROTOCOL_VERSION}")
    if hello.chain_id != me.chain_id or hello.genesis != me.genesis:
        raise HandshakeRefused(
            f"other network: chain {hello.chain_id!r} genesis {hello.genesis.hex()[:16]}, "
            f"ours {me.chain_id!r} {me.genesis.hex()[:16]}"
        )
    if hello.node_pubkey == me.key.public:
        raise HandshakeRefused("connected to ourselves", routine=True)
    advertised = ""
    if hello.listen:
        try:
            advertised = gossipable(hello.listen) or ""
        except BadAddress as exc:
            raise HandshakeRefused(f"bad listen address: {exc}") from None
    reason = refused(hello, False)
    if reason:
        raise HandshakeRefused(reason)
    proof = me.key.sign(TAG_HELLO, auth_digest(hello.nonce, me.key.public))
    await peer.conn.send(encode_message(Auth(proof)))
    auth = await _expect(peer, Auth)
    assert isinstance(auth, Auth)
    if not verify(
        hello.node_pubkey, TAG_HELLO, auth_digest(nonce, hello.node_pubkey), auth.signature
    ):
        raise HandshakeRefused("the peer could not prove its node key")
    peer.proven_key = hello.node_pubkey.hex()
    reason = refused(hello, True)  # now also "already connected": the key is proven
    if reason:
        raise HandshakeRefused(reason, routine=reason == ALREADY_CONNECTED)
    # Keep the checked form: whoever reads ``hello.listen`` later (content fetches build URLs
    # from it) sees a canonical host:port or "", never the peer's raw text.
    peer.hello = replace(hello, listen=advertised)
    peer.height = hello.height
    peer.advertised = advertised


async def _expect(peer: Peer, cls: type[Message]) -> Message:
    frame = await peer.conn.recv()
    if frame is None:
        raise HandshakeRefused(f"closed before {cls.__name__}")
    try:
        message = decode_message(frame, HANDSHAKE_FRAME_BYTES)
    except Reject as exc:
        raise HandshakeRefused(f"malformed {cls.__name__}: {exc}") from None
    if not isinstance(message, cls):
        raise HandshakeRefused(f"got {type(message).__name__}, expected {cls.__name__}")
    return message
