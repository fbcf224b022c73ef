"""The command line in subprocesses: keygen → genesis → full node → light FL server → stop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
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


def make_genesis_file(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``fedcoin genesis --out genesis.json ARGS`` with the key node.pem as its one validator."""
    if not (tmp_path / "node.pem").exists():
        fedcoin("keygen", "--out", "node.pem", cwd=tmp_path)
    return fedcoin(
        "genesis", "--out", "genesis.json", "--validator", "node.pem=1", *args, cwd=tmp_path
    )


@contextlib.contextmanager
def running_node(tmp_path: Path, genesis: str = "genesis.json") -> Iterator[str]:
    """Start ``fedcoin full`` with the key node.pem on a free port; yield its address; stop it
    with SIGTERM."""
    node = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "full", "--data-dir", "n", "--genesis",
         genesis, "--listen", "127.0.0.1:0", "--key", "node.pem"],
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
        yield address
    finally:
        node.send_signal(signal.SIGTERM)
        rest = node.communicate(timeout=30)[1]
    assert node.returncode == 0
    assert "full node stopped at height" in rest


def test_wallet_commands_end_to_end(tmp_path: Path) -> None:
    alice = fedcoin("keygen", "--out", "alice.pem", cwd=tmp_path).stdout.strip()
    bob = fedcoin("keygen", "--out", "bob.pem", cwd=tmp_path).stdout.strip()
    gen = make_genesis_file(tmp_path, "--alloc", f"{alice}=100", "--min-block-interval-ms", "200")
    assert gen.returncode == 0, gen.stderr
    with running_node(tmp_path) as address:
        node = ["--node", f"http://{address}"]
        sent = fedcoin("transfer", *node, "--key", "alice.pem", "--to", bob, "--amount", "12.5",
                       "--wait", cwd=tmp_path)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "included in a block" in sent.stdout
        balance = fedcoin("balance", *node, "--key", "bob.pem", cwd=tmp_path)
        assert balance.stdout.strip() == f"{bob}: 12.500000 FC (nonce 0)"
        too_much = fedcoin("transfer", *node, "--key", "bob.pem", "--to", alice, "--amount", "99",
                           cwd=tmp_path)  # fmt: skip
        assert too_much.returncode == 1 and "rule InsufficientBalance" in too_much.stderr
        bad_amount = fedcoin("transfer", *node, "--key", "bob.pem", "--to", alice, "--amount",
                             "0.0000001", cwd=tmp_path)  # fmt: skip
        assert bad_amount.returncode == 2 and "at most 6 decimals" in bad_amount.stderr
        published = fedcoin("publish-task", *node, "--key", "alice.pem", "--server", bob,
                            "--rounds", "2", "--price", "5", "--deadline-blocks", "2",
                            cwd=tmp_path, timeout=180)  # fmt: skip
        assert published.returncode == 0, published.stderr
        task_id = re.search(r"task id ([0-9a-f]{64})", published.stdout).group(1)
        shown = fedcoin("task", *node, "--task-id", task_id, cwd=tmp_path)
        assert shown.returncode == 0 and "0/2 rounds" in shown.stdout
        missing = fedcoin("task", *node, "--task-id", "00" * 32, cwd=tmp_path)
        assert missing.returncode == 1 and "no task" in missing.stderr
        bonded = fedcoin("bond", *node, "--key", "alice.pem", "--amount", "10", "--wait",
                         cwd=tmp_path)  # fmt: skip
        assert bonded.returncode == 0, bonded.stderr
        alice_after = fedcoin("balance", *node, "--key", "alice.pem", cwd=tmp_path).stdout
        assert alice_after.strip() == f"{alice}: 67.500000 FC (nonce 3)"  # 100 - 12.5 - 10 - 10
        unbonded = fedcoin("unbond", *node, "--key", "alice.pem", "--amount", "4", "--wait",
                           cwd=tmp_path)  # fmt: skip
        assert unbonded.returncode == 0, unbonded.stderr
        shown = fedcoin("validators", *node, cwd=tmp_path)
        assert shown.returncode == 0 and f"unbonding {alice}  4.000000 FC" in shown.stdout
        over = fedcoin("unbond", *node, "--key", "alice.pem", "--amount", "7", cwd=tmp_path)
        assert over.returncode == 1 and "rule InsufficientBond" in over.stderr
    unreachable = fedcoin(
        "balance", "--node", "http://127.0.0.1:9", "--key", "bob.pem", cwd=tmp_path
    )
    assert unreachable.returncode == 1 and "cannot reach the node" in unreachable.stderr


@pytest.mark.slow
def test_full_and_light_nodes_end_to_end(tmp_path: Path) -> None:
    made = fedcoin("keygen", "--out", "server.pem", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    server = made.stdout.strip()
    assert re.fullmatch(r"fc[0-9a-f]{40}", server)
    gen = make_genesis_file(tmp_path, "--alloc", f"{server}=1000", "--min-block-interval-ms", "300")
    assert gen.returncode == 0, gen.stderr
    with running_node(tmp_path) as address:
        light = fedcoin(
            "light", "--node", f"http://{address}", "--key", "server.pem",
            "--rounds", "1", "--clients", "3", "--epochs", "1", "--data-dir", "light",
            cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert light.returncode == 0, light.stderr[-2000:]
        assert re.search(r"round 1: accuracy [0-9.]+, SV \[", light.stdout)


def one_clear_line(result: subprocess.CompletedProcess[str], command: str, *words: str) -> None:
    """rc != 0, and stderr is exactly one line naming the command and the problem."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fedcoin {command}: "), lines[0]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def chain_files(tmp_path: Path) -> Path:
    assert fedcoin("keygen", "--out", "k.pem", cwd=tmp_path).returncode == 0
    made = fedcoin("genesis", "--out", "g.json", "--validator", "k.pem=1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return tmp_path


def test_genesis_without_a_valid_validator_is_one_clear_line(tmp_path: Path) -> None:
    one_clear_line(fedcoin("genesis", "--out", "g.json", cwd=tmp_path), "genesis", "validator")
    fedcoin("keygen", "--out", "k.pem", cwd=tmp_path)
    small = fedcoin("genesis", "--out", "g.json", "--validator", "k.pem=0.5", cwd=tmp_path)
    one_clear_line(small, "genesis", "min_bond")
    odd = fedcoin("genesis", "--out", "g.json", "--validator", "nothing-here=1", cwd=tmp_path)
    one_clear_line(odd, "genesis", "no key file")
    assert not (tmp_path / "g.json").exists()


def test_genesis_sets_every_chain_parameter_posap_windows_included(tmp_path: Path) -> None:
    fedcoin("keygen", "--out", "k.pem", cwd=tmp_path)
    made = fedcoin("genesis", "--out", "g.json", "--validator", "k.pem=1", "--max-open-sv", "2",
                   "--fraud-blocks", "7", "--fraud-deposit", "5", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    params = json.loads((tmp_path / "g.json").read_text())["params"]
    assert (params["max_open_sv"], params["fraud_blocks"], params["fraud_deposit"]) == (2, 7, 5)
    free = fedcoin("genesis", "--out", "h.json", "--validator", "k.pem=1", "--fraud-deposit", "0",
                   cwd=tmp_path)  # fmt: skip
    one_clear_line(free, "genesis", "fraud_deposit")
    assert not (tmp_path / "h.json").exists()


def full(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fedcoin("full", "--data-dir", "d", "--listen", "127.0.0.1:0", *args, cwd=tmp_path,
                   timeout=60)  # fmt: skip


def test_port_in_use_is_one_clear_line(chain_files: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = fedcoin("full", "--data-dir", "d", "--genesis", "g.json", "--key", "k.pem",
                         "--listen", f"127.0.0.1:{port}", cwd=chain_files, timeout=60)  # fmt: skip
    one_clear_line(result, "full", "cannot listen", str(port))


def test_ipfs_daemon_down_is_one_clear_line(chain_files: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    api = f"/ip4/127.0.0.1/tcp/{port}"
    result = full(chain_files, "--genesis", "g.json", "--key", "k.pem", "--ipfs-api", api)
    one_clear_line(result, "full", "IPFS", api)


@pytest.mark.parametrize(
    ("flag", "content", "words"),
    [
        ("--key", "not a key\n", ("k-bad",)),
        ("--key", None, ("k-bad",)),  # a folder: unreadable as a file
        ("--genesis", "{corrupt", ("k-bad", "genesis")),
        ("--genesis", None, ("k-bad", "genesis")),
    ],
    ids=["corrupt-key", "unreadable-key", "corrupt-genesis", "unreadable-genesis"],
)
def test_bad_key_or_genesis_file_is_one_clear_line(chain_files: Path, flag, content, words) -> None:
    bad = chain_files / "k-bad"
    if content is None:
        bad.mkdir()
    else:
        bad.write_text(content)
    others = ["--genesis", "g.json"] if flag == "--key" else ["--key", "k.pem"]
    one_clear_line(full(chain_files, flag, "k-bad", *others), "full", *words)


@pytest.mark.parametrize("command", ["keygen", "genesis"])
def test_output_that_cannot_be_written_is_one_clear_line(tmp_path: Path, command: str) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    (tmp_path / "a-file").write_text("")
    # a folder the user cannot write (root can, so also a path under a regular file)
    targets = [locked / "out", tmp_path / "a-file" / "out"] if os.getuid() else []
    targets.append(tmp_path / "a-file" / "out")
    extra: list[str] = []
    if command == "genesis":
        fedcoin("keygen", "--out", "k.pem", cwd=tmp_path)
        extra = ["--validator", "k.pem=1"]
    for target in targets:
        one_clear_line(
            fedcoin(command, "--out", str(target), *extra, cwd=tmp_path), command, "cannot write"
        )


def test_simulation_that_cannot_connect_is_one_clear_line(tmp_path: Path) -> None:
    # Four miners fail the same way thirty-two do (each waits for a peer), in a fraction of the time
    result = fedcoin("simulate", "--miners", "4", "--rounds", "1", "--connect-timeout", "0.001",
                     "--out", "out", cwd=tmp_path, timeout=300)  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.startswith("fedcoin simulate:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(lines) == 1 and "had no peer" in lines[0], result.stderr


def test_advertise_flag_and_env_are_validated_and_the_flag_wins(chain_files: Path) -> None:
    bad = full(chain_files, "--genesis", "g.json", "--key", "k.pem", "--advertise", "0.0.0.0:1")
    assert bad.returncode == 2 and "dialable HOST:PORT" in bad.stderr
    env_bad = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "full", "--data-dir", "d", "--genesis", "g.json",
         "--key", "k.pem", "--listen", "127.0.0.1:0"],
        cwd=chain_files, env={**ENV, "FEDCOIN_ADVERTISE": "nohost"}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    one_clear_line(env_bad, "full", "FEDCOIN_ADVERTISE")
