"""Relay policy: which peers get a gossip frame now, which later, and which never.

A validator signs its votes and proposals with its node key and sends each to every peer it
has. A peer connected to that validator therefore has the message from its source, one hop
away; relaying it there as well only makes copies. Flooding every copy cost a network of 16
validators about 14 copies of every vote at every node, most of a height's CPU when they
share a machine. So peers tell each other whom they are connected to (``Neighbours``), and a
gossip frame received from a peer goes

- **nowhere** for a peer known to have it: the peer that sent it to us, any peer that has sent
  us a copy, its origin itself;
- **now** to a peer that is not connected to the frame's origin — but only from a few of its
  peers: of those connected to both (as their ``Neighbours`` say), the ``EAGER_RELAYERS``
  first in an order drawn from the frame's id send at once, the others defer; and from every
  peer when the frame has no origin (transactions, evidence) or we do not know the origin's
  peers;
- **after** ``defer`` seconds to the peers connected to its origin, and then only if the peer
  has not sent it to us meanwhile and the message is still useful: to us (the application's
  predicate: a vote of a height not yet committed), or to the peer (a vote of a height we
  committed goes on to a peer that has shown us nothing of its own of that height: it may be
  stuck before its first vote, its origin's copy lost).

This node's own frames go to every peer every time (the driver publishes what it signed again
every 2 s while a height lasts, for a peer that ignored the first copy).

The deferred copy keeps what Tendermint needs of gossip — a message one correct node has
reaches every correct node — when the origin is Byzantine (it sends to some peers only) or a
neighbour list is out of date: those cases cost ``defer`` seconds, never delivery. A peer that
lies in its ``Neighbours`` only delays what reaches itself. Everything here is bounded: the
deferred queue holds at most ``capacity`` copies, and past that a copy is sent at once, which
is what flooding did.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from fedcoin.data.encoding import sha256
from fedcoin.network.messages import MAX_NEIGHBOURS, Message, Neighbours
from fedcoin.network.peers import Peer

log = logging.getLogger("fedcoin.p2p")

#: Deferred copies held at once; beyond this a copy leaves at once (as flooding would).
DEFER_CAPACITY = 65_536
#: How many of the peers able to send a frame to a peer that lacks the origin send it at once.
EAGER_RELAYERS = 2


class Relay:
    """Sends gossip frames to peers by the policy above; ``flush`` sends the deferred copies
    that are due (``run`` calls it on a timer)."""

    def __init__(
        self,
        peers: dict[str, Peer],
        me: bytes,
        *,
        defer: float,
        useful: Callable[[Message], bool],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        clock: Callable[[], float],
        capacity: int = DEFER_CAPACITY,
    ) -> None:
        self.peers = peers
        self.me = me
        self.defer = defer
        self.useful = useful
        self.spawn = spawn
        self.clock = clock
        self.capacity = capacity
        #: (due, frame, gossip id, message, the peers it waits for), oldest first.
        self.deferred: deque[tuple[float, bytes, bytes, Message, list[Peer]]] = deque()
        self.waiting = 0
        """Deferred copies held (peers summed over the queue), at most ``capacity``."""
        self.sent_now = 0
        self.sent_later = 0
        self.dropped_later = 0

    def send(self, frame: bytes, mid: bytes, message: Message | None = None) -> None:
        """Relay ``message`` (its canonical ``frame``, gossip id ``mid``) received from a peer;
        with ``message`` None the frame is this node's own and goes at once to every peer."""
        origin = message.origin() if message is not None else None
        source = self.peers.get(origin.hex()) if origin is not None else None
        ahead: frozenset[bytes] | None = None  # relayers drawn before us for this frame
        later: list[Peer] = []
        for peer in list(self.peers.values()):
            if message is None:
                # Our own frame goes to every peer, every time: the driver publishes what it
                # signed again while a height lasts, for a peer that ignored the first copy
                self._enqueue(peer, frame, None)
                continue
            if peer.knows(mid):
                continue
            if origin is not None:
                key = peer.hello.node_pubkey if peer.hello is not None else b""
                if key == origin:
                    continue  # the origin has its own message
                wait = origin in peer.neighbours
                if not wait and source is not None:
                    if ahead is None:
                        ahead = self._ahead(mid, source)
                    # The relayers able to reach the peer are those connected to it and to the
                    # origin; we send at once only if fewer than EAGER_RELAYERS come before us
                    wait = len(peer.neighbours & ahead) >= EAGER_RELAYERS
                if wait and self.waiting + len(later) < self.capacity:
                    later.append(peer)
                    continue
            self._enqueue(peer, frame, mid)
            self.sent_now += 1
        if later and message is not None:
            self.deferred.append((self.clock() + self.defer, frame, mid, message, later))
            self.waiting += len(later)

    def _ahead(self, mid: bytes, source: Peer) -> frozenset[bytes]:
        """The origin's other peers that come before us in the order drawn from ``mid`` (the
        same order at every relayer: ``sha256(mid ‖ node key)``)."""
        mine = sha256(mid + self.me)
        return frozenset(k for k in source.neighbours if sha256(mid + k) < mine)

    def flush(self) -> None:
        """Send the deferred copies that are due, unless the peer left, has the message by
        now, or the message is no longer useful."""
        now = self.clock()
        while self.deferred and self.deferred[0][0] <= now:
            _, frame, mid, message, peers = self.deferred.popleft()
            self.waiting -= len(peers)
            useful = self._useful(message)
            height = message.consensus_height()
            for waiting in peers:
                peer = self.peers.get(waiting.key)  # its connection now (it may have redialled)
                # Useful to us, or to a peer that has shown us nothing of its own of this height
                # (it may be stuck before its first vote, its copy from the origin lost; one
                # stuck later is offered the blocks once its next round shows it)
                needed = useful or (height is not None and waiting.shown_height < height)
                if peer is None or not needed or peer.knows(mid):
                    self.dropped_later += 1
                    continue
                self._enqueue(peer, frame, mid)
                self.sent_later += 1

    async def run(self) -> None:
        """Flush on a timer, a quarter of the deferral apart."""
        while True:
            await asyncio.sleep(max(self.defer / 4, 0.01))
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a bug must cost copies, never the service
                log.exception("relay: flushing deferred copies failed")

    def _useful(self, message: Message) -> bool:
        try:
            return self.useful(message)
        except Exception:  # noqa: BLE001 - a predicate's bug must not stop relaying
            log.exception("relay: could not tell whether a %s is useful", type(message).__name__)
            return True

    def announce(self) -> None:
        """Tell every peer whom this node is connected to (after a peer joined or left)."""
        keys = [p.hello.node_pubkey for p in self.peers.values() if p.hello is not None]
        for peer in list(self.peers.values()):
            others = tuple(k for k in keys if peer.hello is None or k != peer.hello.node_pubkey)
            peer.enqueue(Neighbours(others[:MAX_NEIGHBOURS]))

    def _enqueue(self, peer: Peer, frame: bytes, mid: bytes | None) -> None:
        if not peer.enqueue(frame, mid):
            log.warning("peer %s is too slow; dropping it", peer.name)
            try:
                self.spawn(peer.conn.close("send queue full"))
            except RuntimeError:  # the service is stopping: the connection closes anyway
                pass
