"""The command line in subprocesses: keygen → genesis → full node → light FL server → stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def fedcoin(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_bad_flag_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    bad = fedcoin("full", "--listen", "nowhere", "--genesis", "g.json", cwd=tmp_path)
    assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr
    missing = fedcoin("full", "--genesis", "absent.json", "--data-dir", "d", cwd=tmp_path)
    assert missing.returncode == 1 and "genesis file not found" in missing.stderr
    nokey = fedcoin(
        "light", "--key", str(tmp_path / "k.pem"), "--node", "http://127.0.0.1:9", cwd=tmp_path
    )
    assert nokey.returncode == 1 and "cannot reach the node" in nokey.stderr
    fedcoin("keygen", "--out", "k.pem", cwd=tmp_path)
    again = fedcoin("keygen", "--out", "k.pem", cwd=tmp_path)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


@pytest.mark.slow
def test_full_and_light_nodes_end_to_end(tmp_path: Path) -> None:
    made = fedcoin("keygen", "--out", "server.pem", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    server = made.stdout.strip()
    assert re.fullmatch(r"fc[0-9a-f]{40}", server)
    gen = fedcoin("genesis", "--out", "genesis.json", "--alloc", f"{server}=1000",
                  "--min-block-interval-ms", "300", cwd=tmp_path)  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    node = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "full", "--data-dir", "n", "--genesis",
         "genesis.json", "--listen", "127.0.0.1:0"],
        cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert node.stderr is not None
        address = None
        for line in node.stderr:
            found = re.search(r"serving on (127\.0\.0\.1:\d+)", line)
            if found:
                address = found.group(1)
                break
        assert address, "the full node never said where it serves"
        light = fedcoin(
            "light", "--node", f"http://{address}", "--key", "server.pem",
            "--rounds", "1", "--clients", "3", "--epochs", "1", cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert light.returncode == 0, light.stderr[-2000:]
        assert re.search(r"round 1: accuracy [0-9.]+, SV \[", light.stdout)
    finally:
        node.send_signal(signal.SIGTERM)
        rest = node.communicate(timeout=30)[1]
    assert node.returncode == 0
    assert "full node stopped at height" in rest
