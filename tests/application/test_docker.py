"""The Docker image and the compose file, built and run on a real engine.

The image is built from the Dockerfile (on the official base where the engine has it, else on
a debootstrap stand-in, see ``tests/docker_support.py``); then each role's ``--help``, the
Dockerfile's own header example, a bind mount, a network of two full nodes and an FL server in
containers (a task's rounds settle, both nodes agree on the head, SIGTERM stops them with exit
0, a restarted node resumes at its height), and ``docker-compose up`` of the compose file. Where
no engine is reachable and none can be started, every engine test skips with a loud reason.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_support import Engine, NoEngine, base_image, engine, ensure_packages

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
ROLES = ("full", "light", "keygen", "genesis", "balance", "transfer", "task")


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
    steps = instructions()
    words = [word for word, _ in steps]
    # The base is a build argument defaulting to the official image.
    assert ("ARG", "BASE=python:3.11-slim") in steps
    assert "VOLUME" not in words, "an anonymous volume per container"
    assert all(rest not in ("root", "0") for word, rest in steps if word == "USER")
    assert [rest for word, rest in steps if word == "FROM"][-1].endswith("AS fedcoin")


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*", "everything is excluded by default"
    assert {"!fedcoin/", "!pyproject.toml", "!README.md"} <= set(lines)


# --- on an engine -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eng() -> Iterator[Engine]:
    try:
        with engine() as found:
            yield found
    except NoEngine as exc:
        message = f"DOCKER TESTS NOT RUN: {exc}"
        warnings.warn(message, pytest.PytestWarning, stacklevel=1)
        print(f"\n*** {message} ***", file=sys.stderr)
        pytest.skip(message)


@pytest.fixture(scope="module")
def image(
    eng: Engine, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # The base image is cached across runs in pytest's cache; without the cache plugin
    # (-p no:cacheprovider) it is built in a temporary folder instead.
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("fedcoin-docker") if cache else tmp_path_factory.mktemp("docker")
    base = base_image(eng, Path(folder))
    tag = f"fedcoin-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    build = ("build", "--network", "host", "--build-arg", f"BASE={base}")
    eng.run(*build, "-t", tag, str(REPO), timeout=900)
    eng.run(*build, "--target", "validator", "-t", f"{tag}-validator", str(REPO), timeout=600)
    print(f"\nimage {tag} built from {base} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    yield tag
    eng.run("image", "rm", "-f", tag, f"{tag}-validator", check=False)


@pytest.fixture
def names(eng: Engine) -> Iterator[Callable[[str], str]]:
    """Unique names for containers and volumes, all removed after the test."""
    made: list[str] = []

    def name(prefix: str) -> str:
        made.append(f"fctest-{prefix}-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield name
    eng.run("rm", "-f", *made, check=False, timeout=120)
    eng.run("volume", "rm", "-f", *made, check=False, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    """Poll ``check`` until it returns a truthy value (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.5)  # polling a container from outside: there is no event to wait on
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def exit_code(eng: Engine, container: str) -> int:
    return int(eng.run("inspect", "--format", "{{.State.ExitCode}}", container).stdout)


@pytest.mark.slow
def test_every_role_answers_help(eng: Engine, image: str) -> None:
    for role in ROLES:
        shown = eng.run("run", "--rm", image, role, "--help")
        assert f"usage: fedcoin {role}" in shown.stdout
    # The validator target serves every role but the FL server, without TensorFlow.
    slim = f"{image}-validator"
    for role in ("full", "keygen", "genesis", "balance"):
        assert f"usage: fedcoin {role}" in eng.run("run", "--rm", slim, role, "--help").stdout
    probe = ("run", "--rm", "--entrypoint", "python", slim, "-c", "import tensorflow")
    assert eng.run(*probe, check=False).returncode != 0
    sizes = [
        int(eng.run("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        for tag in (image, slim)
    ]
    assert sizes[1] < sizes[0] / 2, sizes


@pytest.mark.slow
def test_dockerfile_header_example_works(
    eng: Engine, image: str, names: Callable[[str], str]
) -> None:
    lines = [
        line.lstrip("# ").strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("#   docker run")
    ]
    assert len(lines) == 3, lines  # a validator key, a genesis that bonds it, the node
    volume, container, port = names("vol"), names("node"), free_port()
    for line in lines:
        words = shlex.split(
            line.replace("fedcoin:/data", f"{volume}:/data")
            .replace("--name fedcoin", f"--name {container}")
            .replace("127.0.0.1:8700:", f"127.0.0.1:{port}:")
        )
        assert words[:2] == ["docker", "run"] and "fedcoin" in words
        words[words.index("fedcoin")] = image
        eng.run(*words[1:])
    status = wait_for("the node's API", lambda: get_json(f"http://127.0.0.1:{port}/status"))
    assert status["height"] == 0
    eng.run("stop", "--time", "30", container)
    assert exit_code(eng, container) == 0


@pytest.mark.slow
def test_bind_mount_as_documented(
    eng: Engine, image: str, names: Callable[[str], str], tmp_path: Path
) -> None:
    folder = tmp_path / "net"
    folder.mkdir(mode=0o755)
    mount = f"{folder}:/data/shared"
    # As the image's own user, a host folder it cannot write: one clear line, no traceback.
    refused = eng.run(
        "run", "--rm", "-v", mount, image, "keygen", "--out", "/data/shared/a.pem", check=False
    )
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr, refused.stderr
    complaint = [line for line in refused.stderr.splitlines() if "WARNING" not in line]
    assert len(complaint) == 1 and "/data/shared" in complaint[0], refused.stderr
    # As DEPLOY.md says: --user "$(id -u):$(id -g)"
    user = f"{folder.stat().st_uid}:{folder.stat().st_gid}"
    made = eng.run(
        "run", "--rm", "--user", user, "-v", mount, image, "keygen", "--out", "/data/shared/a.pem"
    )
    assert made.stdout.startswith("fc")
    assert (folder / "a.pem").stat().st_uid == folder.stat().st_uid


@pytest.mark.slow
def test_two_full_nodes_and_an_fl_server_in_containers(
    eng: Engine, image: str, names: Callable[[str], str]
) -> None:
    shared, data0, data1 = names("shared"), names("data0"), names("data1")
    node0, node1, server = names("node0"), names("node1"), names("server")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]

    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return eng.run("run", "--network", "host", *args, **kw)

    # Keys and a genesis in a named volume.
    vol = ("-v", f"{shared}:/data/shared")
    for key in ("node0", "node1"):
        run("--rm", *vol, image, "keygen", "--out", f"/data/shared/{key}.pem")
    funded = run("--rm", *vol, image, "keygen", "--out", "/data/shared/server.pem").stdout.strip()
    run("--rm", *vol, image, "genesis", "--out", "/data/shared/genesis.json",
        "--chain-id", "docker-test", "--alloc", f"{funded}=1000",
        "--validator", "/data/shared/node0.pem=1",
        "--validator", "/data/shared/node1.pem=1")  # fmt: skip

    def start_node(i: int, container: str, data: str) -> None:
        args = ["--listen", f"127.0.0.1:{ports[i]}", "--advertise", f"127.0.0.1:{ports[i]}"]
        if i == 1:
            args += ["--bootstrap", f"127.0.0.1:{ports[0]}"]
        run("-d", "--name", container, *vol, "-v", f"{data}:/data/node", image, "full",
            "--data-dir", "/data/node", "--genesis", "/data/shared/genesis.json",
            "--key", f"/data/shared/node{i}.pem", *args)  # fmt: skip

    start_node(0, node0, data0)
    start_node(1, node1, data1)
    for url in urls:
        wait_for(f"{url}/status", lambda url=url: get_json(f"{url}/status"))
    wait_for("the nodes to peer", lambda: get_json(f"{urls[1]}/status")["peers"])
    with urllib.request.urlopen(f"{urls[0]}/", timeout=5) as page:  # the explorer ships too
        assert "/explorer/explorer.js" in page.read().decode()

    # The FL server publishes a task and runs its rounds until they settle.
    run("-d", "--name", server, *vol, image, "light", "--node", urls[0],
        "--key", "/data/shared/server.pem", "--rounds", "2", "--clients", "3",
        "--free-riders", "1")  # fmt: skip
    done = eng.run("wait", server, timeout=300)
    logs = eng.run("logs", server).stderr
    assert done.stdout.strip() == "0", logs[-3000:]
    assert "tensorflow" not in logs.lower() and "onednn" not in logs.lower(), logs[-3000:]
    tasks = get_json(f"{urls[0]}/tasks")
    assert len(tasks) == 1 and tasks[0]["rounds_done"] == 2
    rounds = get_json(f"{urls[0]}/tasks/{tasks[0]['id']}")["rounds"]
    assert [r["settled"] for r in rounds] == [True, True]

    # Both nodes converge on the same head.
    def same_head() -> bool:
        heads = [get_json(f"{url}/status") for url in urls]
        return (
            heads[0]["head"] == heads[1]["head"]
            and heads[0]["height"] >= rounds[-1]["settled_height"]
        )

    wait_for("both nodes on one head", same_head)

    # SIGTERM stops a node cleanly; a restarted node resumes at its height.
    height = get_json(f"{urls[1]}/status")["height"]
    eng.run("stop", "--time", "30", node0, node1)
    assert (exit_code(eng, node0), exit_code(eng, node1)) == (0, 0)
    eng.run("start", node1)
    resumed = wait_for("the restarted node", lambda: get_json(f"{urls[1]}/status"))
    assert resumed["height"] >= height
    assert get_json(f"{urls[1]}/blocks/{height}")["height"] == height
    eng.run("stop", "--time", "30", node1)
    assert exit_code(eng, node1) == 0


# --- compose ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose_ready() -> None:
    try:
        ensure_packages(("docker-compose", "docker-compose"))
    except NoEngine as exc:
        message = f"COMPOSE TESTS NOT RUN: {exc}"
        warnings.warn(message, pytest.PytestWarning, stacklevel=1)
        pytest.skip(message)


def test_compose_file_validates_and_builds_one_image(compose_ready: None, tmp_path: Path) -> None:
    done = subprocess.run(
        ["docker-compose", "--file", str(COMPOSE), "config"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    services = yaml_services(done.stdout)
    assert [name for name, text in services.items() if "build:" in text] == ["init"]
    images = {name: re.search(r"image: (\S+)", text) for name, text in services.items()}
    assert len({m.group(1) for m in images.values() if m}) == 1, images
    published = {
        name: re.findall(r"^ +- (\S*:\d+:\d+)(?:/tcp)?$", text, re.MULTILINE)
        for name, text in services.items()
    }
    assert published["validator0"] and published["validator1"], published
    for name, entries in published.items():
        assert all(entry.startswith("127.0.0.1:") for entry in entries), (name, entries)


def yaml_services(config: str) -> dict[str, str]:
    """The text of each service in ``docker-compose config`` output (no YAML library here)."""
    body = ("\n" + config).split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    services: dict[str, str] = {}
    name = ""
    for line in body.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name = line.strip().rstrip(":")
            services[name] = ""
        elif name:
            services[name] += line + "\n"
    return services


@pytest.mark.slow
def test_compose_network_runs_and_the_fl_server_resumes(
    eng: Engine, image: str, compose_ready: None
) -> None:
    project = f"fctest{uuid.uuid4().hex[:8]}"
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    env = {"FEDCOIN_IMAGE": image, "FEDCOIN_PORT0": str(ports[0]), "FEDCOIN_PORT1": str(ports[1])}
    up = Engine(eng.docker, {**eng.env, **env}, eng.private)
    try:
        up.compose(REPO, project, "up", "-d", "--no-build", timeout=300)
        # Validators find each other and agree; the FL server publishes one task.
        wait_for("validator0 to peer", lambda: get_json(f"{urls[0]}/status")["peers"])
        wait_for("validator1 to peer", lambda: get_json(f"{urls[1]}/status")["peers"])
        first = wait_for(
            "a settled round",
            lambda: [t for t in get_json(f"{urls[0]}/tasks") if t["rounds_done"] >= 1],
            timeout=240,
        )
        # A stopped and restarted FL server resumes its saved task: no second task, no second
        # escrow (whether the stop came mid-task or after its last round, it prints "resuming").
        up.compose(REPO, project, "stop", "fl-server", timeout=120)
        up.compose(REPO, project, "start", "fl-server", timeout=120)
        server = up.compose(REPO, project, "ps", "-q", "fl-server").stdout.split()[0]
        wait_for("the FL server to finish", lambda: not running(up, server), timeout=300)
        assert exit_code(up, server) == 0
        logs = up.compose(REPO, project, "logs", "--no-color", "fl-server").stdout
        assert logs.count("published task") == 1, logs[-3000:]
        assert f"resuming task {first[0]['id']}" in logs, logs[-3000:]
        done = wait_for(
            "the task's last round on validator1",
            lambda: [t for t in get_json(f"{urls[1]}/tasks") if t["status"] == "done"],
        )
        tasks = get_json(f"{urls[0]}/tasks")
        assert [t["id"] for t in tasks] == [first[0]["id"]] == [done[0]["id"]]
    finally:
        up.compose(REPO, project, "down", "--volumes", "--remove-orphans", check=False)


def running(eng: Engine, container: str) -> bool:
    return eng.run("inspect", "--format", "{{.State.Running}}", container).stdout.strip() == "true"
