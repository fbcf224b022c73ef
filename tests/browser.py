"""A headless Chromium driven over the DevTools protocol, for tests and benchmarks.

Debian's ``chromium`` is the only browser that installs here (no browser downloads), and the
DevTools protocol needs nothing beyond aiohttp's websocket client. ``Browser`` starts Chromium
with a private profile on a random debugging port (127.0.0.1 only), opens its first page,
and offers the few commands the explorer tests use: navigate, evaluate, wait for a condition,
screenshot. ``chromium_path()`` finds the browser, installing Debian's package as root when it
is missing, and raises ``NoEngine`` (with the reason) where it cannot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.docker_support import NoEngine, ensure_packages

FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0", "--window-size=1280,1600",
)  # fmt: skip


def chromium_path() -> str:
    """Debian's Chromium, installed on first use where this process may (root, apt)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        ensure_packages(("chromium", "chromium"))
        found = shutil.which("chromium")
    if found is None:
        raise NoEngine("chromium is not on PATH")
    return found


class Browser:
    """``async with Browser() as b``: one headless Chromium page, closed (and its profile
    removed) on exit."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or chromium_path()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(
            prefix="fc-chromium-", ignore_cleanup_errors=True
        )
        profile = Path(self._profile.name)
        self._proc = await asyncio.create_subprocess_exec(
            self.executable, *FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self._close()
                raise NoEngine("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)  # the browser writes the file when it is ready
        port = int(port_file.read_text().split()[0])
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        with contextlib.suppress(Exception):
            await self._http.close()
        # Chromium's helpers (zygote, renderers) share the process group it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()
        shutil.rmtree(self._profile.name, ignore_errors=True)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result (events in between are skipped)."""
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(60):
            while True:
                message = await self._ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"DevTools connection ended: {message.type}")
                data = json.loads(message.data)
                if data.get("id") == ident:
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    result: dict[str, Any] = data.get("result", {})
                    return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        done = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in done:
            raise RuntimeError(f"{expression}: {done['exceptionDetails']}")
        return done["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60, every: float = 0.05) -> Any:
        """Evaluate ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                value = await self.evaluate(expression)
                if value:
                    return value
            await asyncio.sleep(every)  # polling the page: it has no event to await from here
        raise AssertionError(f"timed out waiting for {expression!r} (last value {value!r})")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
