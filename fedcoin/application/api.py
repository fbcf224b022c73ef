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

Errors are JSON ``{"error": "...", "rule": "..."}`` with 400 (malformed), 404 (unknown),
413 (too large), 422 (breaks a rule), 429 (rate limited) or 503 (mempool full).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from fedcoin.application.mempool import Mempool, MempoolFull
from fedcoin.consensus.chain import Chain
from fedcoin.data.block import Block
from fedcoin.data.content import ContentStore
from fedcoin.data.keys import address_of, format_address, parse_address
from fedcoin.data.state import TaskState, TaskStatus
from fedcoin.data.tx import (
    CloseTask,
    ContentRef,
    PublishTask,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
)
from fedcoin.errors import ContentError, DecodeError, FedCoinError, RuleViolation
from fedcoin.incentive.payouts import RoundPayout
from fedcoin.network.peers import TokenBucket

MAX_LIST = 100


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


# --- JSON views -------------------------------------------------------------------------------
def key_text(pubkey: bytes) -> str:
    """The address a public key controls, as people write it."""
    return format_address(address_of(pubkey))


def ref_json(ref: ContentRef) -> dict[str, Any]:
    return {"sha256": ref.sha256.hex(), "size": ref.size, "cid": ref.cid}


def ref_from_json(data: dict[str, Any]) -> ContentRef:
    """The inverse of ``ref_json``."""
    return ContentRef(bytes.fromhex(data["sha256"]), int(data["size"]), str(data["cid"]))


def spec_json(spec: TaskSpec) -> dict[str, Any]:
    return {
        "name": spec.name, "model": ref_json(spec.model), "validation": ref_json(spec.validation),
        "server": format_address(spec.server), "rounds": spec.rounds,
        "price_per_round": spec.price_per_round, "split_bps": list(spec.split_bps),
        "min_clients": spec.min_clients, "max_clients": spec.max_clients,
        "deadline_height": spec.deadline_height,
        "posap": {
            "n_exact_max": spec.posap.n_exact_max, "budget": spec.posap.budget,
            "spot_checks": spec.posap.spot_checks, "tolerance": spec.posap.tolerance,
            "posap_timeout_ms": spec.posap.posap_timeout_ms,
            "share_window_ms": spec.posap.share_window_ms,
        },
    }  # fmt: skip


def tx_json(tx: Transaction) -> dict[str, Any]:
    body: dict[str, Any]
    b = tx.body
    if isinstance(b, Transfer):
        body = {"to": format_address(b.to), "amount": b.amount}
    elif isinstance(b, PublishTask):
        body = {"spec": spec_json(b.spec)}
    elif isinstance(b, SubmitRound):
        body = {
            "task_id": b.task_id.hex(), "round": b.round, "global_model": ref_json(b.global_model),
            "updates": [{"client": format_address(u.address), "samples": u.samples,
                         "weights": ref_json(u.weights)} for u in b.updates],
        }  # fmt: skip
    elif isinstance(b, CloseTask):
        body = {"task_id": b.task_id.hex()}
    return {
        "id": tx.id.hex(), "kind": tx.kind_name, "sender": format_address(tx.sender),
        "nonce": tx.nonce, "fee": tx.fee, "body": body,
    }  # fmt: skip


def payout_json(p: RoundPayout) -> dict[str, Any]:
    return {
        "task_id": p.task_id.hex(), "round": p.round, "voided": p.voided, "sv": list(p.sv),
        "clients": [{"address": format_address(a), "paid": v} for a, v in p.clients],
        "server": p.server,
        "miners": [{"address": format_address(a), "paid": v} for a, v in p.miners],
        "proposer_remainder": p.proposer, "refund": p.refund,
    }  # fmt: skip


def block_json(block: Block, chain: Chain) -> dict[str, Any]:
    h = block.header
    payout = chain.payout_of(block.hash)
    return {
        "hash": h.hash.hex(), "height": h.height, "parent": h.parent.hex(),
        "timestamp_ms": h.timestamp_ms, "proposer": key_text(h.proposer_pubkey),
        "weight": h.weight, "state_root": h.state_root.hex(),
        "txs": [tx_json(t) for t in block.txs],
        "posap": None if block.posap is None else {
            "sv_task_id": block.posap.sv_task_id.hex(), "voided": block.posap.voids,
            "shares": [{"miner": key_text(s.miner_pubkey), "estimate": list(s.estimate),
                        "entries": len(s.table)} for s in block.posap.shares],
        },
        "payout": payout_json(payout) if payout else None,
    }  # fmt: skip


def task_json(task_id: bytes, task: TaskState, chain: Chain, with_rounds: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task_id.hex(), "spec": spec_json(task.spec),
        "publisher": format_address(task.publisher),
        "escrow": task.escrow, "rounds_done": task.rounds_done,
        "status": TaskStatus(task.status).name.lower(), "global_model": ref_json(task.global_model),
        "created_height": task.created_height,
    }  # fmt: skip
    if with_rounds:
        out["rounds"] = task_rounds(task_id, task, chain)
    return out


def task_rounds(task_id: bytes, task: TaskState, chain: Chain) -> list[dict[str, Any]]:
    """Every round of a task, from the canonical chain: submission, shares, SVs, payouts."""
    store = chain.store
    rounds: dict[int, dict[str, Any]] = {}
    by_sv: dict[bytes, int] = {}
    for height in range(task.created_height, store.head().height + 1):
        block = store.block_at(height)
        if block is None:
            break
        for tx in block.txs:
            if isinstance(tx.body, SubmitRound) and tx.body.task_id == task_id:
                entry = tx_json(tx)["body"]
                entry.update(
                    {"sv_task_id": tx.id.hex(), "submitted_height": height, "settled": False}
                )
                rounds[tx.body.round] = entry
                by_sv[tx.id] = tx.body.round
        if block.posap is not None and block.posap.sv_task_id in by_sv:
            entry = rounds[by_sv[block.posap.sv_task_id]]
            payout = chain.payout_of(block.hash)
            entry["settled"] = True
            entry["settled_height"] = height
            entry["shares"] = [
                {"miner": key_text(s.miner_pubkey), "estimate": list(s.estimate)}
                for s in block.posap.shares
            ]
            entry["payout"] = payout_json(payout) if payout else None
    return [rounds[r] for r in sorted(rounds)]


# --- routes -----------------------------------------------------------------------------------
def add_api_routes(
    app: web.Application, node: NodeView, *, max_content: int, uploads_per_second: float = 50
) -> None:
    buckets: dict[str, TokenBucket] = {}

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
        return web.json_response(block_json(found, node.chain))

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
            out.append(block_json(found, node.chain))
        return web.json_response(out)

    async def account(request: web.Request) -> web.Response:
        text = request.match_info["address"]
        try:
            address = parse_address(text)
        except ValueError as exc:
            return error(400, str(exc))
        acc = node.chain.head_state().account(address)
        return web.json_response({"address": text, "balance": acc.balance, "nonce": acc.nonce})

    async def tasks(request: web.Request) -> web.Response:
        state = node.chain.head_state()
        return web.json_response(
            [task_json(tid, t, node.chain, False) for tid, t in sorted(state.tasks.items())]
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
        return web.json_response(task_json(task_id, found, node.chain, True))

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
