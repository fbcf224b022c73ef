"""A Docker engine and a base image for the tests that build and run FedCoin's image.

``engine()`` uses a reachable engine (``DOCKER_HOST`` or the default socket) when there is one.
Otherwise, when it can — running as root on Debian with apt — it installs ``docker.io`` and
``debootstrap`` and starts a private ``dockerd`` in a temporary folder: its own socket, data
root and exec root, ``--iptables=false --ip-forward=false --ip-masq=false`` so the host's
firewall is left alone, and its own bridge and address pool so it collides with no other
engine. On exit it stops that daemon and removes its containers, folder and bridge. When neither
works it raises ``NoEngine`` with the reason, which the tests turn into a loud skip.

``base_image()`` gives the image the Dockerfile builds ``FROM``: ``python:3.11-slim`` when the
engine has it or can pull it, else a stand-in made with debootstrap (Debian bookworm's Python
3.11 in a venv at ``/usr/local``, as in the official image), cached as a tarball between runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

OFFICIAL_BASE = "python:3.11-slim"
STAND_IN_BASE = "fedcoin-test-base:bookworm"
APT_PACKAGES = ("docker.io", "debootstrap")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


class NoEngine(Exception):
    """No Docker engine is reachable and none can be started here; the message says why."""


@dataclass(frozen=True)
class Engine:
    """A Docker engine to talk to: the client binary and the environment pointing at it."""

    docker: str
    env: dict[str, str]
    private: bool  # started by these tests (so everything on it is theirs)

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.docker, *args],
            env=self.env,
            capture_output=True,
            text=input is None,
            check=False,
            timeout=timeout,
            input=input,
        )
        if check and done.returncode != 0:
            command = " ".join(args)
            raise AssertionError(f"docker {command} exited {done.returncode}:\n{done.stderr}")
        return done  # type: ignore[return-value]

    def compose(
        self, project: Path, name: str, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        compose = shutil.which("docker-compose")
        if compose is None:
            raise NoEngine("docker-compose (Debian's package) is not installed")
        done = subprocess.run(
            [compose, "--project-name", name, "--project-directory", str(project), *args],
            env=self.env, cwd=project, capture_output=True, text=True, check=False,
            timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {done.stderr[-3000:]}")
        return done


def _reachable(docker: str, env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env=env, capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _apt_install(packages: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q"]
    done = subprocess.run(
        [*command, "--no-install-recommends", *packages],
        env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise NoEngine(f"apt-get install {' '.join(packages)} failed: {done.stderr[-500:]}")


def can_provision() -> str | None:
    """Why this machine cannot start its own engine, or None if it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "not running as root, so no private dockerd can be started"
    if shutil.which("apt-get") is None:
        return "no apt-get to install docker.io and debootstrap"
    return None


def ensure_packages(*commands: tuple[str, str]) -> None:
    """Install the apt package of each (command, package) pair whose command is missing."""
    missing = [package for command, package in commands if shutil.which(command) is None]
    if missing:
        reason = can_provision()
        if reason:
            raise NoEngine(f"{', '.join(missing)} missing and cannot be installed: {reason}")
        _apt_install(missing)


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """A reachable Docker engine, started privately for the duration when none is running."""
    docker = shutil.which("docker")
    if docker is not None and _reachable(docker, dict(os.environ)):
        yield Engine(docker, dict(os.environ), private=False)
        return
    reason = can_provision()
    if reason:
        raise NoEngine(f"no Docker engine is reachable, and {reason}")
    ensure_packages(("dockerd", "docker.io"), ("debootstrap", "debootstrap"))
    docker = shutil.which("docker")
    dockerd = shutil.which("dockerd")
    if docker is None or dockerd is None:
        raise NoEngine("docker.io is installed but docker/dockerd are not on PATH")
    # Short paths: a unix socket path must fit in 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="fcd-"))
    # Its own bridge and address pool, so two test runs (or a host dockerd) never collide.
    octet = 100 + os.getpid() % 150
    bridge = f"fcbr{os.getpid()}"[:15]
    for step in (
        ["ip", "link", "add", bridge, "type", "bridge"],
        ["ip", "addr", "add", f"10.{octet}.0.1/24", "dev", bridge],
        ["ip", "link", "set", bridge, "up"],
    ):
        made = subprocess.run(step, capture_output=True, text=True, check=False)
        if made.returncode != 0:
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
            shutil.rmtree(folder, ignore_errors=True)
            raise NoEngine(f"cannot make a bridge for the private dockerd: {made.stderr}")
    sock = folder / "docker.sock"
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    log = (folder / "dockerd.log").open("wb")
    daemon = subprocess.Popen(
        [
            dockerd, "--host", f"unix://{sock}", "--data-root", str(folder / "root"),
            "--exec-root", str(folder / "exec"), "--pidfile", str(folder / "dockerd.pid"),
            "--storage-driver", "overlay2", "--iptables=false", "--ip-forward=false",
            "--ip-masq=false", "--bridge", bridge,
            "--default-address-pool", f"base=10.{octet}.128.0/17,size=24",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _reachable(docker, env):
            if daemon.poll() is not None or time.monotonic() > deadline:
                text = (folder / "dockerd.log").read_text(errors="replace")[-2000:]
                raise NoEngine(f"the private dockerd did not start: {text}")
            time.sleep(0.2)
        yield Engine(docker, env, private=True)
    finally:
        _stop_daemon(Engine(docker, env, private=True), daemon)
        log.close()
        _remove_tree(folder)
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def _stop_daemon(eng: Engine, daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        with contextlib.suppress(Exception):
            running = eng.run("ps", "-aq", check=False, timeout=30).stdout.split()
            if running:
                eng.run("rm", "-f", *running, check=False, timeout=120)
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)


def _remove_tree(folder: Path) -> None:
    """Remove the daemon's folder; overlay mounts left behind are unmounted first."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        mounts = Path("/proc/mounts").read_text().splitlines()
        inside = [line.split()[1] for line in mounts if line.split()[1].startswith(str(folder))]
        for point in sorted(inside, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def _has_image(eng: Engine, name: str) -> bool:
    return eng.run("image", "inspect", name, check=False, timeout=60).returncode == 0


def base_image(eng: Engine, cache: Path) -> str:
    """The base to build FROM: the official image when available, else the stand-in."""
    if _has_image(eng, OFFICIAL_BASE):
        return OFFICIAL_BASE
    if _has_image(eng, STAND_IN_BASE):
        return STAND_IN_BASE
    if eng.run("pull", OFFICIAL_BASE, check=False, timeout=120).returncode == 0:
        return OFFICIAL_BASE
    tarball = cache / "base-bookworm.tar"
    if not tarball.exists():
        _debootstrap_base(tarball)
    with tarball.open("rb") as f:
        done = subprocess.run(
            [
                eng.docker, "import",
                "--change", "ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", "ENV LANG=C.UTF-8", "-", STAND_IN_BASE,
            ],
            env=eng.env, stdin=f, capture_output=True, check=False, timeout=300,
        )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"docker import failed: {done.stderr.decode()[-2000:]}")
    return STAND_IN_BASE


def _debootstrap_base(tarball: Path) -> None:
    """Debian bookworm with Python 3.11 and a venv at /usr/local, packed as ``tarball``."""
    ensure_packages(("debootstrap", "debootstrap"))
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fcbase-") as tmp:
        root = Path(tmp) / "root"
        include = "python3,python3-venv,ca-certificates,netbase,tzdata"
        steps = [
            ["debootstrap", "--variant=minbase", f"--include={include}", "bookworm", str(root)],
            ["chroot", str(root), "python3", "-m", "venv", "/usr/local"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
            if done.returncode != 0:
                raise NoEngine(f"{step[0]} failed: {(done.stdout + done.stderr)[-1500:]}")
        # Trust what the host trusts beyond the public roots (e.g. a proxy's CA).
        if HOST_CA_DIR.is_dir():
            target = root / HOST_CA_DIR.relative_to("/")
            shutil.copytree(HOST_CA_DIR, target, dirs_exist_ok=True)
            subprocess.run(
                ["chroot", str(root), "update-ca-certificates"], capture_output=True, check=False
            )
        (root / "etc" / "resolv.conf").write_text("")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*.deb"):
                item.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
