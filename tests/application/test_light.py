"""Bring your own model and data, end to end in subprocesses: a small Conv2D model and an .npz
→ ``bundle`` → ``publish-task`` → ``light --task-id``, killed after one round and restarted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.application.test_cli import ENV, REPO, fedcoin, make_genesis_file, running_node

keras = pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


def write_model_and_data(root: Path) -> None:
    from sklearn.datasets import load_digits

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.save(root / "cnn.keras")
    digits = load_digits()
    x, y = (digits.images[:, :, :, None] / 16).astype(np.float32), digits.target
    np.savez(root / "train.npz", x=x[:600], y=y[:600])
    np.savez(root / "val.npz", x=x[-300:], y=y[-300:])
    np.savez(root / "flat.npz", x=x[:50].reshape(50, 64), y=y[:50])


@pytest.mark.slow
def test_own_conv2d_model_and_data_through_bundle_publish_and_a_restarted_light(tmp_path):
    write_model_and_data(tmp_path)
    made = fedcoin("bundle", "--model", "cnn.keras", "--data", "val.npz", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "cnn.fcm").exists() and (tmp_path / "val.fcd").exists()
    publisher = fedcoin("keygen", "--out", "publisher.pem", cwd=tmp_path).stdout.strip()
    server = fedcoin("keygen", "--out", "server.pem", cwd=tmp_path).stdout.strip()
    gen = make_genesis_file(
        tmp_path, "--alloc", f"{publisher}=100", "--min-block-interval-ms", "200"
    )
    assert gen.returncode == 0, gen.stderr
    with running_node(tmp_path) as address:
        node = ["--node", f"http://{address}"]
        published = fedcoin("publish-task", *node, "--key", "publisher.pem", "--server", server,
                            "--bundle", "cnn.fcm", "--validation", "val.fcd", "--rounds", "2",
                            "--price", "5", "--max-clients", "3", cwd=tmp_path)  # fmt: skip
        assert published.returncode == 0, published.stderr
        task_id = re.search(r"task id ([0-9a-f]{64})", published.stdout).group(1)
        base = ["light", *node, "--key", "server.pem", "--clients", "3", "--noisy", "1",
                "--epochs", "1", "--timeout", "120"]  # fmt: skip
        light = [*base, "--data", "train.npz", "--data-dir", "light"]

        # data that does not fit the task's model: a clear error, nothing submitted
        wrong = fedcoin(*base, "--data", "flat.npz", "--task-id", task_id, "--data-dir", "wrong",
                        cwd=tmp_path, timeout=180)  # fmt: skip
        assert wrong.returncode == 1 and "inputs of shape (8, 8, 1)" in wrong.stderr

        # the first run trains the task's own Conv2D model; killed once round 1 has settled
        first = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), *light, "--task-id", task_id],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            lines = []
            for line in first.stdout:
                lines.append(line)
                if line.startswith("round 1"):
                    break
        finally:
            first.kill()
            first.wait(timeout=30)
        assert re.match(r"round 1: accuracy [0-9.]+, SV \[.*\], paid \[[0-9., ]+\] FC", lines[-1])
        assert (tmp_path / "light" / "task-id").read_text().strip() == task_id

        # restarted without --task-id: it resumes the saved task and finishes round 2
        second = fedcoin(*light, cwd=tmp_path, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"resuming task {task_id}" in second.stdout
        assert "round 1:" not in second.stdout and "round 2:" in second.stdout
        assert f"task {task_id}: report and plots written to" in second.stdout
        for kind in ("honest", "noisy"):
            assert kind in second.stdout
        report = json.loads((tmp_path / "light" / "report" / "report.json").read_text())
        assert report["task_id"] == task_id and [r["round"] for r in report["rounds"]] == [2]
        assert [c["kind"] for c in report["clients"]] == ["honest", "honest", "noisy"]
        for plot in ("sv_per_round.png", "cumulative_payouts.png", "accuracy.png"):
            assert (tmp_path / "light" / "report" / plot).stat().st_size > 0
        shown = fedcoin("task", *node, "--task-id", task_id, cwd=tmp_path)
        assert shown.returncode == 0 and "2/2 rounds" in shown.stdout
        paid = sum(c["total_paid"] for c in report["clients"])
        balance = fedcoin("balance", *node, "--address", report["clients"][0]["address"],
                          cwd=tmp_path)  # fmt: skip
        assert balance.returncode == 0
        assert paid > 0


def test_transfer_wait_gives_up_when_no_block_comes(tmp_path):
    alice = fedcoin("keygen", "--out", "alice.pem", cwd=tmp_path).stdout.strip()
    bob = fedcoin("keygen", "--out", "bob.pem", cwd=tmp_path).stdout.strip()
    gen = make_genesis_file(tmp_path, "--alloc", f"{alice}=10")
    assert gen.returncode == 0, gen.stderr
    node = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "full", "--data-dir", "n", "--genesis",
         "genesis.json", "--listen", "127.0.0.1:0", "--no-mine"],
        cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = next(
            m.group(1)
            for line in node.stderr
            if (m := re.search(r"serving on (127\.0\.0\.1:\d+)", line))
        )
        sent = fedcoin("transfer", "--node", f"http://{address}", "--key", "alice.pem",
                       "--to", bob, "--amount", "1", "--wait", "--timeout", "2",
                       cwd=tmp_path)  # fmt: skip
        assert sent.returncode == 1
        assert "not included in a block after 2 s" in sent.stderr
    finally:
        node.terminate()
        node.communicate(timeout=30)


def test_max_samples_option_defaults_to_the_spec_default(tmp_path):
    import argparse

    from fedcoin.application.light import add_light_arguments
    from fedcoin.data.tx import DEFAULT_MAX_SAMPLES, TaskSpec

    p = argparse.ArgumentParser()
    add_light_arguments(p, tmp_path, "http://127.0.0.1:9", int)
    assert p.parse_args([]).max_samples == DEFAULT_MAX_SAMPLES
    assert TaskSpec.__dataclass_fields__["max_samples"].default == DEFAULT_MAX_SAMPLES
    assert p.parse_args(["--max-samples", "500"]).max_samples == 500
