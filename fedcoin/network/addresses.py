"""Peer addresses: the one strict parser for the ``host:port`` strings peers tell each other.

A peer's advertised address is attacker-chosen text that later becomes a dial target and part of
a URL (content fetches). It is accepted only as ``host:port`` where host is an IPv4 literal, a
bracketed IPv6 literal (``[::1]:8700``) or a plain DNS hostname, and port is 1-65535: no path,
userinfo, query, fragment, whitespace or percent-encoding can survive. Unspecified addresses
(``0.0.0.0``, ``::``) name no host at all and are never gossiped.
"""

from __future__ import annotations

import ipaddress
import re

from fedcoin.errors import BadAddress

MAX_ADDRESS = 128
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_host_port(text: str) -> tuple[str, int]:
    """``(host, port)`` of a strict ``host:port``; ``BadAddress`` for anything else.

    The host comes back in one canonical spelling (compressed IP, lower-case name).
    """
    if not isinstance(text, str) or not text or len(text) > MAX_ADDRESS or not text.isascii():
        raise BadAddress(f"not a host:port: {text!r}")
    if text.startswith("["):
        close = text.find("]")
        host, sep, port_text = text[1:close], text[close + 1 : close + 2], text[close + 2 :]
        if close < 0 or sep != ":" or not _is_ip(host, version=6):
            raise BadAddress(f"not a [IPv6]:port: {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not (_is_ip(host, version=4) or _is_hostname(host)):
            raise BadAddress(f"not a host:port: {text!r}")
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise BadAddress(f"port must be 1-65535: {text!r}")
    return _canonical(host), int(port_text)


def format_host_port(host: str, port: int) -> str:
    """The canonical text of an address (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_unspecified(host: str) -> bool:
    """True for ``0.0.0.0``, ``::`` and the empty host: bind-all, not an address to dial."""
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def gossipable(text: str) -> str | None:
    """The canonical form of an address worth gossiping or dialling, or None.

    ``BadAddress`` if it is malformed; None if it is well formed but unspecified.
    """
    host, port = parse_host_port(text)
    if is_unspecified(host):
        return None
    return format_host_port(host, port)


def advertised_address(configured: str, host: str, port: int) -> str:
    """What a node tells peers it listens on: ``configured`` (checked) if given, else the bound
    ``host:port`` — unless that is unspecified (0.0.0.0, ::), then "" (nothing is advertised).

    ``BadAddress`` when ``configured`` is malformed or itself unspecified.
    """
    if configured:
        address = gossipable(configured)
        if address is None:
            raise BadAddress(f"cannot advertise an unspecified address: {configured!r}")
        return address
    if is_unspecified(host):
        return ""
    return format_host_port(host, port)


def peer_http_url(address: str, path: str) -> str | None:
    """``http://host:port/path`` for a peer's address, or None unless the address is a strict,
    specified ``host:port`` — the one way a peer's address may become a URL."""
    if not path.startswith("/") or any(c in path for c in "?#@\\ "):
        raise ValueError(f"not a plain path: {path!r}")  # our own code's mistake
    try:
        canonical = gossipable(address)
    except BadAddress:
        return None
    return None if canonical is None else f"http://{canonical}{path}"


def ip_of(remote: str) -> str:
    """The IP part of a connection's remote ``host:port`` (as the transport reports it)."""
    try:
        return parse_host_port(remote)[0]
    except BadAddress:
        return remote


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _canonical(host: str) -> str:
    """One spelling per host: compressed IP literals, lower-case names."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _is_ip(host: str, version: int) -> bool:
    if "%" in host:
        return False  # IPv6 zone ids have no place in a URL or a gossiped address
    try:
        return ipaddress.ip_address(host).version == version
    except ValueError:
        return False


def _is_hostname(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        return False  # digits only: a malformed IPv4, not a name
    return all(_LABEL.fullmatch(label) for label in labels)
