"""deploy/docker/Dockerfile: the image, run as a user runs it, against the host's Docker engine.

One container per module, started the hardened way deploy/README.md shows (read-only root, no
capabilities, no-new-privileges, a tmpfs /tmp) with the Docker socket as its only window on the
host: no host PID namespace, no host network. Real OpenSSH clients go through it into another
container.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import gateway
from tests.deploy.helpers import (
    ContainerGateway,
    client_opts,
    docker_socket,
    host_key,
    http_get,
    inspect,
    labels,
    run,
)
from tests.e2e.helpers import (
    docker,
    kill_client_and_check_no_orphan,
    no_traceback,
    unique,
)

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

# What deploy/README.md recommends on top of the image's own settings.
HARDENED = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


@pytest.fixture(scope="module")
def gw(
    gateway_image: str, docker_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerGateway]:
    suffix = uuid.uuid4().hex[:10]
    volume = f"sshgw-t-data-{suffix}"
    docker("volume", "create", *labels(), volume)
    gateway = ContainerGateway(
        gateway_image,
        f"sshgw-t-gw-{suffix}",
        volume,
        docker_socket(docker_host),
        tmp_path_factory.mktemp("keys"),
        # The image's own health check, run often enough for a test to see it.
        run_opts=[*HARDENED, "--health-interval", "2s"],
    )
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.remove()
        docker("volume", "rm", "-f", volume, check=False)


@pytest.fixture
def target(make_container: MakeContainer, busybox_image: str) -> str:
    return make_container(busybox_image)


def user_for(gw: ContainerGateway, container: str, rights: str = "shell,exec") -> str:
    user = unique("dk")
    gw.add_user(user)
    gw.grant(container, user, rights)
    return user


def test_image_is_small_unprivileged_and_checks_its_health(
    gw: ContainerGateway, python_base_image: str
) -> None:
    config = inspect("image", gw.image)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert "/var/lib/sshgw" in config["Volumes"]
    assert config["Healthcheck"]["Test"] == ["CMD", "sshgw-healthcheck"]
    assert config["Entrypoint"] == ["sshgw"] and config["Cmd"] == ["serve"]
    # What the Dockerfile adds to its base: the virtualenv, no compiler, no pip.
    size = int(str(inspect("image", gw.image)["Size"]))
    base = int(str(inspect("image", python_base_image)["Size"]))
    assert size - base < 150 * 2**20, f"the image adds {(size - base) >> 20} MiB to its base"
    ran = docker("exec", gw.name, "sh", "-c", "id -u; ls /opt/sshgw/bin").stdout.split()
    assert ran[0] == "10001"
    assert "pip" not in ran

    host = inspect("container", gw.name)["HostConfig"]
    assert isinstance(host, dict)
    assert host["PidMode"] in ("", "private") and host["NetworkMode"] != "host"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]

    gw.wait_healthy()
    status, body = http_get(f"http://127.0.0.1:{gw.metrics_port}/healthz")
    assert (status, body) == (200, b"ok\n")
    # Ready: the database (SQLite in the volume) and the engine (through the socket) answer.
    status, body = http_get(f"http://127.0.0.1:{gw.metrics_port}/readyz")
    assert status == 200, body
    # The version of this checkout, installed from its wheel, says so in both places.
    version = docker("exec", gw.name, "sshgw", "--version").stdout.strip()
    assert version == f"sshgw {gateway.__version__}"
    status, body = http_get(f"http://127.0.0.1:{gw.metrics_port}/metrics")
    info = [ln for ln in body.splitlines() if ln.startswith(b"sshgw_build_info{")]
    assert len(info) == 1 and f'version="{gateway.__version__}"'.encode() in info[0], info


def test_ssh_and_sftp_through_the_image(gw: ContainerGateway, target: str, tmp_path: Path) -> None:
    user = user_for(gw, target, rights="shell,exec,sftp-read,sftp-write")
    res = gw.ssh(f"{user}+{target}", "echo", "hello from", "$(id -un)")
    no_traceback(res.stdout, res.stderr)
    assert (res.returncode, res.stdout) == (0, b"hello from app\n"), res.stderr

    data = os.urandom(3 << 20) + bytes(range(256))
    (tmp_path / "up.bin").write_bytes(data)
    batch = "put up.bin /tmp/up.bin\nget /tmp/up.bin down.bin\nls -l /tmp/up.bin\n"
    res = subprocess.run(
        [
            "sftp",
            *client_opts(gw.keys[user]),
            "-P",
            str(gw.port),
            "-b",
            "-",
            f"{user}+{target}@127.0.0.1",
        ],
        input=batch.encode(),
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    no_traceback(res.stdout, res.stderr)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "down.bin").read_bytes() == data
    inside = docker("exec", target, "sha256sum", "/tmp/up.bin").stdout.split()[0]
    assert inside == hashlib.sha256(data).hexdigest()
    owner = docker("exec", target, "stat", "-c", "%U", "/tmp/up.bin").stdout.strip()
    assert owner == "app"


@pytest.mark.parametrize("tty", [False, True], ids=["exec", "pty"])
def test_no_orphan_when_the_client_is_killed(gw: ContainerGateway, target: str, tty: bool) -> None:
    """The gateway ends a session's process through the engine alone (no host PID namespace)."""
    user = user_for(gw, target)
    seconds = 4300 + tty
    argv = gw.ssh_argv(f"{user}+{target}", f"sleep {seconds}", extra=["-tt"] if tty else [])
    kill_client_and_check_no_orphan(argv, target, rf"sleep {seconds}\b")


def test_volume_keeps_host_keys_and_users_across_a_new_container(
    gw: ContainerGateway, target: str
) -> None:
    user = user_for(gw, target)
    before = host_key(gw.port)
    # SIGTERM to the gateway (PID 1 in the container) stops it cleanly, well before the KILL.
    assert gw.stop() == 0, gw.logs()[-4000:]
    no_traceback(gw.logs().encode())
    gw.remove()
    gw.start()
    assert host_key(gw.port) == before
    res = gw.ssh(f"{user}+{target}", "echo", "again")
    assert (res.returncode, res.stdout) == (0, b"again\n"), res.stderr


def test_replica_shows_the_host_keys_it_was_given(
    gw: ContainerGateway, docker_host: str, tmp_path: Path
) -> None:
    """deploy/README.md's recipe: keys made once, copied into a new replica's volume."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for kind, extra in (("ed25519", []), ("ecdsa", ["-b", "256"])):
        run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "sshgw",
             "-f", keys / f"ssh_host_{kind}_key"])  # fmt: skip
    suffix = uuid.uuid4().hex[:10]
    volume = f"sshgw-t-replica-{suffix}"
    replica = ContainerGateway(
        gw.image, f"sshgw-t-replica-{suffix}", volume, gw.socket, tmp_path, run_opts=HARDENED
    )
    docker("volume", "create", *labels(), volume)
    try:
        docker(
            "run", "--rm", *labels(), "-v", f"{volume}:/var/lib/sshgw", "-v", f"{keys}:/keys:ro",
            "--user", "0", "--entrypoint", "sh", gw.image, "-c",
            "cd /var/lib/sshgw && cp /keys/ssh_host_* . && chown 10001:10001 ssh_host_* &&"
            " chmod 0600 ssh_host_*_key",
        )  # fmt: skip
        replica.start()
        given = (keys / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert host_key(replica.port).split() == given
        assert host_key(replica.port) != host_key(gw.port)
        # The replica made its database beside the keys it was given.
        assert replica.cli("db", "status").returncode == 0
    finally:
        replica.remove()
        docker("volume", "rm", "-f", volume, check=False)
