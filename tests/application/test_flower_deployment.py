"""Flower's own deployment paying through FedCoin, every part its own process on loopback.

Three ``main.py full`` validators; a Flower SuperLink; three SuperNodes running the example
ClientApp with the FedCoin mod, each with its own key file and data shard; ``flwr run`` of the
example ServerApp with ``FedCoinFedAvg``. Three rounds settle, every client's address is paid,
and the pay is the protocol's split of the settled Shapley values.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedcoin.data.keys import PrivateKey, format_address

pytest.importorskip("flwr", reason="the optional extra fedcoin[flower] is installed by make test")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PRICE = 10_000_000


def free_port() -> int:
    """A port the kernel just handed out (Flower's processes take a port number, not 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, what: str, timeout: float = 120.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling another process's log or socket


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


class Processes:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.procs = root, env, []

    def start(self, name: str, *cmd: str) -> tuple[subprocess.Popen, Path]:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(
            list(cmd), cwd=self.root, env=self.env, stdout=log.open("w"),
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc, log

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def processes(root: Path, env: dict[str, str]) -> Iterator[Processes]:
    procs = Processes(root, env)
    try:
        yield procs
    finally:
        procs.stop()


def start_validators(procs: Processes, count: int) -> list[str]:
    urls: list[str] = []
    for i in range(count):
        boot = ["--bootstrap", urls[0].removeprefix("http://")] if urls else []
        proc, log = procs.start(
            f"full{i}", sys.executable, str(REPO / "main.py"), "full", "--data-dir", f"n{i}",
            "--genesis", "genesis.json", "--listen", "127.0.0.1:0", "--key", f"validator{i}.pem",
            *boot,
        )  # fmt: skip
        found: list[str] = []

        def serving(log: Path = log, found: list[str] = found) -> bool:
            m = re.search(r"serving on (127\.0\.0\.1:\d+)", log.read_text())
            found[:] = [m.group(1)] if m else []
            return bool(m)

        wait_for(serving, f"validator {i} to serve", proc=proc)
        urls.append(f"http://{found[0]}")
    wait_for(
        lambda: all(len(get_json(u + "/status")["peers"]) >= count - 1 for u in urls),
        "the validators to connect",
    )
    return urls


@pytest.mark.slow
def test_flower_deployment_pays_every_client_by_settled_shapley_value(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    server = PrivateKey.generate()
    server.save(tmp_path / "server.pem")
    clients = [PrivateKey.generate() for _ in range(3)]
    digits = load_digits()
    x, y = (digits.data / 16).astype(np.float32)[:900], digits.target[:900]
    for i, key in enumerate(clients):
        key.save(tmp_path / f"client{i}.pem")
        np.savez(tmp_path / f"client{i}.npz", x=x[i::3], y=y[i::3])
    bonds = []
    for i in range(3):
        PrivateKey.generate().save(tmp_path / f"validator{i}.pem")
        bonds += ["--validator", f"validator{i}.pem=1"]
    genesis = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "genesis", "--out", "genesis.json", "--alloc",
         f"{format_address(server.address)}=1000", "--min-block-interval-ms", "300", *bonds],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert genesis.returncode == 0, genesis.stderr
    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "flower", app, ignore=shutil.ignore_patterns("__pycache__"))
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    link = free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "fedcoin"\n\n[superlink.fedcoin]\n'
        f'address = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # Flower spawns its own tools
        "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }  # fmt: skip
    with processes(tmp_path, env) as procs:
        urls = start_validators(procs, 3)
        superlink, _ = procs.start(
            "superlink", str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(link), "--database", str(tmp_path / "superlink.db"),
            "--disable-runtime-dependency-installation",
        )  # fmt: skip
        wait_for(lambda: listening(link), "the SuperLink", proc=superlink)
        for i in range(3):
            node_config = (
                f'fedcoin-key="{tmp_path}/client{i}.pem" data-path="{tmp_path}/client{i}.npz"'
            )
            procs.start(
                f"supernode{i}", str(BIN / "flower-supernode"), "--insecure", "--superlink",
                f"127.0.0.1:{link}", "--port", str(free_port()), "--node-config", node_config,
            )  # fmt: skip
        run_config = (
            f'fedcoin-node="{urls[0]}" fedcoin-key="{tmp_path}/server.pem" '
            f'task-file="{tmp_path}/task.txt" report="{tmp_path}/report.json" '
            f'num-server-rounds=3 min-clients=3 max-clients=3 price-fc="10" local-epochs=1'
        )
        run = subprocess.run(
            [str(BIN / "flwr"), "run", str(app), "fedcoin", "--stream", "--run-config", run_config],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        # `flwr run --stream` exits 0 even when the ServerApp fails: the report says it finished
        assert (tmp_path / "report.json").exists(), run.stdout[-5000:]
        report = json.loads((tmp_path / "report.json").read_text())
        task_id = (tmp_path / "task.txt").read_text().strip()
        assert report["task_id"] == task_id
        assert [r["round"] for r in report["rounds"]] == [1, 2, 3]

        task = get_json(f"{urls[1]}/tasks/{task_id}")
        assert task["rounds_done"] == 3 and task["escrow"] == 0
        addresses = sorted(format_address(k.address) for k in clients)
        total = dict.fromkeys(addresses, 0)
        pool = PRICE * 7000 // 10_000
        for entry in task["rounds"]:
            assert entry["settled"], entry
            payout = entry["payout"]
            assert not payout["voided"]
            paid = [c["paid"] for c in payout["clients"]]
            positive = [max(v, 0) for v in payout["sv"]]
            assert paid == [pool * p // sum(positive) for p in positive]
            assert sorted(c["address"] for c in payout["clients"]) == addresses
            for c in payout["clients"]:
                total[c["address"]] += c["paid"]
        for address in addresses:
            assert total[address] > 0
            assert get_json(f"{urls[2]}/accounts/{address}")["balance"] == total[address]
