"""Connection slots: who may hold one of this node's connections, and who gives way.

Every inbound connection takes a slot from the moment it is accepted, before its handshake:
at most ``max_inbound + handshake_slots`` inbound connections exist at once, at most
``handshake_slots`` of them still in the handshake, and at most ``max_per_ip`` from one remote
IP (loopback may be exempt: every local node shares it). A handshake has a short deadline.

When a newcomer completes its handshake and the node is full, an inbound peer gives way if it
misbehaved (score above zero) or has sent nothing useful for ``evict_idle_seconds``; among
those, the worst score, then the IP holding most connections, then the longest idle goes. So
idle connections cannot lock honest nodes out, and honest peers that relay cannot be pushed out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from fedcoin.errors import HandshakeRefused
from fedcoin.network.addresses import ip_of, is_loopback
from fedcoin.network.peers import Peer, PeerLimits


class PeerTable:
    """Connected peers (by node key) and the connections still in the handshake."""

    def __init__(self, limits: PeerLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.peers: dict[str, Peer] = {}
        self.handshaking: set[Peer] = set()

    def inbound(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.conn.inbound]

    def _per_ip(self) -> Counter[str]:
        count: Counter[str] = Counter(ip_of(p.conn.remote) for p in self.inbound())
        count.update(ip_of(p.conn.remote) for p in self.handshaking if p.conn.inbound)
        return count

    def _ip_capped(self, ip: str) -> bool:
        return not (self.limits.per_ip_exempt_loopback and is_loopback(ip))

    def admit(self, peer: Peer) -> None:
        """Take a slot for a new inbound connection, or raise ``HandshakeRefused``."""
        limits = self.limits
        pending = sum(1 for p in self.handshaking if p.conn.inbound)
        if pending >= limits.handshake_slots:
            raise HandshakeRefused("too many connections in the handshake")
        if len(self.inbound()) + pending >= limits.max_inbound + limits.handshake_slots:
            raise HandshakeRefused("too many peers")
        ip = ip_of(peer.conn.remote)
        if self._ip_capped(ip) and self._per_ip()[ip] >= limits.max_per_ip:
            raise HandshakeRefused(f"too many connections from {ip}")
        self.handshaking.add(peer)

    def start_outbound(self, peer: Peer) -> None:
        self.handshaking.add(peer)

    def release(self, peer: Peer) -> None:
        """Forget a connection that closed (in the handshake or connected)."""
        self.handshaking.discard(peer)
        if self.peers.get(peer.key) is peer:
            del self.peers[peer.key]

    def room_for(self, peer: Peer) -> tuple[bool, Peer | None]:
        """Whether an authenticated ``peer`` may join, and who must give way for it."""
        if not peer.conn.inbound:
            return True, None
        ip = ip_of(peer.conn.remote)
        inbound = [p for p in self.inbound() if p is not peer]
        same_ip = [p for p in inbound if ip_of(p.conn.remote) == ip]
        if self._ip_capped(ip) and len(same_ip) >= self.limits.max_per_ip:
            victim = self._victim(same_ip)
            return victim is not None, victim
        if len(inbound) >= self.limits.max_inbound:
            victim = self._victim(inbound)
            return victim is not None, victim
        return True, None

    def join(self, peer: Peer) -> Peer | None:
        """Move an authenticated peer into the table; return the peer evicted for it, if any.

        ``HandshakeRefused`` when the node is full and no one may give way.
        """
        self.handshaking.discard(peer)
        ok, victim = self.room_for(peer)
        if not ok:
            raise HandshakeRefused("too many peers, none idle")
        self.peers[peer.key] = peer
        if victim is not None:
            del self.peers[victim.key]
        return victim

    def _victim(self, candidates: list[Peer]) -> Peer | None:
        now = self.clock()
        idle = self.limits.evict_idle_seconds
        evictable = [p for p in candidates if p.score > 0 or now - p.last_useful >= idle]
        if not evictable:
            return None
        crowd = Counter(ip_of(p.conn.remote) for p in candidates)
        return max(
            evictable,
            key=lambda p: (p.score, crowd[ip_of(p.conn.remote)], now - p.last_useful),
        )
