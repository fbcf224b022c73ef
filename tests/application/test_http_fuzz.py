"""HTTP fuzz against a real full node on 127.0.0.1: random and mutated paths, queries, methods
and bodies on every API route get an answer below 500 (a JSON error for 4xx), change no state
(head, balances, mempool), and the node keeps answering ``/status``.

The node runs in its own thread and event loop so Hypothesis drives plain, synchronous HTTP
requests (``http.client`` sends any path it is given, byte for byte).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcoin.data.keys import format_address
from fedcoin.data.tx import Transfer, make_tx
from tests.application.cluster import FAST_CONSENSUS, PUBLISHER_KEY, SERVER_KEY, Cluster
from tests.helpers import CHAIN_ID, FC

ACCOUNTS = [format_address(k.address) for k in (SERVER_KEY, PUBLISHER_KEY)]
VALID_TX = make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 1 * FC)).encode()


class NodeThread:
    """One full node serving on 127.0.0.1:0 from a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self._ready: concurrent.futures.Future[tuple[str, asyncio.Event]] = (
            concurrent.futures.Future()
        )
        self.thread = threading.Thread(target=self._run, name="fuzzed-node", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        try:
            async with Cluster(self.root) as cluster:
                # No heartbeat block during the fuzz (on a loaded machine it may outlast one):
                # the last test checks the height did not move
                quiet = replace(FAST_CONSENSUS, heartbeat_ms=3_600_000)
                node = await cluster.start(0, max_content_bytes=100_000, consensus=quiet)
                stop = asyncio.Event()
                self._ready.set_result((node.url, stop))
                await stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def __enter__(self) -> str:
        self.thread.start()
        url, self.stop = self._ready.result(timeout=120)
        return url

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=120)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with NodeThread(tmp_path_factory.mktemp("fuzz-node")) as url:
        yield url


def request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def snapshot(url: str) -> dict[str, Any]:
    status, raw = request(url, "GET", "/status")
    assert status == 200
    state = json.loads(raw)
    out: dict[str, Any] = {k: state[k] for k in ("head", "height", "mempool")}
    for account in ACCOUNTS:
        _, raw = request(url, "GET", f"/accounts/{account}")
        out[account] = json.loads(raw)
    return out


#: aiohttp's HTTP parser refuses longer request lines itself (400, plain text) before any route.
MAX_LINE = 8190


def check_answer(method: str, status: int, raw: bytes, path: str = "") -> None:
    assert status < 500, (status, raw[:300])
    if status >= 400 and method != "HEAD" and len(path) < MAX_LINE - 20:
        body = json.loads(raw)
        assert isinstance(body["error"], str) and body["error"]


# --- strategies --------------------------------------------------------------------------------
hex_like = st.text(alphabet="0123456789abcdefABCDEF xg-", min_size=0, max_size=70)
digits = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.text(alphabet="0123456789²³¹٣۴०১๑", min_size=1, max_size=30),  # Unicode digits too
    st.integers(4300, 6000).map(lambda n: "9" * n),
)
anything = st.text(max_size=40)
segment = st.one_of(hex_like, digits, anything, st.just(ACCOUNTS[0]), st.just("fc" + "zz" * 20))
ROUTES = ["/status", "/blocks", "/blocks/{}", "/accounts/{}", "/tasks", "/tasks/{}",
          "/content/{}", "/tx", "/{}", "/blocks/{}/{}"]  # fmt: skip
query_value = st.one_of(digits, anything)
queries = st.dictionaries(
    st.sampled_from(["from", "limit", "size", "x", ""]), query_value, max_size=3
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(ROUTES))
    parts = [quote(draw(segment), safe="") for _ in range(template.count("{}"))]
    path = template.format(*parts)
    query = draw(queries)
    if query:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    return path


@st.composite
def tx_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "bomb", "valid-but-resigned"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "bomb":
        n = draw(st.integers(1, 60_000))
        return b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    data = bytearray(VALID_TX)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255)) if kind == "mutated" else data[at] ^ 0x01
    if bytes(data) == VALID_TX:
        data[-1] ^= 0x01  # a different signature: never the one valid transaction
    return bytes(data)


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the suite ---------------------------------------------------------------------------------
@FUZZ
@given(method=st.sampled_from(["GET", "HEAD", "DELETE", "PATCH", "OPTIONS"]), path=paths())
def test_random_paths_and_queries_never_500(node: str, method: str, path: str) -> None:
    before = snapshot(node)
    status, raw = request(node, method, path)
    check_answer(method, status, raw, path)
    assert snapshot(node) == before


@FUZZ
@given(body=tx_bodies())
def test_random_transactions_are_refused_and_change_nothing(node: str, body: bytes) -> None:
    before = snapshot(node)
    status, raw = request(node, "POST", "/tx", body)
    check_answer("POST", status, raw)
    assert 400 <= status < 500
    assert snapshot(node) == before


@FUZZ
@given(
    path=st.one_of(paths(), st.builds(lambda s: f"/content/{quote(s, safe='')}", segment)),
    body=st.binary(max_size=2_000),
    method=st.sampled_from(["PUT", "POST"]),
)
def test_random_uploads_and_posts_never_500(node: str, path: str, body: bytes, method: str) -> None:
    before = snapshot(node)
    status, raw = request(node, method, path, body)
    check_answer(method, status, raw, path)
    if status == 200:  # only a blob under its own hash can be stored
        assert method == "PUT" and json.loads(raw)["sha256"] == hashlib.sha256(body).hexdigest()
    assert snapshot(node) == before


def test_node_still_answers_after_the_fuzz(node: str) -> None:
    status, raw = request(node, "GET", "/status")
    assert status == 200 and json.loads(raw)["height"] == 0
