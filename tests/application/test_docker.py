"""The Docker image, without a Docker engine (none runs here): the Dockerfile passes hadolint,
and its install and entrypoint steps, replayed in a fresh virtual environment, give a working
``fedcoin`` console script for both roles."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_shape() -> None:
    steps = dict(instructions())
    assert steps["FROM"] == "python:3.11-slim"
    assert steps["USER"] not in ("root", "0")
    assert json.loads(steps["VOLUME"]) == ["/data"]
    assert json.loads(steps["ENTRYPOINT"]) == ["fedcoin"]
    assert json.loads(steps["CMD"]) == ["full"]


@pytest.mark.slow
def test_image_install_and_entrypoint_in_a_fresh_venv(tmp_path: Path) -> None:
    steps = instructions()
    env_line = next(rest for word, rest in steps if word == "ENV")
    image_env = dict(pair.split("=", 1) for pair in shlex.split(env_line))
    # Replay the image's COPY steps into a work dir, then its pip install in a fresh venv.
    work = tmp_path / "opt"
    work.mkdir()
    for word, rest in steps:
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    shutil.copytree(
                        src, work / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(src, work / source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = next(rest for word, rest in steps if word == "RUN" and "pip install" in rest)
    command = re.sub(r"^pip ", f"{venv}/bin/python -m pip ", install)
    env = {**os.environ, **image_env, "FEDCOIN_HOME": str(tmp_path / "data")}
    env.pop("PIP_NO_CACHE_DIR", None)  # let the test reuse downloaded wheels
    command = command.replace("--no-cache-dir ", "")
    done = subprocess.run(
        command, shell=True, cwd=work, env=env, capture_output=True, text=True, check=False
    )  # noqa: S602
    assert done.returncode == 0, done.stderr[-3000:]
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    script = str(venv / "bin" / entrypoint[0])
    for role in ("full", "light"):
        shown = subprocess.run(
            [script, role, "--help"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"usage: fedcoin {role}" in shown.stdout
    # 'docker run fedcoin' with an empty data volume: a clear message, not a traceback
    bare = subprocess.run(
        [script, *json.loads(dict(steps)["CMD"])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert bare.returncode == 1
    assert "genesis file not found" in bare.stderr and "Traceback" not in bare.stderr
