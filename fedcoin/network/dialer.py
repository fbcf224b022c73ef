"""Discovery and dialling: the address book, and the loop that keeps the node connected.

Addresses come from the configuration (bootstrap) and from peers' ``Peers`` answers. What a
peer hands out is attacker-chosen, so each address is parsed strictly (``addresses.py``);
malformed ones are counted against the sender, unspecified ones dropped; one connection may add
at most ``max_addresses_per_peer`` and the book keeps ``max_known``, forgetting never-good
learnt addresses first.

The loop dials concurrently, each dial under its own timeout: bootstrap peers always and at
once, then recently good addresses, then untried ones, at most ``dial_parallel`` learnt ones at
a time — so a list of silent addresses (a tarpit) cannot delay reconnecting to bootstrap. An
address is never dialled while we are connected to the node behind it (by advertised address,
by dialled address, or by the node key it proved last time).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fedcoin.errors import BadAddress
from fedcoin.network.addresses import gossipable
from fedcoin.network.peers import Peer, PeerLimits

log = logging.getLogger("fedcoin.p2p")


@dataclass
class Entry:
    bootstrap: bool = False
    last_good: float | None = None
    node_key: str = ""
    delay: float = 0.0
    next_try: float = 0.0


class AddressBook:
    def __init__(
        self,
        bootstrap: Sequence[str],
        limits: PeerLimits,
        own: Callable[[], Iterable[str]],
    ) -> None:
        self.limits = limits
        self.own = own
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        #: Called when new addresses arrive (the dialler sets it to wake itself).
        self.on_new: Callable[[], None] = lambda: None
        for address in bootstrap:
            self.entries[address] = Entry(bootstrap=True)

    def __contains__(self, address: str) -> bool:
        return address in self.entries

    def is_bootstrap(self, address: str) -> bool:
        entry = self.entries.get(address)
        return entry is not None and entry.bootstrap

    def add(self, address: str) -> None:
        """Remember an address we connected to on request (dialled again only with discovery)."""
        if address not in self.entries and (
            len(self.entries) < self.limits.max_known or self._forget_one()
        ):
            self.entries[address] = Entry()

    def learn(self, peer: Peer, addresses: Iterable[str]) -> int:
        """Add what ``peer`` told us (within its allowance); return how many were malformed."""
        bad = 0
        own = set(self.own())
        for text in addresses:
            try:
                address = gossipable(text)
            except BadAddress:
                bad += 1
                continue
            if address is None or address in own or address in self.entries:
                continue
            if peer.addresses_added >= self.limits.max_addresses_per_peer:
                continue
            if len(self.entries) >= self.limits.max_known and not self._forget_one():
                continue
            self.entries[address] = Entry()
            peer.addresses_added += 1
            self.on_new()
        return bad

    def _forget_one(self) -> bool:
        for address, entry in self.entries.items():
            if not entry.bootstrap and entry.last_good is None:
                del self.entries[address]
                return True
        return False

    def record(
        self, address: str, ok: bool, now: float, node_key: str, backoff: tuple[float, float]
    ) -> None:
        entry = self.entries.get(address)
        if entry is None:
            return
        if ok:
            entry.last_good = now
            entry.node_key = node_key
        # Every dial backs off, even one that connected: a node that accepts and then drops
        # us at once must not be redialled in a tight loop. A long-lived link resets it.
        low, high = backoff
        entry.delay = min(max(entry.delay * 2, low), high)
        entry.next_try = now + entry.delay

    def note_key(self, address: str, node_key: str) -> None:
        """The node behind ``address`` proved ``node_key``: skip it while we are connected."""
        entry = self.entries.get(address)
        if entry is not None:
            entry.node_key = node_key

    def reset(self, address: str) -> None:
        entry = self.entries.get(address)
        if entry is not None:
            entry.delay = 0.0

    def due(self, now: float, connected: set[str], connected_keys: set[str]) -> list[str]:
        """Addresses worth dialling now, best first: bootstrap, recently good, untried."""
        own = set(self.own())
        wanted = [
            (address, entry)
            for address, entry in self.entries.items()
            if address not in connected
            and address not in own
            and not (entry.node_key and entry.node_key in connected_keys)
            and entry.next_try <= now
        ]
        wanted.sort(key=lambda ae: (not ae[1].bootstrap, _recency(ae[1])))
        return [address for address, _ in wanted]

    def next_due(self, now: float) -> float | None:
        later = [e.next_try - now for e in self.entries.values() if e.next_try > now]
        return min(later) if later else None


def _recency(entry: Entry) -> float:
    """Sort key: most recently good first, never-good last."""
    return float("inf") if entry.last_good is None else -entry.last_good


class Dialer:
    """Keeps bootstrap (and, with discovery, learnt) peers connected, dialling concurrently."""

    def __init__(
        self,
        book: AddressBook,
        *,
        peers: dict[str, Peer],
        limits: PeerLimits,
        discover: bool,
        backoff: tuple[float, float],
        connect_to: Callable[[str], Awaitable[bool]],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        clock: Callable[[], float],
    ) -> None:
        self.book = book
        self.peers = peers
        self.limits = limits
        self.discover = discover
        self.backoff = backoff
        self.connect_to = connect_to
        self.spawn = spawn
        self.clock = clock
        self.dialing: set[str] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        book.on_new = self.wake.set

    def connected(self) -> tuple[set[str], set[str]]:
        """(addresses of the nodes we are connected to, their node keys)."""
        addresses: set[str] = set()
        for peer in self.peers.values():
            if peer.advertised:
                addresses.add(peer.advertised)
            if not peer.conn.inbound:
                addresses.add(peer.conn.remote)
        return addresses, set(self.peers)

    async def run(self) -> None:
        while not self.stopping:
            try:
                self._dial_due()
            except Exception:  # noqa: BLE001 - a bug here must not end the node's dialling
                log.exception("dialling loop error")
            self.wake.clear()
            wait = self.book.next_due(self.clock())
            timeout = min(wait, self.backoff[1]) if wait is not None else self.backoff[1]
            try:
                async with asyncio.timeout(max(timeout, 0.05)):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _dial_due(self) -> None:
        addresses, keys = self.connected()
        outbound = sum(1 for p in self.peers.values() if not p.conn.inbound)
        learnt_in_flight = sum(1 for a in self.dialing if not self.book.is_bootstrap(a))
        for address in self.book.due(self.clock(), addresses, keys):
            if address in self.dialing:
                continue
            if not self.book.is_bootstrap(address):
                if not self.discover:
                    continue
                if outbound + learnt_in_flight >= self.limits.max_outbound:
                    continue
                if learnt_in_flight >= self.limits.dial_parallel:
                    continue
                learnt_in_flight += 1
            self.dialing.add(address)
            self.spawn(self._dial(address))

    async def _dial(self, address: str) -> None:
        ok = False
        try:
            ok = await self.connect_to(address)
        except Exception:  # noqa: BLE001 - one bad dial must not end the service's TaskGroup
            log.exception("dialling %s failed", address)
        finally:
            self.dialing.discard(address)
            key = next(
                (
                    k
                    for k, p in self.peers.items()
                    if p.advertised == address or (not p.conn.inbound and p.conn.remote == address)
                ),
                "",
            )
            self.book.record(address, ok, self.clock(), key, self.backoff)
            self.wake.set()
