"""Helpers for the deployment tests: build the gateway image, run it as a container, reach it.

The image is built from ``deploy/docker/Dockerfile`` exactly as a user builds it, with two
differences forced by this machine (no registry answers): ``BASE`` is the local
``sshgw-test/python:bookworm`` (Debian's python3, see ``tests/images/build.sh``), and the wheels of
sshgw and its dependencies are made on the host and put in the build context, which the
Dockerfile then installs without an index (its documented offline path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.e2e.helpers import docker, no_traceback, wait_until
from tests.support import openssh

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

PYTHON_BASE = "sshgw-test/python:bookworm"
POSTGRES_IMAGE = "sshgw-test/postgres:15"
PROMETHEUS_IMAGE = "sshgw-test/prometheus:2"

# Containers made here carry the labels of tests/conftest.py, so scripts/cleanup.sh and the
# next run remove them when this run dies before its own cleanup.
TEST_LABEL = "sshgw-test"
OWNER_LABEL = "sshgw-test.owner"
OWNER = f"{os.uname().nodename}:{os.getpid()}"

# What the Dockerfile's build context needs (see its COPY lines).
CONTEXT_FILES = ("pyproject.toml", "README.md")
CONTEXT_DIRS = ("gateway", "deploy/docker")


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 300,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (text output captured); with ``check`` a failure fails the test."""
    res = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        check=False,
    )
    if check and res.returncode != 0:
        pytest.fail(
            f"{' '.join(str(a) for a in argv)} exited {res.returncode}:\n"
            f"{(res.stderr or res.stdout).strip()[-4000:]}",
            pytrace=False,
        )
    return res


def labels() -> list[str]:
    return ["--label", f"{TEST_LABEL}=1", "--label", f"{OWNER_LABEL}={OWNER}"]


def docker_socket(docker_host: str) -> Path:
    """The engine's unix socket (the one the image is given); skip for a TCP engine."""
    if not docker_host.startswith("unix://"):
        pytest.skip(f"the image tests mount the engine's unix socket; DOCKER_HOST is {docker_host}")
    return Path(docker_host.removeprefix("unix://"))


# --- the image -----------------------------------------------------------------------------


def base_python(base: str) -> str:
    """``X.Y`` of the base image's python3."""
    res = run(
        [
            "docker",
            "run",
            "--rm",
            base,
            "python3",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ],
        timeout=120,
    )
    return res.stdout.strip()


def build_context(dest: Path, python_version: str) -> Path:
    """A build context like the top of the checkout, plus the wheels for an offline build."""
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, dest / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(
            REPO / name,
            dest / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wheels"),
        )
    wheels = dest / "deploy" / "docker" / "wheels"
    wheels.mkdir()
    # sshgw's own wheel, built from the copy (nothing is written into the checkout) ...
    src = dest.parent / "src"
    shutil.copytree(dest, src, ignore=shutil.ignore_patterns("wheels"))
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "-q", "-w", wheels, src], timeout=300)
    shutil.rmtree(src)
    (own,) = wheels.glob("sshgw-*.whl")
    # ... and its dependencies, as binary wheels for the base image's Python.
    run(
        [
            *pip,
            "download",
            "-q",
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "-d",
            wheels,
            own,
        ],
        timeout=300,
    )
    return dest


def build_image(context: Path, base: str, tag: str, target: str | None = None) -> None:
    """``docker build -f deploy/docker/Dockerfile --build-arg BASE=base -t tag context``."""
    argv: list[str | os.PathLike[str]] = [
        "docker",
        "build",
        "-q",
        "--build-arg",
        f"BASE={base}",
        "-f",
        context / "deploy" / "docker" / "Dockerfile",
        "-t",
        tag,
    ]
    if target is not None:
        argv += ["--target", target]
    # Who made it: remove_stale_images() removes the tags of runs that died before their cleanup.
    argv += ["--label", f"{OWNER_LABEL}={OWNER}"]
    # The classic builder: its cache is the engine's images, removed with the tags (BuildKit
    # keeps a cache of its own that only `docker builder prune` empties, for everybody).
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    run([*argv, context], timeout=600, env=env)


def remove_stale_images(repository: str) -> None:
    """Remove the tags of ``repository`` that test runs on this host made and left behind."""
    tags = docker("images", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    stale = []
    for tag in tags:
        owner = docker(
            "image", "inspect", "-f", f'{{{{index .Config.Labels "{OWNER_LABEL}"}}}}', tag,
            check=False,
        ).stdout.strip()  # fmt: skip
        host, _, pid = owner.partition(":")
        if host == os.uname().nodename and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.append(tag)
    if stale:
        remove_image(*stale)


def remove_image(*tags: str) -> None:
    """Remove the tags (and the untagged build layers under them); no error when gone."""
    present = [t for t in tags if docker("image", "inspect", t, check=False).returncode == 0]
    if present:
        docker("rmi", "-f", *present, check=False, timeout=120)


def inspect(kind: str, name: str) -> dict[str, object]:
    res = docker(kind, "inspect", name)
    data = json.loads(res.stdout)
    assert isinstance(data, list) and data, res.stdout
    item = data[0]
    assert isinstance(item, dict)
    return item


# --- clients -------------------------------------------------------------------------------


def keygen(path: Path) -> Path:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", path])
    return path


def client_opts(key: Path) -> list[str]:
    return [*openssh.client_opts(key), *openssh.CONNECT_TIMEOUT]


def ssh_argv(
    port: int, key: Path, login: str, *remote: str, extra: Sequence[str] = ()
) -> list[str]:
    return ["ssh", *client_opts(key), "-p", str(port), *extra, "-l", login, "127.0.0.1", *remote]


def ssh(
    port: int, key: Path, login: str, *remote: str, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ssh_argv(port, key, login, *remote),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def host_key(port: int) -> str:
    """The gateway's ed25519 host key as ``ssh-keyscan`` sees it."""
    res = run(
        ["ssh-keyscan", "-T", "20", "-t", "ed25519", "-p", str(port), "127.0.0.1"], timeout=60
    )
    lines = [ln for ln in res.stdout.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1, res.stdout + res.stderr
    return lines[0].split(None, 1)[1]


def banner(port: int) -> bool:
    """True once an SSH server answers on 127.0.0.1:port (through Docker's port mapping)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def published_port(container: str, port: str) -> int:
    """The host port Docker published ``port`` (``2222/tcp``) of ``container`` on."""
    out = docker("port", container, port).stdout
    m = re.search(r":(\d+)\s*$", out.strip().splitlines()[0])
    assert m, out
    return int(m.group(1))


# --- the gateway as a container ------------------------------------------------------------


class ContainerGateway:
    """The gateway image running against the host's engine: the Docker socket mounted, its group
    added, a named data volume, SSH (2222) and metrics (9122) published on loopback ports.

    ``cli`` runs ``sshgw`` inside the container (``docker exec``), as an administrator would.
    """

    def __init__(
        self,
        image: str,
        name: str,
        volume: str,
        socket: Path,
        keys_dir: Path,
        run_opts: Sequence[str] = (),
    ) -> None:
        self.image = image
        self.name = name
        self.volume = volume
        self.socket = socket
        self.keys_dir = keys_dir
        self.run_opts = list(run_opts)
        self.keys: dict[str, Path] = {}
        self.port = 0
        self.metrics_port = 0

    def start(self, timeout: float = 90) -> None:
        gid = self.socket.stat().st_gid
        docker(
            "run",
            "-d",
            "--name",
            self.name,
            *labels(),
            "-v",
            f"{self.socket}:/var/run/docker.sock",
            "--group-add",
            str(gid),
            "-v",
            f"{self.volume}:/var/lib/sshgw",
            "-p",
            "127.0.0.1::2222",
            "-p",
            "127.0.0.1::9122",
            *self.run_opts,
            self.image,
            timeout=120,
        )
        self.port = published_port(self.name, "2222/tcp")
        self.metrics_port = published_port(self.name, "9122/tcp")
        deadline = time.monotonic() + timeout
        while not banner(self.port):
            if self.state() != "running" or time.monotonic() > deadline:
                pytest.fail(
                    f"the gateway container ({self.state()}) sent no SSH banner:\n{self.logs()}",
                    pytrace=False,
                )
            time.sleep(0.3)

    def state(self) -> str:
        res = docker("inspect", "-f", "{{.State.Status}}", self.name, check=False)
        return res.stdout.strip() or "gone"

    def stop(self) -> int:
        """``docker stop`` (SIGTERM, then KILL after 30 s); returns the exit code."""
        docker("stop", "-t", "30", self.name, timeout=90)
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False, timeout=120)

    def logs(self) -> str:
        res = docker("logs", self.name, check=False)
        return res.stdout + res.stderr

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        res = run(
            ["docker", "exec", "-i", self.name, "sshgw", *args],
            input=input,
            check=False,
            timeout=120,
        )
        no_traceback(res.stdout.encode(), res.stderr.encode())
        if check and res.returncode != 0:
            pytest.fail(
                f"sshgw {' '.join(args)} in {self.name} exited {res.returncode}:\n"
                f"{res.stdout}{res.stderr}",
                pytrace=False,
            )
        return res

    def add_user(self, user: str) -> Path:
        key = keygen(self.keys_dir / user)
        self.cli("user", "add", user, "--key", (self.keys_dir / f"{user}.pub").read_text().strip())
        self.keys[user] = key
        return key

    def grant(self, container: str, user: str, rights: str, logins: str = "app") -> None:
        self.cli(
            "grant", "add", "--user", user, "--target", container, "--rights", rights,
            "--logins", logins,
        )  # fmt: skip

    def ssh_argv(self, login: str, *remote: str, extra: Sequence[str] = ()) -> list[str]:
        user = login.split("+", 1)[0]
        return ssh_argv(self.port, self.keys[user], login, *remote, extra=extra)

    def ssh(
        self, login: str, *remote: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        user = login.split("+", 1)[0]
        return ssh(self.port, self.keys[user], login, *remote, timeout=timeout)

    def health(self) -> str:
        res = docker(
            "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", self.name
        )
        return res.stdout.strip()

    def wait_healthy(self, timeout: float = 90) -> None:
        if not wait_until(lambda: self.health() == "healthy", timeout, interval=0.5):
            pytest.fail(
                f"the container's health is {self.health()!r}, not healthy:\n"
                f"{docker('inspect', '-f', '{{json .State.Health}}', self.name).stdout}",
                pytrace=False,
            )
