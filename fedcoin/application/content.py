"""Where a node gets off-chain content: its local store, then IPFS (by CID, when a daemon is
configured), then its peers over HTTP (``GET /content/{sha256}``). Whatever arrives is checked
against its sha256 and size before it is stored. IPFS goes through ``ipfshttpclient``,
constructed directly (``connect()`` refuses the daemon versions that run here) with a timeout
on every call.
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
from fedcoin.errors import ContentMissing
from fedcoin.network.addresses import peer_http_url

log = logging.getLogger("fedcoin.content")


class IpfsClient:
    """A thin, timeout-bounded wrapper over ``ipfshttpclient`` (blocking; call in a thread)."""

    def __init__(self, api: str, timeout: float = 10.0) -> None:
        import ipfshttpclient

        self.api = api
        self.timeout = timeout
        self.client: Any = ipfshttpclient.Client(api, timeout=timeout)

    def add(self, data: bytes) -> str:
        return str(self.client.add_bytes(data, opts={"cid-version": 1}))

    def cat(self, cid: str) -> bytes:
        return bytes(self.client.cat(cid, timeout=self.timeout))

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
            if self.store.has(ref.sha256):
                continue
            data = await self._fetch(ref)
            if data is None:
                raise ContentMissing(
                    f"content {ref.sha256.hex()} not found locally, on IPFS or at peers"
                )
            self.store.put(data, ref.cid)

    async def _fetch(self, ref: ContentRef) -> bytes | None:
        if self.ipfs is not None and ref.cid:
            try:
                data = await asyncio.to_thread(self.ipfs.cat, ref.cid)
                if self._ok(ref, data):
                    return data
                log.warning("IPFS returned wrong bytes for %s", ref.cid)
            except Exception as exc:  # ipfshttpclient raises many types; any failure → next source
                log.info("IPFS cat %s failed: %s", ref.cid, exc)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for address in list(self.peers()):
            url = peer_http_url(address, f"/content/{ref.sha256.hex()}")
            if url is None:  # only a strict host:port becomes a URL (no path, query, userinfo)
                continue
            try:
                async with self._session.get(url) as resp:
                    if resp.status != 200:
                        continue
                    data = await resp.content.read(ref.size + 1)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("fetching %s from %s failed: %s", ref.sha256.hex()[:12], address, exc)
                continue
            if self._ok(ref, data):
                return data
            log.warning("peer %s served wrong bytes for %s", address, ref.sha256.hex()[:12])
        return None
