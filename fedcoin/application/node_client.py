"""The HTTP client of one full node's API: what the FL server, the Flower ledger and the wallet
commands use to read the chain, put content and send transactions."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp

from fedcoin.data.keys import PrivateKey, format_address
from fedcoin.data.tx import ContentRef, Transaction, TxBody, make_tx
from fedcoin.errors import ContentMismatch, FedCoinError


class NodeError(FedCoinError):
    """The full node refused a request or could not be reached."""

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class NodeClient:
    """The HTTP API of one full node, as the FL server and the wallet commands use it."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> NodeClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, data: bytes | None = None) -> Any:
        assert self._session is not None, "use 'async with NodeClient(...)'"
        try:
            async with self._session.request(method, self.url + path, data=data) as resp:
                if resp.content_type == "application/json":
                    body = await resp.json()
                else:
                    body = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeError(f"cannot reach the node at {self.url}: {exc}") from None
        if resp.status >= 400:
            message = body.get("error", str(body)) if isinstance(body, dict) else str(body)
            raise NodeError(message, body.get("rule") if isinstance(body, dict) else None)
        return body

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/status")  # type: ignore[no-any-return]

    async def account(self, address: bytes) -> dict[str, Any]:
        return await self._call("GET", f"/accounts/{format_address(address)}")  # type: ignore[no-any-return]

    async def task(self, task_id: bytes) -> dict[str, Any]:
        return await self._call("GET", f"/tasks/{task_id.hex()}")  # type: ignore[no-any-return]

    async def validators(self) -> dict[str, Any]:
        return await self._call("GET", "/validators")  # type: ignore[no-any-return]

    async def post_tx(self, tx: Transaction) -> str:
        body = await self._call("POST", "/tx", tx.encode())
        return str(body["tx_id"])

    async def put_content(self, data: bytes, cid: str = "") -> ContentRef:
        ref = ContentRef(hashlib.sha256(data).digest(), len(data), cid)
        await self._call("PUT", f"/content/{ref.sha256.hex()}", data)
        return ref

    async def get_content(self, ref: ContentRef) -> bytes:
        data = await self._call("GET", f"/content/{ref.sha256.hex()}")
        if not isinstance(data, bytes) or hashlib.sha256(data).digest() != ref.sha256:
            raise ContentMismatch(f"node served wrong bytes for {ref.sha256.hex()}")
        return data

    async def send(self, key: PrivateKey, chain_id: str, body: TxBody, fee: int = 0) -> Transaction:
        """Sign ``body`` with the sender's next nonce and submit it."""
        nonce = (await self.account(key.address))["nonce"]
        tx = make_tx(key, chain_id, nonce, body, fee)
        await self.post_tx(tx)
        return tx
