"""The node's HTTP JSON API, on the same aiohttp app as its P2P endpoint.

    GET  /status                      chain, head, peers, mempool
    GET  /blocks/{height or hash}     one block
    GET  /blocks?from=H&limit=N       canonical blocks from height H (N ≤ 100)
    GET  /accounts/{address}          balance and nonce
    GET  /tasks                       every task, summarised
    GET  /tasks/{id}                  spec, status, every round with its SVs, shares, payouts
    POST /tx                          body: the transaction's canonical bytes → {"tx_id"}
    GET  /content/{sha256}            a blob
    PUT  /content/{sha256}            store a blob (hash-checked, size-capped, rate-limited)
    GET  /                            the web explorer (fedcoin/application/explorer)

Every JSON body is a view from ``fedcoin.application.views`` (the typed schema); a task's
rounds come from the store's task index, not from a walk of the chain.

Errors are JSON ``{"error": "...", "rule": "..."}`` with 400 (malformed), 404 (unknown),
413 (too large), 422 (breaks a rule), 429 (rate limited) or 503 (mempool full).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from fedcoin.application.explorer import add_explorer_routes
from fedcoin.application.mempool import Mempool, MempoolFull
from fedcoin.application.views import (
    AccountView,
    block_view,
    ref_from_json,
    ref_json,
    task_view,
)
from fedcoin.consensus.chain import Chain
from fedcoin.data.block import Block
from fedcoin.data.content import ContentStore
from fedcoin.data.keys import parse_address
from fedcoin.data.tensors import decode_dataset
from fedcoin.data.tx import ContentRef, Transaction
from fedcoin.errors import ContentError, DecodeError, FedCoinError, RuleViolation
from fedcoin.network.peers import TokenBucket

MAX_LIST = 100
MAX_REMEMBERED_SAMPLES = 1024

__all__ = ["add_api_routes", "ref_from_json", "ref_json"]


class NodeView(Protocol):
    chain: Chain
    mempool: Mempool
    content: ContentStore

    def status(self) -> dict[str, Any]: ...

    async def submit_tx(self, tx: Transaction) -> None: ...


def error(status: int, message: str, rule: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if rule:
        body["rule"] = rule
    return web.json_response(body, status=status)


# --- routes -----------------------------------------------------------------------------------
def add_api_routes(
    app: web.Application, node: NodeView, *, max_content: int, uploads_per_second: float = 50
) -> None:
    buckets: dict[str, TokenBucket] = {}
    samples: dict[bytes, int | None] = {}

    def validation_samples(ref: ContentRef) -> int | None:
        """How many samples a task's validation set holds (for accuracies), once per set."""
        if ref.sha256 not in samples:
            data = node.content.get(ref.sha256)
            try:
                count = None if data is None else len(decode_dataset(data)[1])
            except DecodeError:
                count = None
            if len(samples) >= MAX_REMEMBERED_SAMPLES:
                samples.clear()
            if count is None:
                return None  # not fetched yet: ask again next time
            samples[ref.sha256] = count
        return samples[ref.sha256]

    async def status(request: web.Request) -> web.Response:
        return web.json_response(node.status())

    def find_block(ident: str) -> Block | None:
        store = node.chain.store
        if ident.isdigit():
            return store.block_at(int(ident))
        if len(ident) == 64:
            try:
                return store.get_block(bytes.fromhex(ident))
            except ValueError:
                return None
        return None

    async def block(request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if not (ident.isdigit() or len(ident) == 64):
            return error(400, "a block is named by its height or its 64-hex-digit hash")
        found = find_block(ident)
        if found is None:
            return error(404, f"no block {ident}")
        return web.json_response(block_view(found, node.chain).to_json())

    async def blocks(request: web.Request) -> web.Response:
        try:
            start = int(request.query.get("from", "0"))
            limit = min(int(request.query.get("limit", "20")), MAX_LIST)
        except ValueError:
            return error(400, "'from' and 'limit' must be integers")
        if start < 0 or limit < 1:
            return error(400, "'from' must be ≥ 0 and 'limit' ≥ 1")
        out = []
        for height in range(start, start + limit):
            found = node.chain.store.block_at(height)
            if found is None:
                break
            out.append(block_view(found, node.chain).to_json())
        return web.json_response(out)

    async def account(request: web.Request) -> web.Response:
        text = request.match_info["address"]
        try:
            address = parse_address(text)
        except ValueError as exc:
            return error(400, str(exc))
        acc = node.chain.head_state().account(address)
        return web.json_response(AccountView(text, acc.balance, acc.nonce).to_json())

    async def tasks(request: web.Request) -> web.Response:
        state = node.chain.head_state()
        return web.json_response(
            [
                task_view(tid, t, node.chain, with_rounds=False).to_json()
                for tid, t in sorted(state.tasks.items())
            ]
        )

    async def task(request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        try:
            task_id = bytes.fromhex(ident)
        except ValueError:
            task_id = b""
        if len(task_id) != 32:
            return error(400, "a task id is 64 hex digits")
        found = node.chain.head_state().tasks.get(task_id)
        if found is None:
            return error(404, f"no task {ident}")
        view = task_view(
            task_id,
            found,
            node.chain,
            with_rounds=True,
            validation_samples=validation_samples(found.spec.validation),
        )
        return web.json_response(view.to_json())

    async def post_tx(request: web.Request) -> web.Response:
        data = await request.read()
        try:
            tx = Transaction.decode(data)
        except DecodeError as exc:
            return error(400, f"malformed transaction: {exc}")
        try:
            await node.submit_tx(tx)
        except RuleViolation as exc:
            return error(422, str(exc), exc.rule)
        except MempoolFull as exc:
            return error(503, str(exc))
        except FedCoinError as exc:
            return error(422, str(exc), type(exc).__name__)
        return web.json_response({"tx_id": tx.id.hex()})

    def sha_of(request: web.Request) -> bytes | None:
        try:
            value = bytes.fromhex(request.match_info["sha"])
        except ValueError:
            return None
        return value if len(value) == 32 else None

    async def get_content(request: web.Request) -> web.StreamResponse:
        sha = sha_of(request)
        if sha is None:
            return error(400, "content is named by its 64-hex-digit sha256")
        data = node.content.get(sha)
        if data is None:
            return error(404, f"no content {sha.hex()}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def put_content(request: web.Request) -> web.Response:
        sha = sha_of(request)
        if sha is None:
            return error(400, "content is named by its 64-hex-digit sha256")
        who = request.remote or "?"
        bucket = buckets.setdefault(
            who, TokenBucket(uploads_per_second, uploads_per_second * 2, time.monotonic)
        )
        if len(buckets) > 10_000:
            buckets.clear()
        if not bucket.take():
            return error(429, "too many uploads; slow down")
        if request.content_length is not None and request.content_length > max_content:
            return error(413, f"content over the {max_content}-byte cap")
        data = await request.content.read(max_content + 1)
        if len(data) > max_content:
            return error(413, f"content over the {max_content}-byte cap")
        try:
            ref = node.content.put_checked(sha, data)
        except ContentError as exc:
            return error(400, str(exc))
        return web.json_response(ref_json(ref))

    app.router.add_get("/status", status)
    app.router.add_get("/blocks", blocks)
    app.router.add_get("/blocks/{id}", block)
    app.router.add_get("/accounts/{address}", account)
    app.router.add_get("/tasks", tasks)
    app.router.add_get("/tasks/{id}", task)
    app.router.add_post("/tx", post_tx)
    app.router.add_get("/content/{sha}", get_content)
    app.router.add_put("/content/{sha}", put_content)
    add_explorer_routes(app)
