"""Where a node gets off-chain content: its local store, then IPFS (by CID, when a daemon is
configured), then its peers over HTTP (``GET /content/{sha256}``). Whatever arrives is checked
against its reference's sha256 AND size before it is stored; a peer's answer is streamed into
the store chunk by chunk (never more than ``ref.size`` bytes are accepted, nothing is kept
unless it matches). IPFS goes through ``ipfshttpclient``, constructed directly (``connect()``
refuses the daemon versions that run here) with a timeout on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from fedcoin.data.content import ContentStore
from fedcoin.data.tx import ContentRef
from fedcoin.errors import ContentError, ContentMissing
from fedcoin.network.addresses import peer_http_url

log = logging.getLogger("fedcoin.content")

#: Bytes read from a peer's answer at a time.
CHUNK = 1 << 20
#: Slowest transfer rate tolerated from a peer: a blob of n bytes gets timeout + n / MIN_RATE s.
MIN_RATE = 1 << 20


def content_url(address: str, sha256: bytes) -> str | None:
    """The URL of a blob at a peer: the one place a peer's address becomes a URL. None unless
    the address is a strict ``host:port`` (no path, query or userinfo can ride along)."""
    return peer_http_url(address, f"/content/{sha256.hex()}")


class IpfsClient:
    """A thin, timeout-bounded wrapper over ``ipfshttpclient`` (blocking; call in a thread)."""

    def __init__(self, api: str, timeout: float = 10.0) -> None:
        import ipfshttpclient

        self.api = api
        self.timeout = timeout
        self.client: Any = ipfshttpclient.Client(api, timeout=timeout)

    def add(self, data: bytes) -> str:
        return str(self.client.add_bytes(data, opts={"cid-version": 1}))

    def cat(self, cid: str, length: int | None = None) -> bytes:
        """The bytes under ``cid``; at most ``length`` of them when a length is given."""
        return bytes(self.client.cat(cid, length=length, timeout=self.timeout))

    def close(self) -> None:
        self.client.close()


class ContentResolver:
    def __init__(
        self,
        store: ContentStore,
        peers: Callable[[], Iterable[str]],
        ipfs: IpfsClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.peers = peers
        self.ipfs = ipfs
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def get(self, sha256: bytes) -> bytes | None:
        """The synchronous read the verifier uses: local store only."""
        return self.store.get(sha256)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _ok(self, ref: ContentRef, data: bytes) -> bool:
        return len(data) == ref.size and hashlib.sha256(data).digest() == ref.sha256

    async def ensure(self, refs: Iterable[ContentRef]) -> None:
        """Make every blob local; ``ContentMissing`` names the first that no source has."""
        for ref in refs:
            if self.store.has_ref(ref):
                continue
            if self.store.has(ref.sha256):
                # The bytes with this hash are here, and their size is not ref.size: no source
                # can ever satisfy this reference.
                raise ContentMissing(f"content {ref.sha256.hex()} has no {ref.size}-byte form")
            if ref.size > self.store.max_blob:
                raise ContentMissing(
                    f"content {ref.sha256.hex()} of {ref.size} bytes exceeds the "
                    f"{self.store.max_blob}-byte cap"
                )
            if not await self._fetch(ref):
                raise ContentMissing(
                    f"content {ref.sha256.hex()} not found locally, on IPFS or at peers"
                )

    async def _fetch(self, ref: ContentRef) -> bool:
        if self.ipfs is not None and ref.cid and await self._from_ipfs(self.ipfs, ref):
            return True
        for address in list(self.peers()):
            if await self._from_peer(address, ref):
                return True
        return False

    async def _from_ipfs(self, ipfs: IpfsClient, ref: ContentRef) -> bool:
        try:
            data = await asyncio.to_thread(ipfs.cat, ref.cid, ref.size + 1)
        except Exception as exc:  # ipfshttpclient raises many types; any failure → next source
            log.info("IPFS cat %s failed: %s", ref.cid, exc)
            return False
        if not self._ok(ref, data):
            log.warning("IPFS returned wrong bytes for %s", ref.cid)
            return False
        await asyncio.to_thread(self.store.put, data, ref.cid)
        return True

    async def _from_peer(self, address: str, ref: ContentRef) -> bool:
        """Stream the blob from one peer into the store; False (and no file) unless it fits."""
        url = content_url(address, ref.sha256)
        if url is None:
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(
            total=self.timeout + ref.size / MIN_RATE, sock_connect=self.timeout,
            sock_read=self.timeout,
        )  # fmt: skip
        name = ref.sha256.hex()[:12]
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    return False
                if resp.content_length is not None and resp.content_length != ref.size:
                    log.warning("peer %s offers %s with the wrong size", address, name)
                    return False
                with self.store.writer(ref.size) as blob:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        blob.write(chunk)
                    await asyncio.to_thread(blob.commit, ref.sha256, ref.size, ref.cid)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.info("fetching %s from %s failed: %s", name, address, exc)
            return False
        except ContentError as exc:
            log.warning("peer %s served wrong bytes for %s: %s", address, name, exc)
            return False
        return True
