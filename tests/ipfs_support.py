"""A real IPFS daemon for tests: js-ipfs 0.66.1 from npm (``tests/ipfs_daemon``), installed
with ``npm ci`` on first use, initialised with the offline test profile in a temporary
directory and started on free 127.0.0.1 ports. No kubo binary can be installed on these
machines (see ../shared/ENVIRONMENT.md); this is the daemon that works here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMON_DIR = Path(__file__).resolve().parent / "ipfs_daemon"
JSIPFS = DAEMON_DIR / "node_modules" / ".bin" / "jsipfs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_installed() -> None:
    if JSIPFS.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("IPFS TESTS SKIPPED: npm is not installed, so the js-ipfs daemon cannot be")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=DAEMON_DIR, capture_output=True, text=True,
        env={**os.environ, "NO_UPDATE_NOTIFIER": "1"}, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not JSIPFS.exists():
        pytest.skip(f"IPFS TESTS SKIPPED: 'npm ci' for js-ipfs failed:\n{done.stderr[-2000:]}")


def start_daemon(home: Path) -> Iterator[str]:
    """Yield the daemon's API multiaddr; stop it afterwards."""
    ensure_installed()
    env = {**os.environ, "IPFS_PATH": str(home), "NO_UPDATE_NOTIFIER": "1"}

    def jsipfs(*args: str) -> None:
        subprocess.run([str(JSIPFS), *args], env=env, check=True, capture_output=True, timeout=120)

    jsipfs("init", "--profile", "test")
    api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    jsipfs("config", "Addresses.API", api)
    jsipfs("config", "Addresses.Gateway", f"/ip4/127.0.0.1/tcp/{free_port()}")
    jsipfs("config", "Addresses.RPC", f"/ip4/127.0.0.1/tcp/{free_port()}/ws")
    jsipfs("config", "--json", "Addresses.Swarm", f'["/ip4/127.0.0.1/tcp/{free_port()}"]')
    daemon = subprocess.Popen(
        [str(JSIPFS), "daemon", "--offline"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        deadline = time.monotonic() + 60
        lines = []
        for line in daemon.stdout:
            lines.append(line)
            if "Daemon is ready" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            pass
        if not any("Daemon is ready" in line for line in lines):
            raise RuntimeError("js-ipfs daemon did not start:\n" + "".join(lines[-20:]))
        yield api
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
