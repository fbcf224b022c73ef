"""The web explorer and the typed API views it reads, on live nodes with a settled task.

The browser test drives Debian's headless Chromium over the DevTools protocol
(``tests/browser.py``); where Chromium cannot be installed it skips with a loud reason.
Set ``FEDCOIN_SCREENSHOT=path.png`` to keep a screenshot of the task page.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from fedcoin.application.datasets import load_digits_dataset, make_clients, split_validation
from fedcoin.application.explorer import FILES
from fedcoin.application.fl_server import FLServer, FLServerConfig, RoundReport
from fedcoin.application.full_node import FullNode
from fedcoin.application.round_views import TaskView
from fedcoin.application.training import build_mlp
from fedcoin.application.views import BlockView, StatusView, block_view
from fedcoin.data.keys import address_of, format_address
from fedcoin.data.tx import Transfer, make_tx
from fedcoin.errors import DecodeError
from tests.application.cluster import CLIENT_KEYS, FAST_POSAP, PUBLISHER_KEY, SERVER_KEY, Cluster
from tests.browser import Browser
from tests.docker_support import NoEngine
from tests.helpers import FC

pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")
# One settled task serves the tests that read it: its nodes live on the module's loop.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

Settled = tuple[Cluster, FullNode, bytes, list[RoundReport], int]


def fl_config(node_url: str, rounds: int) -> tuple[FLServerConfig, int]:
    train, val = split_validation(load_digits_dataset(), 0.2, seed=0)
    shards = make_clients(train.subset(range(0, 600)), clients=3, noisy=1, seed=0)
    arch, initial = build_mlp(64, 10, hidden=16, seed=0)
    config = FLServerConfig(
        key=SERVER_KEY, node_url=node_url, architecture=arch, initial_weights=initial,
        validation=val, shards=shards, client_keys=CLIENT_KEYS[:3], rounds=rounds,
        price_per_round=10 * FC, epochs=2, posap=FAST_POSAP, settle_timeout=120,
    )  # fmt: skip
    return config, len(val.y)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def settled(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settled]:
    """Two full nodes on one head after an FL server ran 2 rounds of a task on them."""
    async with Cluster(tmp_path_factory.mktemp("explorer")) as cluster:
        for i in range(2):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(n.p2p.peers for n in cluster.nodes))
        config, samples = fl_config(cluster.nodes[0].url, rounds=2)
        server = FLServer(config)
        reports = await server.run()
        assert server.task_id is not None
        await cluster.wait_until(cluster.same_head)
        yield cluster, cluster.nodes[1], server.task_id, reports, samples


@on_module_loop
async def test_task_view_reads_rounds_from_the_index(settled: Settled) -> None:
    _, node, task_id, reports, samples = settled
    async with aiohttp.ClientSession(node.url) as http:
        async with http.get(f"/tasks/{task_id.hex()}") as resp:
            assert resp.status == 200
            data = await resp.json()
    task = TaskView.from_json(data)
    assert task.to_json() == data  # one schema, both directions
    assert task.validation_samples == samples
    assert task.rounds is not None and [r.round for r in task.rounds] == [1, 2]
    for view, report in zip(task.rounds, reports, strict=True):
        assert view.settled and view.payout is not None and view.valuation is None
        assert view.payout.sv == list(report.sv)
        # both running validators revealed the winning table and were paid; nobody slashed
        assert view.table_root is not None and not view.slashed
        assert sorted(view.revealers) == sorted(m.address for m in view.payout.miners)
        assert len(view.revealers) == 2
        assert view.settled_height == report.block_height
        # The round's score from the grand coalition's U (summed clipped margins ÷ their
        # maximum) is at most the server's own accuracy: only correctly classified samples add
        # to it. U(N) is the exact integer evaluation of g + Σ λ_i Δ_i, the server's a float
        # Keras pass of the FedAvg; a few samples near the decision boundary may go either way.
        assert view.accuracy is not None
        assert 0 < view.accuracy <= report.accuracy + 5 / samples + 1e-9
    # The rounds come from the blocks the index lists, not from a walk of the chain.
    listed = [h for h, _ in node.store.task_blocks(task_id)]
    assert {r.submitted_height for r in task.rounds} <= set(listed)
    assert {r.settled_height for r in task.rounds} <= set(listed)


@on_module_loop
async def test_block_and_status_views_round_trip(settled: Settled) -> None:
    _, node, _, reports, _ = settled
    async with aiohttp.ClientSession(node.url) as http:
        async with http.get("/status") as resp:
            status = await resp.json()
        async with http.get(f"/blocks/{reports[0].block_height}") as resp:
            block = await resp.json()
    assert StatusView.from_json(status).to_json() == status
    view = BlockView.from_json(block)
    assert view.to_json() == block
    assert [p.round for p in view.payouts] == [1] and not view.payouts[0].voided
    # the block's commits and reveals are listed with their kind
    kinds = {t.kind for b in await blocks_until(node, view.height) for t in b.txs}
    assert {"ShareCommit", "ShareReveal"} <= kinds
    with pytest.raises(DecodeError, match="BlockView"):
        BlockView.from_json({**block, "height": "not a number"})
    with pytest.raises(DecodeError, match="TaskView"):
        TaskView.from_json([1, 2])


async def blocks_until(node, height: int) -> list[BlockView]:
    """The views of blocks 1 … ``height`` as the API builds them."""
    return [block_view(node.store.block_at(h), node.chain) for h in range(1, height + 1)]


def test_explorer_files_load_nothing_from_elsewhere() -> None:
    for path in FILES.glob("*.*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path
            assert "@import" not in text and "cdn" not in text.lower(), path


async def test_explorer_is_served_at_the_root(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0)
        async with aiohttp.ClientSession(node.url) as http:
            async with http.get("/") as resp:
                assert resp.status == 200 and resp.content_type == "text/html"
                assert "/explorer/explorer.js" in await resp.text()
            for name in ("explorer.js", "explorer.css"):
                async with http.get(f"/explorer/{name}") as resp:
                    assert resp.status == 200
            async with http.get("/explorer/../api.py") as resp:
                assert resp.status in (403, 404)


@pytest.fixture
def chromium() -> str:
    from tests.browser import chromium_path

    try:
        return chromium_path()
    except NoEngine as exc:
        message = f"BROWSER TEST NOT RUN: {exc}"
        warnings.warn(message, pytest.PytestWarning, stacklevel=1)
        print(f"\n*** {message} ***", file=sys.stderr)
        pytest.skip(message)


@on_module_loop
async def test_explorer_in_a_real_browser(settled: Settled, chromium: str) -> None:
    cluster, node, task_id, reports, _ = settled
    async with Browser(chromium) as browser:
        await browser.goto(node.url + "/")
        # The overview shows this node's head, and says what finality means now.
        head = node.chain.head.hash.hex()
        shown = await browser.wait_for(
            f"document.querySelector('#head')?.textContent === '{head}'"
            " || document.querySelector('#height')?.textContent"
        )
        assert shown is True or int(shown) >= node.chain.head.height
        assert await browser.evaluate("document.querySelector('#finality').textContent") == (
            "every block shown is committed"
        )
        # The validator set with its stake: every member of the head state's set is listed.
        shown_validators = await browser.evaluate(
            "[...document.querySelectorAll('table.validators a.account-link')]"
            ".map((a) => a.getAttribute('href').split('/').pop())"
        )
        members = [format_address(address_of(m[0])) for m in node.chain.head_state().validators]
        assert sorted(shown_validators) == sorted(members) and members
        # It follows the chain by itself: a new block shows up without a reload.
        before = node.chain.head.height
        payment = make_tx(
            PUBLISHER_KEY, cluster.genesis.chain_id, 0, Transfer(CLIENT_KEYS[0].address, FC)
        )
        await node.submit_tx(payment)
        await cluster.wait_until(lambda: node.chain.head.height > before)
        await browser.wait_for(f"Number(document.querySelector('#height')?.textContent) > {before}")
        # block → task: the block that settled round 1 links to its task.
        await browser.evaluate(f"location.hash = '#/block/{reports[0].block_height}'")
        await browser.wait_for("document.querySelector('#view').dataset.route === 'block'")
        await browser.wait_for("!!document.querySelector('a.task-link')")
        await browser.evaluate("document.querySelector('a.task-link').click()")
        await browser.wait_for("document.querySelector('#view').dataset.route === 'task'")
        # The settled task's charts: one point per round for the accuracy, bars per client.
        points = await browser.wait_for(
            "document.querySelector('svg[data-chart=accuracy]')?.dataset.points"
        )
        assert int(points) == len(reports)
        bars = await browser.evaluate(
            "document.querySelectorAll('svg[data-chart=pay] rect').length"
        )
        assert bars >= len(reports)
        status = await browser.evaluate("document.querySelector('#task-status').textContent")
        assert status == "done"
        assert task_id.hex()[:12] in await browser.evaluate(
            "document.querySelector('h1').textContent"
        )
        if os.environ.get("FEDCOIN_SCREENSHOT"):
            await browser.screenshot(Path(os.environ["FEDCOIN_SCREENSHOT"]))
        # task → account: a client's page shows its balance.
        client = await browser.evaluate(
            "document.querySelector('table.clients a.account-link').getAttribute('href')"
        )
        await browser.evaluate("document.querySelector('table.clients a.account-link').click()")
        await browser.wait_for("document.querySelector('#view').dataset.route === 'account'")
        address = await browser.wait_for("document.querySelector('#account-address')?.textContent")
        assert client.endswith(address)
        balance = await browser.evaluate("document.querySelector('#balance').textContent")
        assert float(balance.replace(",", "")) > 0
