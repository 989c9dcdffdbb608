"""Faults the gateway must survive: the engine, the database, the container or the gateway itself
going away in the middle of a session. Each fault gets one clear line for the user, no traceback,
nothing lost that the gateway promised to keep, and no process left behind.

The engine and database tests restart the real daemons this test run uses; they restore them
before they return (and fail loudly if they cannot).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, GatewayFactory, no_traceback, unique, wait_until
from tests.support.containers import OWNER_LABEL, TEST_LABEL, owner

# serial: it restarts the Docker engine that every other test uses.
pytestmark = [pytest.mark.docker, pytest.mark.serial]

MakeContainer = Callable[..., str]
REPO = Path(__file__).resolve().parents[2]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=check
    )


def processes(container: str) -> list[str]:
    """Command lines of the processes running in ``container`` (PID 1 left out, and zombies:
    ``[name]``, dead processes the image's PID 1 has not reaped)."""
    out = docker("exec", container, "ps", "-o", "pid,args").stdout.splitlines()[1:]
    rows = [line.split(None, 1) for line in out if line.strip()]
    return [r[1] for r in rows if len(r) == 2 and r[0] != "1" and not r[1].startswith(("ps ", "["))]


def user_with_grant(
    gateway: Gateway, container: str, rights: str = "shell,exec,sftp-read,sftp-write"
) -> str:
    user = unique("ft")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights=rights, logins="root")
    return user


def connect(gateway: Gateway, user: str, container: str) -> asyncssh.connection._ConnectContext:
    return asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=f"{user}+{container}",
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    )


# The container goes away mid-upload ------------------------------------------------------------


@pytest.fixture(params=["busybox", "debian"])
def image(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_image"))


async def test_container_killed_mid_upload_leaves_no_partial_file(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    c = make_container(image)
    docker("exec", c, "mkdir", "-p", "/srv/up")
    user = user_with_grant(gateway, c)
    chunk = b"x" * 65536
    async with connect(gateway, user, c) as conn, conn.start_sftp_client() as sftp:
        f = await sftp.open("/srv/up/big", "wb")
        for _ in range(16):
            await f.write(chunk)
        docker("kill", c)
        with pytest.raises((asyncssh.SFTPError, asyncssh.Error, OSError)):
            for _ in range(200):
                await f.write(chunk)
            await f.close()
    docker("start", c)
    listing = docker("exec", c, "ls", "-a", "/srv/up").stdout.split()
    # Nothing at the target name. The hidden temporary (.sshgw-*.tmp) stays: nothing ran in the
    # dead container to remove it (docs/SECURITY.md, "Faults").
    assert "big" not in listing, listing
    assert all(n in (".", "..") or n.startswith(".sshgw-") for n in listing), listing
    assert "Traceback" not in gateway.log()[-20000:]


# The gateway is told to stop --------------------------------------------------------------------


def test_sigterm_ends_sessions_with_a_message_and_leaves_no_process(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory()
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    client = subprocess.Popen(
        gw.ssh_cmd(f"{user}+{c}", "sleep 300; echo not-ended"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: any("sleep 300" in p for p in processes(c)), timeout=30)
        gw.stop()  # SIGTERM; fails the test if the gateway does not exit
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode != 0 and b"not-ended" not in out
    assert b"shut" in err.lower() or b"closed" in err.lower(), err
    no_traceback(out, err)
    assert wait_until(lambda: not any("sleep" in p for p in processes(c)), timeout=15), processes(c)


# The Docker engine restarts ---------------------------------------------------------------------


def _main_dockerd() -> list[int]:
    """The engine the tests use: a dockerd without an exec root of its own (the extra engines of
    tests/support/engines.py have one, and must not be stopped here)."""
    found = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout
    main = []
    for p in found.split():
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--exec-root" not in argv:
            main.append(int(p))
    return main


def _restart_dockerd() -> float:
    """Stop dockerd, start it again with the project's script; the time it answered again."""
    pid = _main_dockerd()
    assert pid, "dockerd is not running"
    for p in pid:
        os.kill(p, signal.SIGTERM)
    assert wait_until(lambda: not _main_dockerd(), timeout=60), "dockerd did not stop"
    subprocess.run([str(REPO / "scripts" / "start-docker.sh")], check=True, timeout=180)
    return time.monotonic()


@pytest.fixture
def restartable(busybox_image: str) -> Iterator[str]:
    """A container that comes back by itself when the engine does (--restart always)."""
    name = f"sshgw-t-fault-{unique('d')}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "always",
        "--label",
        f"{TEST_LABEL}=1",
        "--label",
        f"{OWNER_LABEL}={owner()}",
        "--stop-signal",
        "SIGKILL",
        busybox_image,
    )
    yield name
    docker("rm", "-f", "-v", name, check=False)


def test_engine_restart_mid_session(gateway: Gateway, restartable: str) -> None:
    c = restartable
    user = user_with_grant(gateway, c)
    client = subprocess.Popen(
        gateway.ssh_cmd(f"{user}+{c}", "sleep 300"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: any("sleep 300" in p for p in processes(c)), timeout=30)
        back = _restart_dockerd()
        out, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode != 0
    no_traceback(out, err)
    assert len([ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]) <= 2, err

    def works() -> bool:
        res = gateway.ssh(f"{user}+{c}", "echo back", timeout=20)
        return res.returncode == 0 and res.stdout == b"back\n"

    assert wait_until(
        lambda: docker("inspect", "-f", "{{.State.Running}}", c).stdout.strip() == "true",
        timeout=60,
    )
    running_at = time.monotonic()
    assert wait_until(works, timeout=15, interval=0.5), gateway.log()[-4000:]
    assert time.monotonic() - max(back, running_at) < 15


# PostgreSQL stops -------------------------------------------------------------------------------


def _pg_cluster() -> tuple[str, str]:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    version, name = out.stdout.split()[:2]
    return version, name


@pytest.mark.postgres
def test_postgres_stopped_refuses_new_logins_keeps_sessions_and_audit(
    gateway_factory: GatewayFactory, pg_url: str, make_container: MakeContainer, busybox_image: str
) -> None:
    env = {"SSHGW_DATABASE_URL": pg_url}
    subprocess.run(
        [sys.executable, "-m", "gateway", "db", "upgrade"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    gw = gateway_factory(env)
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    version, cluster = _pg_cluster()
    # A running session: a shell that echoes what it is sent.
    client = subprocess.Popen(
        gw.ssh_cmd(f"{user}+{c}", "while read l; do echo got:$l; done"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(b"one\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"got:one\n"
        subprocess.run(
            ["pg_ctlcluster", version, cluster, "stop", "-m", "fast"], check=True, timeout=60
        )
        try:
            res = gw.ssh(f"{user}+{c}", "echo should-not-run", timeout=60)
            assert res.returncode != 0 and b"should-not-run" not in res.stdout
            no_traceback(res.stdout, res.stderr)
            lines = [ln for ln in res.stderr.decode(errors="replace").splitlines() if ln.strip()]
            assert len(lines) <= 2 and not any(
                "postgres" in ln.lower() or "5432" in ln for ln in lines
            ), lines
            client.stdin.write(b"two\n")
            client.stdin.flush()
            assert client.stdout.readline() == b"got:two\n"  # the running session goes on
        finally:
            subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=True, timeout=120)
        client.stdin.close()
        assert client.wait(timeout=30) == 0
    finally:
        if client.poll() is None:
            client.kill()

    def audited() -> bool:
        res = gw.cli("audit", "--json", "--user", user, check=False)
        if res.returncode != 0:
            return False
        kinds = [e["kind"] for e in json.loads(res.stdout)]
        return "session.end" in kinds

    assert wait_until(audited, timeout=60, interval=1), gw.log()[-4000:]
