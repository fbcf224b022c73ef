"""The HTTP API: answers, and clear errors that change nothing."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest

from fedcoin.application.api import MAX_TX_BYTES
from fedcoin.data.encoding import encode
from fedcoin.data.keys import address_of, format_address
from fedcoin.data.tx import Transfer, make_tx
from tests.application.cluster import PUBLISHER_KEY, SERVER_KEY, Cluster
from tests.helpers import CHAIN_ID, FC


@pytest.fixture
async def api(tmp_path):
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0, max_content_bytes=10_000)
        async with aiohttp.ClientSession(node.url) as session:
            yield cluster, node, session


async def expect(resp: aiohttp.ClientResponse, status: int, text: str = "") -> dict:
    body = await resp.json()
    assert resp.status == status, body
    if text:
        assert text in body["error"]
    return body


async def test_status_and_genesis_block(api) -> None:
    _, node, http = api
    status = await (await http.get("/status")).json()
    assert status["height"] == 0 and status["chain_id"] == CHAIN_ID
    block = await (await http.get("/blocks/0")).json()
    assert block["hash"] == node.chain.head.hash.hex()
    same = await (await http.get(f"/blocks/{block['hash']}")).json()
    assert same == block


async def test_unknown_and_malformed_blocks(api) -> None:
    _, _, http = api
    await expect(await http.get("/blocks/99"), 404, "no block")
    await expect(await http.get("/blocks/" + "ab" * 32), 404, "no block")
    await expect(await http.get("/blocks/xyz"), 400, "height or its 64-hex")
    await expect(await http.get("/blocks?from=x"), 400, "integers")
    await expect(await http.get("/blocks?from=0&limit=0"), 400)


async def test_accounts(api) -> None:
    _, _, http = api
    body = await (await http.get(f"/accounts/{format_address(SERVER_KEY.address)}")).json()
    assert body["balance"] == 1_000 * FC and body["nonce"] == 0
    await expect(await http.get("/accounts/nonsense"), 400, "not a FedCoin address")
    await expect(await http.get("/accounts/fc" + "zz" * 20), 400, "hexadecimal")


async def test_transactions(api) -> None:
    cluster, node, http = api
    await expect(await http.post("/tx", data=b"\x93garbage"), 400, "malformed transaction")
    await expect(await http.post("/tx", data=encode([1, 2, 3])), 400, "malformed")
    broke = make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 10**12 * FC))
    body = await expect(await http.post("/tx", data=broke.encode()), 422, "balance")
    assert body["rule"] == "InsufficientBalance"
    wrong_nonce = make_tx(SERVER_KEY, CHAIN_ID, 5, Transfer(PUBLISHER_KEY.address, 1))
    assert (await expect(await http.post("/tx", data=wrong_nonce.encode()), 422))[
        "rule"
    ] == "NonceMismatch"
    assert len(node.mempool) == 0
    good = make_tx(SERVER_KEY, CHAIN_ID, 0, Transfer(PUBLISHER_KEY.address, 3 * FC))
    assert (await (await http.post("/tx", data=good.encode())).json())["tx_id"] == good.id.hex()
    await cluster.wait_until(lambda: node.chain.head.height == 1)
    account = await (await http.get(f"/accounts/{format_address(PUBLISHER_KEY.address)}")).json()
    assert account["balance"] == 1_003 * FC


async def test_content_upload_and_download(api) -> None:
    _, node, http = api
    blob = b"weights" * 100
    sha = hashlib.sha256(blob).hexdigest()
    assert (await http.put(f"/content/{sha}", data=blob)).status == 200
    got = await http.get(f"/content/{sha}")
    assert got.status == 200 and await got.read() == blob
    await expect(await http.get("/content/" + "00" * 32), 404, "no content")
    await expect(await http.get("/content/123"), 400, "sha256")
    await expect(await http.put("/content/" + "00" * 32, data=b"other bytes"), 400, "does not hash")
    big = b"x" * 20_000
    await expect(
        await http.put(f"/content/{hashlib.sha256(big).hexdigest()}", data=big), 413, "cap"
    )
    assert not node.content.has(hashlib.sha256(big).digest())


async def test_tasks(api) -> None:
    _, _, http = api
    assert await (await http.get("/tasks")).json() == []
    await expect(await http.get("/tasks/" + "00" * 32), 404, "no task")
    await expect(await http.get("/tasks/abc"), 400, "64 hex")


# --- clear errors on odd input (issue 9) ----------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/blocks/²", 400),  # a Unicode digit: str.isdigit() says yes, int() says no
        ("/blocks/" + "9" * 5000, 400),  # past Python's int-from-text limit
        (f"/blocks/{2**63}", 404),  # a valid height no chain has reached (SQLite is signed)
        (f"/blocks/{2**64}", 400),
        ("/blocks/-1", 400),
        ("/blocks/+1", 400),
        ("/blocks/" + "ab " * 21 + "a", 400),  # 64 characters with spaces: not a hash
        (f"/blocks?from={2**63}", 200),
        (f"/blocks?from={2**64 - 1}&limit=100", 200),
        ("/blocks?from=" + "9" * 5000, 400),
        ("/blocks?from=²", 400),
        ("/blocks?limit=-5", 400),
        ("/blocks?limit=" + "9" * 30, 400),
        ("/tasks/" + "00 " * 21 + "0", 400),
        ("/content/" + "00 " * 21 + "0", 400),
        ("/accounts/fc" + "00 " * 13 + "0", 400),
        ("/nowhere", 404),
    ],
)
async def test_odd_paths_and_queries_get_a_json_4xx(api, path: str, status: int) -> None:
    _, node, http = api
    resp = await http.get(path)
    body = await resp.json()
    assert resp.status == status, body
    if status >= 400:
        assert isinstance(body["error"], str) and body["error"]
    else:
        assert body == []
    assert (await http.get("/status")).status == 200


async def test_wrong_method_is_a_json_405(api) -> None:
    _, _, http = api
    await expect(await http.delete("/status"), 405)


async def test_transaction_bodies_are_capped_and_bombs_refused_fast(api) -> None:
    _, node, http = api
    await expect(await http.post("/tx", data=b"\x90" * (MAX_TX_BYTES + 1)), 413, "at most")
    # 60 KB of nested empty arrays: refused by the object bound, not after building them
    bomb = b"\xdc" + (150).to_bytes(2, "big") + (b"\xdc\x01\x90" + b"\x90" * 400) * 150
    assert len(bomb) < MAX_TX_BYTES
    await expect(await http.post("/tx", data=bomb), 400, "malformed")
    assert len(node.mempool) == 0


async def test_upload_size_is_checked_and_a_refused_upload_leaves_no_file(api) -> None:
    _, node, http = api
    blob = b"w" * 5_000
    sha = hashlib.sha256(blob).hexdigest()
    await expect(await http.put(f"/content/{sha}?size=4999", data=blob), 400)
    await expect(await http.put(f"/content/{sha}?size=x", data=blob), 400, "'size'")
    await expect(await http.put(f"/content/{sha}?size=20000", data=blob), 413, "cap")
    await expect(await http.put("/content/" + "11" * 32, data=blob), 400, "does not hash")

    async def chunked(data: bytes):  # no Content-Length: the cap is found while streaming
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    big = b"z" * 20_000
    resp = await http.put(f"/content/{hashlib.sha256(big).hexdigest()}", data=chunked(big))
    await expect(resp, 413, "cap")
    content_root = node.content.root
    assert [p for p in content_root.rglob("*") if p.is_file()] == []
    ok = await http.put(f"/content/{sha}?size=5000", data=blob)
    assert (await expect(ok, 200))["size"] == 5000
    assert node.content.get(bytes.fromhex(sha)) == blob


async def test_an_upload_cut_short_leaves_no_file_and_the_node_answers(api) -> None:
    _, node, http = api
    host, port = node.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"PUT /content/{'ab' * 32} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode()
        + b"x" * 1000
    )
    await writer.drain()
    root = node.content.root
    deadline = asyncio.get_running_loop().time() + 30
    while not any(p.name.startswith(".tmp-") for p in root.iterdir()):  # the upload has begun
        assert asyncio.get_running_loop().time() < deadline, "upload never started"
        await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    while any(p.is_file() for p in root.rglob("*")):  # ... and is cleaned up once cut
        assert asyncio.get_running_loop().time() < deadline, "temporary file left behind"
        await asyncio.sleep(0.01)
    assert (await http.get("/status")).status == 200


async def test_validators_shows_the_set_the_bonds_and_unbonding(api) -> None:
    cluster, node, http = api
    body = await (await http.get("/validators")).json()
    expected = sorted(v.pubkey.hex() for v in cluster.genesis.validators)
    assert [v["pubkey"] for v in body["validators"]] == expected
    assert body["total_power"] == sum(v.bond for v in cluster.genesis.validators)
    assert body["height"] == 0 and body["next_epoch_at"] == body["epoch_blocks"]
    assert [b["bond"] for b in body["bonds"]] == [v.bond for v in cluster.genesis.validators]
    assert body["unbonding"] == []
    first = cluster.genesis.validators[0]
    assert body["validators"][0]["address"] == format_address(address_of(first.pubkey))
