"""API and explorer benchmark, and (with ``--docker``) the image's size, build, start and memory.

1. A task on a long chain: a SQLite chain of N blocks (default 10 000) with a task whose 3
   rounds are submitted and settled in its first blocks, served by a real (non-mining) full
   node. Median latency of ``GET /tasks/{id}`` and ``GET /blocks/{h}`` as ratios to
   ``GET /status`` in the same run (target: the task within 5× of ``/status``, independent of
   chain length), and, for contrast, the chain walk the API did before the task index.
2. The explorer in headless Chromium (``tests/browser.py``): first contentful paint, and the
   time until the overview and the task page show their data, as ratios to ``GET /status``
   measured from the same page with ``fetch``.
3. ``--docker``: on the engine ``tests/docker_support.py`` finds or starts, the build time of
   both targets, their sizes, container start → API answering, and a validator's memory.

    python bench/api.py [--blocks 10000] [--repeat 200] [--docker]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from fedcoin.application.full_node import FullNode, FullNodeConfig  # noqa: E402
from fedcoin.consensus.chain import Chain  # noqa: E402
from fedcoin.data.store import SqliteChainStore  # noqa: E402
from fedcoin.data.tx import SubmitRound  # noqa: E402
from tests.helpers import (  # noqa: E402
    ALICE,
    BOB,
    CAROL,
    SERVER,
    ChainBuilder,
    key,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
)


def build_chain(folder: Path, blocks: int) -> bytes:
    """A node's chain.sqlite: a task with 3 settled rounds, then one transfer per block."""
    genesis = make_genesis()
    store = SqliteChainStore(folder / "chain.sqlite", genesis)
    builder = ChainBuilder(genesis)
    builder.chain = Chain(store, genesis, builder.verifier)  # every block is committed to it
    publish = make_publish(ALICE, 0)
    builder.add([publish])
    for r in (1, 2, 3):
        # SERVER, ALICE and BOB are validators too: their nonces move with their commits
        submit = make_submit(publish.id, r, builder.state.account(SERVER.address).nonce)
        builder.add([submit])
        # PoSap v2: every validator commits to the honest table, then reveals; the last
        # reveal's block settles the round
        (payout,) = builder.value(submit.id).payouts
        assert payout.round == r and not payout.voided
    started = time.monotonic()
    nonce = builder.state.account(BOB.address).nonce
    while builder.block.height < blocks:
        builder.add([make_transfer(BOB, CAROL, 1, nonce)])
        nonce += 1
    print(f"built {blocks} blocks in {time.monotonic() - started:.0f} s", file=sys.stderr)
    store.close()
    return publish.id


def walk_rounds(node: FullNode, task_id: bytes) -> int:
    """What GET /tasks/{id} did before the index: read every block from the task's creation."""
    store = node.chain.store
    task = node.chain.head_state().tasks[task_id]
    found = 0
    for height in range(task.created_height, store.head().height + 1):
        block = store.block_at(height)
        if block is None:
            break
        found += sum(isinstance(t.body, SubmitRound) for t in block.txs)
    return found


async def median_ms(http: aiohttp.ClientSession, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with http.get(path) as resp:
            await resp.read()
            assert resp.status == 200, path
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def api_part(folder: Path, blocks: int, repeat: int) -> None:
    task_id = build_chain(folder, blocks)
    config = FullNodeConfig(data_dir=folder, genesis=make_genesis(), key=key("bench"), mine=False)
    async with FullNode(config) as node, aiohttp.ClientSession(node.url) as http:
        await median_ms(http, "/status", 20)  # warm up
        status = await median_ms(http, "/status", repeat)
        task = await median_ms(http, f"/tasks/{task_id.hex()}", repeat)
        block = await median_ms(http, f"/blocks/{blocks // 2}", repeat)
        started = time.perf_counter()
        walked = walk_rounds(node, task_id)
        walk = (time.perf_counter() - started) * 1000
        assert walked == 3
        print(f"chain of {blocks} blocks, median of {repeat} requests")
        print(f"  GET /status              {status:7.2f} ms   1.00")
        print(f"  GET /tasks/{{id}}          {task:7.2f} ms   {task / status:5.2f}× /status")
        print(f"  GET /blocks/{{h}}          {block:7.2f} ms   {block / status:5.2f}× /status")
        print(f"  old chain walk (no index) {walk:7.2f} ms   {walk / status:5.0f}× /status")
        await explorer_part(node, task_id)


async def explorer_part(node: FullNode, task_id: bytes) -> None:
    from tests.browser import Browser

    async with Browser() as browser:
        await browser.goto(node.url + "/")
        await browser.wait_for("!!document.querySelector('#height')")
        timing = await browser.evaluate(
            """(async () => {
                const t = [];
                for (let i = 0; i < 50; i++) {
                    const s = performance.now(); await (await fetch('/status')).json();
                    t.push(performance.now() - s);
                }
                t.sort((a, b) => a - b);
                const paint = performance.getEntriesByName('first-contentful-paint')[0];
                const nav = performance.getEntriesByType('navigation')[0];
                return {status: t[25], fcp: paint ? paint.startTime : null, load: nav.loadEventEnd};
            })()"""
        )
        # Time until the overview and the task page show their data, from a fresh navigation.
        started = time.perf_counter()
        await browser.goto(node.url + "/?fresh#/")
        await browser.wait_for(
            f"document.querySelector('#height')?.textContent === '{node.chain.head.height}'",
            every=0.002,
        )
        overview = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        await browser.evaluate(f"location.hash = '#/task/{task_id.hex()}'")
        await browser.wait_for("!!document.querySelector('#task-status')", every=0.002)
        task_page = (time.perf_counter() - started) * 1000
    status = timing["status"]
    print(f"explorer in headless Chromium (GET /status from the page: {status:.2f} ms)")
    print(f"  first contentful paint    {timing['fcp']:7.1f} ms   {timing['fcp'] / status:5.0f}×")
    print(f"  overview with data        {overview:7.1f} ms   {overview / status:5.0f}×")
    print(f"  task page with data       {task_page:7.1f} ms   {task_page / status:5.0f}×")


def docker_part() -> None:
    from tests.docker_support import base_image, engine

    cache = ROOT / ".pytest_cache" / "d" / "fedcoin-docker"
    with engine() as eng:
        base = base_image(eng, cache)
        sizes, builds = {}, {}
        for target in ("validator", "fedcoin"):  # fedcoin, the last stage, builds every stage
            tag = f"fedcoin-bench-{target}"
            started = time.monotonic()
            eng.run("build", "--no-cache", "--network", "host", "--build-arg", f"BASE={base}",
                    "--target", target, "-t", tag, str(ROOT), timeout=1200)  # fmt: skip
            builds[target] = time.monotonic() - started
            sizes[target] = int(eng.run("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        print(f"docker image (base {base})")
        for target, size in sizes.items():
            print(f"  {target:9}  build {builds[target]:5.0f} s (no cache)   "
                  f"size {size / 1e9:5.2f} GB")  # fmt: skip
        for target in ("fedcoin", "validator"):
            tag = f"fedcoin-bench-{target}"
            vol = f"fedcoin-bench-{target}"
            eng.run("run", "--rm", "-v", f"{vol}:/data", tag, "genesis", "--out",
                    "/data/node/genesis.json")  # fmt: skip
            port = free_port()
            started = time.monotonic()
            name = eng.run("run", "-d", "--network", "host", "-v", f"{vol}:/data", tag, "full",
                           "--listen", f"127.0.0.1:{port}").stdout.strip()  # fmt: skip
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2)
                    break
                except OSError:
                    time.sleep(0.05)  # polling a container from outside
            ready = time.monotonic() - started
            time.sleep(5)  # idle a little before reading memory
            memory = eng.run("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout
            print(f"  {target:9}  start → API ready {ready:5.2f} s   memory {memory.split('/')[0]}")
            eng.run("rm", "-f", name, check=False)
            eng.run("volume", "rm", "-f", vol, check=False)
            eng.run("image", "rm", "-f", tag, check=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--docker", action="store_true", help="also measure the Docker image")
    parser.add_argument("--no-api", action="store_true", help="only the Docker part")
    args = parser.parse_args()
    if not args.no_api:
        with tempfile.TemporaryDirectory(prefix="fc-bench-api-") as tmp:
            asyncio.run(api_part(Path(tmp), args.blocks, args.repeat))
    if args.docker:
        try:
            docker_part()
        except subprocess.SubprocessError as exc:
            print(f"docker part failed: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
