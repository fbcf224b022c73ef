"""Addresses peers tell each other: strict parsing, what is advertised, the address book, and
the connection-slot table — pure units with fake connections and a fake clock."""

from __future__ import annotations

import pytest

from fedcoin.errors import BadAddress, HandshakeRefused
from fedcoin.network.addresses import (
    advertised_address,
    gossipable,
    parse_host_port,
    peer_http_url,
)
from fedcoin.network.dialer import AddressBook
from fedcoin.network.peers import Peer, PeerLimits
from fedcoin.network.slots import PeerTable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeConn:
    def __init__(self, remote: str, inbound: bool = True) -> None:
        self.remote, self.inbound, self.closed = remote, inbound, False


def a_peer(remote: str, clock: FakeClock, limits: PeerLimits, name: str = "", inbound=True):
    peer = Peer(FakeConn(remote, inbound), limits, clock)  # type: ignore[arg-type]
    peer.name_for_test = name  # type: ignore[attr-defined]
    return peer


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:8700", ("127.0.0.1", 8700)),
        ("node-1.fedcoin.example:1", ("node-1.fedcoin.example", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:8700", ("::1", 8700)),
        ("[2001:db8::7]:443", ("2001:db8::7", 443)),
    ],
)
def test_good_addresses_parse(text: str, parsed: tuple[str, int]) -> None:
    assert parse_host_port(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:80/internal/admin/reset?confirm=yes",
        "127.0.0.1:80#frag",
        "127.0.0.1:80?x=1",
        "user:pw@127.0.0.1:80",
        "http://127.0.0.1:80",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "127.0.0.1: 80",
        " 127.0.0.1:80",
        "127.0.0.1:80\n",
        "999.1.1.1:80",
        "1.2.3:80",
        "::1:8700",
        "[::1]",
        "[::1]8700",
        "[fe80::1%eth0]:80",
        "[127.0.0.1]:80",
        "-bad-.example:80",
        "a..b:80",
        "exa_mple.com:80",
        "bücher.example:80",
        "%31%32%37.0.0.1:80",
        "",
        "x" * 200 + ":80",
    ],
)
def test_everything_else_is_a_bad_address(text: str) -> None:
    with pytest.raises(BadAddress):
        parse_host_port(text)


def test_unspecified_addresses_are_never_gossiped() -> None:
    assert gossipable("0.0.0.0:8700") is None
    assert gossipable("[::]:8700") is None
    assert gossipable("10.0.0.5:8700") == "10.0.0.5:8700"
    assert gossipable("[2001:db8:0::7]:8700") == "[2001:db8::7]:8700"


def test_peer_urls_are_built_only_from_strict_addresses() -> None:
    assert peer_http_url("127.0.0.1:8700", "/content/ab") == "http://127.0.0.1:8700/content/ab"
    assert peer_http_url("[::1]:8700", "/content/ab") == "http://[::1]:8700/content/ab"
    for bad in ("127.0.0.1:80/internal/admin/reset?confirm=yes#", "0.0.0.0:80", "u@h:1"):
        assert peer_http_url(bad, "/content/ab") is None


def test_what_a_node_advertises() -> None:
    assert advertised_address("", "127.0.0.1", 8700) == "127.0.0.1:8700"
    assert advertised_address("", "0.0.0.0", 8700) == ""
    assert advertised_address("", "::", 8700) == ""
    assert advertised_address("node3.fedcoin:8700", "0.0.0.0", 9999) == "node3.fedcoin:8700"
    for bad in ("0.0.0.0:8700", "node3:8700/x", "node3"):
        with pytest.raises(BadAddress):
            advertised_address(bad, "0.0.0.0", 8700)


def test_one_peer_adds_few_addresses_and_bad_ones_count() -> None:
    clock = FakeClock()
    limits = PeerLimits(max_addresses_per_peer=5, max_known=8)
    book = AddressBook(["10.0.0.1:1"], limits, own=lambda: ["10.0.0.9:9"])
    liar = a_peer("10.0.0.66:5", clock, limits)
    offered = [f"10.1.0.{i}:8700" for i in range(20)]
    bad = book.learn(liar, ["evil:80/admin", "0.0.0.0:1", "10.0.0.9:9", *offered, "x:0"])
    assert bad == 2
    assert [a for a in offered if a in book] == offered[:5]
    assert "0.0.0.0:1" not in book and "10.0.0.9:9" not in book
    # another peer may add more, but the book stays bounded and keeps bootstrap
    other = a_peer("10.0.0.67:5", clock, limits)
    book.learn(other, [f"10.2.0.{i}:8700" for i in range(20)])
    assert len(book.entries) == 8 and "10.0.0.1:1" in book


def test_due_prefers_bootstrap_then_good_and_skips_connected_nodes() -> None:
    limits = PeerLimits()
    book = AddressBook(["10.0.0.1:1"], limits, own=lambda: [])
    clock = FakeClock()
    teller = a_peer("10.0.0.2:2", clock, limits)
    book.learn(teller, ["10.0.0.3:3", "10.0.0.4:4", "10.0.0.5:5"])
    book.record("10.0.0.4:4", True, 0.0, "key4", (0.5, 30.0))
    book.record("10.0.0.5:5", True, 0.0, "key5", (0.5, 30.0))
    due = book.due(100.0, connected={"10.0.0.3:3"}, connected_keys={"key5"})
    # 3 is connected by address, 5 by the node key it proved when we dialled it
    assert due == ["10.0.0.1:1", "10.0.0.4:4"]
    # a failed dial backs off
    book.record("10.0.0.1:1", False, 100.0, "", (0.5, 30.0))
    assert book.due(100.2, set(), set()) == ["10.0.0.4:4", "10.0.0.5:5", "10.0.0.3:3"]


def test_handshakes_take_slots_and_ips_are_capped() -> None:
    clock = FakeClock()
    limits = PeerLimits(max_inbound=4, handshake_slots=3, max_per_ip=2)
    table = PeerTable(limits, clock)
    first, second, third = (a_peer(f"10.0.0.{i}:1", clock, limits) for i in (1, 1, 2))
    for peer in (first, second, third):
        table.admit(peer)
    with pytest.raises(HandshakeRefused, match="handshake"):
        table.admit(a_peer("10.0.0.3:1", clock, limits))
    table.release(third)
    with pytest.raises(HandshakeRefused, match="10.0.0.1"):
        table.admit(a_peer("10.0.0.1:3", clock, limits))
    table.admit(a_peer("10.0.0.4:1", clock, limits))


def test_loopback_is_exempt_from_the_per_ip_cap_unless_configured() -> None:
    clock = FakeClock()
    for exempt in (True, False):
        limits = PeerLimits(max_per_ip=1, per_ip_exempt_loopback=exempt)
        table = PeerTable(limits, clock)
        table.admit(a_peer("127.0.0.1:1", clock, limits))
        if exempt:
            table.admit(a_peer("127.0.0.1:2", clock, limits))
        else:
            with pytest.raises(HandshakeRefused):
                table.admit(a_peer("127.0.0.1:2", clock, limits))


def joined(table: PeerTable, peer: Peer, key: str) -> Peer | None:
    from fedcoin.network.messages import Hello

    peer.hello = Hello(1, "c", bytes(32), bytes.fromhex(key * 32), "", bytes(32), 0, bytes(32))
    table.admit(peer)
    return table.join(peer)


def test_a_full_node_evicts_the_worst_idle_peer_for_a_newcomer() -> None:
    clock = FakeClock()
    limits = PeerLimits(max_inbound=3, max_per_ip=8, evict_idle_seconds=10)
    table = PeerTable(limits, clock)
    peers = [a_peer(f"10.0.0.{i}:1", clock, limits) for i in range(3)]
    for i, peer in enumerate(peers):
        assert joined(table, peer, f"0{i}") is None
    newcomer = a_peer("10.0.0.9:1", clock, limits)
    # everyone was useful recently: no one gives way
    with pytest.raises(HandshakeRefused, match="none idle"):
        joined(table, newcomer, "09")
    clock.now += 11
    peers[0].last_useful = clock.now  # peer 0 keeps relaying valid data
    peers[2].score = 5  # peer 2 misbehaved a little
    victim = joined(table, a_peer("10.0.0.9:2", clock, limits), "0a")
    assert victim is peers[2]
    assert set(table.peers) == {"00" * 32, "01" * 32, "0a" * 32}
