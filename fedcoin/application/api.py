"""The node's HTTP JSON API, on the same aiohttp app as its P2P endpoint.

    GET  /status                      chain, head, peers, mempool
    GET  /blocks/{height or hash}     one block
    GET  /blocks?from=H&limit=N       canonical blocks from height H (N ≤ 100)
    GET  /accounts/{address}          balance and nonce
    GET  /tasks                       every task, summarised
    GET  /tasks/{id}                  spec, status, every round: valuation, SVs, payouts, slashes
    POST /tx                          body: the transaction's canonical bytes → {"tx_id"}
    GET  /content/{sha256}            a blob
    PUT  /content/{sha256}[?size=N]   store a blob (hash- and size-checked, capped, rate-limited)
    GET  /                            the web explorer (fedcoin/application/explorer)

Every JSON body is a view from ``fedcoin.application.views`` (the typed schema); a task's
rounds come from the store's task index, not from a walk of the chain.

Errors are JSON ``{"error": "...", "rule": "..."}`` with 400 (malformed), 404 (unknown),
405 (wrong method), 413 (too large), 422 (breaks a rule), 429 (rate limited) or 503 (mempool
full). Every number, hash and address in a path or query is parsed strictly (ASCII digits or
hex, bounded length), so no input reaches the store it cannot name. Bodies are read whole up
to their cap: a blob is streamed to a temporary file in the content store and kept only if its
hash (and declared size) match; a transaction's body is capped at ``MAX_TX_BYTES`` and decoded
off the event loop when it is large.
"""

from __future__ import annotations

import asyncio
import logging
import string
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from fedcoin.application.explorer import add_explorer_routes
from fedcoin.application.mempool import Mempool, MempoolFull
from fedcoin.application.round_views import task_view
from fedcoin.application.views import (
    AccountView,
    block_view,
    ref_from_json,
    ref_json,
    validators_json,
)
from fedcoin.consensus.chain import Chain
from fedcoin.data.block import Block
from fedcoin.data.content import ContentStore
from fedcoin.data.encoding import U64_MAX
from fedcoin.data.keys import parse_address
from fedcoin.data.tensors import decode_dataset
from fedcoin.data.tx import ContentRef, Transaction
from fedcoin.errors import (
    ContentError,
    ContentTooLarge,
    DecodeError,
    FedCoinError,
    RuleViolation,
)
from fedcoin.network.peers import TokenBucket

__all__ = ["MAX_LIST", "MAX_TX_BYTES", "NodeView", "add_api_routes", "ref_from_json"]

MAX_LIST = 100
#: Largest transaction body accepted; the largest valid transaction (a round of 60 clients
#: with 128-character CIDs) encodes to about 20 KB.
MAX_TX_BYTES = 64 * 1024
#: Bodies larger than this are decoded in a worker thread, off the event loop.
DECODE_INLINE_BYTES = 4 * 1024
#: Bytes of an upload read at a time.
CHUNK = 1 << 20
#: Validation-set sizes remembered (for round accuracies) before the memo starts over.
MAX_REMEMBERED_SAMPLES = 1024

log = logging.getLogger("fedcoin.api")


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


# --- strict parsing of paths and queries ---------------------------------------------------
def parse_uint(text: str, name: str, maximum: int = U64_MAX) -> int:
    """A decimal integer in [0, maximum], ASCII digits only; ValueError says what is wrong."""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()):
        raise ValueError(f"{name} must be a decimal integer from 0 to {maximum}")
    value = int(text)
    if value > maximum:
        raise ValueError(f"{name} must be a decimal integer from 0 to {maximum}")
    return value


def parse_hash(text: str) -> bytes | None:
    """Exactly 64 hex digits (no spaces, no sign), as 32 bytes; None otherwise."""
    if len(text) != 64 or not all(c in string.hexdigits for c in text):
        return None
    return bytes.fromhex(text)


async def read_capped(request: web.Request, cap: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``cap`` bytes."""
    if request.content_length is not None and request.content_length > cap:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > cap:
            return None
        parts.append(chunk)
    return b"".join(parts)


# --- routes -----------------------------------------------------------------------------------
@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 404/405/413 become JSON errors; an unexpected error is logged in one line
    and answered 500 without a traceback, and the node goes on."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except Exception as exc:  # a bug must cost one request, never the node
        log.error("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return error(500, "internal error")


# --- routes -----------------------------------------------------------------------------------
def add_api_routes(
    app: web.Application, node: NodeView, *, max_content: int, uploads_per_second: float = 50
) -> None:
    buckets: dict[str, TokenBucket] = {}
    samples: dict[bytes, int] = {}
    app.middlewares.append(json_errors)

    def count_samples(ref: ContentRef) -> int | None:
        data = node.content.get(ref.sha256)
        try:
            return None if data is None else len(decode_dataset(data)[1])
        except DecodeError:
            return None

    async def validation_samples(ref: ContentRef) -> int | None:
        """How many samples a task's validation set holds (for accuracies): read once per set,
        off the event loop; not remembered while the node has not fetched it."""
        if ref.sha256 not in samples:
            count = await asyncio.to_thread(count_samples, ref)
            if count is None:
                return None
            if len(samples) >= MAX_REMEMBERED_SAMPLES:
                samples.clear()
            samples[ref.sha256] = count
        return samples[ref.sha256]

    async def status(request: web.Request) -> web.Response:
        return web.json_response(node.status())

    def block_at(height: int) -> Block | None:
        if height > node.chain.head.height:
            return None  # also keeps heights past SQLite's signed 64 bits away from the store
        return node.chain.store.block_at(height)

    async def block(request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        digest = parse_hash(ident)
        if digest is not None:
            found = node.chain.store.get_block(digest)
        else:
            try:
                found = block_at(parse_uint(ident, "a height"))
            except ValueError:
                return error(400, "a block is named by its height or its 64-hex-digit hash")
        if found is None:
            return error(404, f"no block {ident}")
        return web.json_response(block_view(found, node.chain).to_json())

    async def blocks(request: web.Request) -> web.Response:
        try:
            start = parse_uint(request.query.get("from", "0"), "'from'")
            limit = parse_uint(request.query.get("limit", "20"), "'limit'")
        except ValueError as exc:
            return error(400, f"{exc}; 'from' and 'limit' must be integers")
        if limit < 1:
            return error(400, "'limit' must be ≥ 1")
        out = []
        for height in range(start, min(start + min(limit, MAX_LIST), U64_MAX)):
            found = block_at(height)
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
        task_id = parse_hash(ident)
        if task_id is None:
            return error(400, "a task id is 64 hex digits")
        found = node.chain.head_state().tasks.get(task_id)
        if found is None:
            return error(404, f"no task {ident}")
        view = task_view(
            task_id,
            found,
            node.chain,
            with_rounds=True,
            validation_samples=await validation_samples(found.spec.validation),
        )
        return web.json_response(view.to_json())

    async def validators(request: web.Request) -> web.Response:
        head = node.chain.head
        state = node.chain.store.get_state(head.hash)  # the head's own state, not a newer one
        return web.json_response(validators_json(state, node.chain.genesis.params, head.height))

    async def post_tx(request: web.Request) -> web.Response:
        try:
            data = await read_capped(request, MAX_TX_BYTES)
        except (HttpProcessingError, OSError) as exc:
            return error(400, f"body cut short: {exc}")
        if data is None:
            return error(413, f"a transaction is at most {MAX_TX_BYTES} bytes")
        try:
            if len(data) > DECODE_INLINE_BYTES:
                tx = await asyncio.to_thread(Transaction.decode, data)
            else:
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
        return parse_hash(request.match_info["sha"])

    async def get_content(request: web.Request) -> web.StreamResponse:
        sha = sha_of(request)
        if sha is None:
            return error(400, "content is named by its 64-hex-digit sha256")
        data = await asyncio.to_thread(node.content.get, sha)
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
        size: int | None = None
        if "size" in request.query:
            try:
                size = parse_uint(request.query["size"], "'size'")
            except ValueError as exc:
                return error(400, str(exc))
        declared = request.content_length
        for claimed in (size, declared):
            if claimed is not None and claimed > max_content:
                return error(413, f"content over the {max_content}-byte cap")
        if size is not None and declared is not None and size != declared:
            return error(400, f"'size' {size} differs from Content-Length {declared}")
        try:
            with node.content.writer(max_content) as blob:
                async for chunk in request.content.iter_chunked(CHUNK):
                    blob.write(chunk)
                ref = await asyncio.to_thread(blob.commit, sha, size)
        except ContentTooLarge:
            return error(413, f"content over the {max_content}-byte cap")
        except ContentError as exc:
            return error(400, str(exc))
        except (HttpProcessingError, OSError) as exc:
            return error(400, f"upload cut short: {exc}")
        return web.json_response(ref_json(ref))

    app.router.add_get("/status", status)
    app.router.add_get("/blocks", blocks)
    app.router.add_get("/blocks/{id}", block)
    app.router.add_get("/accounts/{address}", account)
    app.router.add_get("/tasks", tasks)
    app.router.add_get("/tasks/{id}", task)
    app.router.add_get("/validators", validators)
    app.router.add_post("/tx", post_tx)
    app.router.add_get("/content/{sha}", get_content)
    app.router.add_put("/content/{sha}", put_content)
    add_explorer_routes(app)
