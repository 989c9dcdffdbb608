"""Revocation and the end of every kind of session.

Attacks that succeeded on an earlier gateway: a user kept working through a connection that was
already open when an administrator disabled them or removed their key (OpenSSH's ControlMaster
multiplexes new sessions over it for as long as ControlPersist says), and SFTP/SCP sessions
outlived ``sshgw sessions kill`` and the gateway's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.e2e.helpers import REPO, Gateway, GatewayFactory, has_process, unique, wait_until
from tests.e2e.test_metrics_prometheus import sample, scrape
from tests.e2e.test_sftp import client_opts, in_container

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


# --- helpers ---------------------------------------------------------------------------------


def disable_in_database(gateway: Gateway, user: str) -> None:
    """What ``sshgw user disable`` changes, written straight into the gateway's SQLite file."""
    db = sqlite3.connect(gateway.data_dir / "sshgw.db", timeout=30)
    try:
        with db:
            changed = db.execute("UPDATE users SET disabled = 1 WHERE name = ?", (user,)).rowcount
    finally:
        db.close()
    assert changed == 1, user


@pytest.fixture
def ctl_dir() -> Iterator[Path]:
    # Unix socket paths are short: not under pytest's deep tmp_path.
    d = Path(tempfile.mkdtemp(prefix="gwctl", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Master:
    """An OpenSSH ControlMaster connection; ``run``/``start`` open new sessions over it."""

    def __init__(self, gateway: Gateway, login: str, key: Path, path: Path) -> None:
        self.gateway, self.login, self.key = gateway, login, key
        self.opts = ["-o", f"ControlPath={path}"]
        self.proc = subprocess.Popen(
            gateway.ssh_cmd(
                login,
                key=key,
                extra_opts=[*self.opts, "-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N"],
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(lambda: self.check() == 0, timeout=30), "the master never came up"

    def _cmd(self, *args: str) -> list[str]:
        extra = [*self.opts, "-o", "ControlMaster=no"]
        return self.gateway.ssh_cmd(self.login, *args, key=self.key, extra_opts=extra)

    def check(self) -> int:
        return subprocess.run(
            [*self._cmd(), "-O", "check"], capture_output=True, timeout=10, check=False
        ).returncode

    def run(self, command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self._cmd(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )

    def start(self, command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._cmd(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def active(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    res = gateway.cli("sessions", "--active", "--user", user, "--json")
    return list(json.loads(res.stdout))


def events(gateway: Gateway, kind: str, user: str) -> list[dict[str, Any]]:
    res = gateway.cli("audit", "--kind", kind, "--user", user, "--json")
    return list(json.loads(res.stdout))


def ended_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)
    return proc.poll() is not None


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def fingerprint(key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


# --- revocation ------------------------------------------------------------------------------


async def test_disabled_user_loses_open_connections(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    ctl_dir: Path,
) -> None:
    c = make_container(busybox_image)
    user = unique("rv")
    key = gateway.add_user(user)
    assert key is not None
    gateway.grant(c, user=user, rights="shell,exec", logins="app")
    login = f"{user}+{c}"
    master = Master(gateway, login, key, ctl_dir / "m")
    # asyncssh, too: a connection opened before the disable.
    conn = await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=login,
        client_keys=[str(key)],
        known_hosts=None,
        agent_path=None,
    )
    running = master.start("sleep 97")
    try:
        assert master.run("echo before").stdout == b"before\n"
        assert wait_until(lambda: has_process(c, r"sleep 97\b"), timeout=30)

        before = scrape(gateway)
        # The user is disabled in the database and, within milliseconds, a new channel is
        # opened on a connection that is still open: the channel's own re-check refuses it (the
        # poller, once a second, would otherwise close the connection first; the CLI takes
        # seconds to start and stop). The CLI's own disable follows, as an admin would.
        disable_in_database(gateway, user)
        t0 = time.monotonic()
        try:
            r = await conn.run("echo after", timeout=10)
        except (asyncssh.Error, OSError):
            pass
        else:
            assert "after" not in str(r.stdout) and r.exit_status != 0, (r.stdout, r.stderr)
        # ... and counted under its own kind (it was counted as "other").
        after = scrape(gateway)
        for kind, grew in (("exec", True), ("other", False)):
            was = sample(before, "sshgw_sessions_started_total", kind=kind, result="denied")
            now = sample(after, "sshgw_sessions_started_total", kind=kind, result="denied")
            assert (now > was) == grew, (kind, was, now)
        gateway.cli("user", "disable", user)
        res = master.run("echo after")
        assert b"after" not in res.stdout, res
        assert res.returncode != 0
        # The running session ends within a few seconds, and with it its process.
        assert ended_within(running, 6.0 - (time.monotonic() - t0)), (
            "the disabled user's session kept running"
        )
        assert wait_until(lambda: not has_process(c, r"sleep 97\b"), timeout=10)
        assert wait_until(lambda: master.proc.poll() is not None, timeout=5), (
            "the revoked connection stayed open"
        )
        # Audited with the reason.
        assert wait_until(lambda: bool(events(gateway, "revoked", user)), timeout=10)
        reasons = {e["detail"]["reason"] for e in events(gateway, "revoked", user)}
        assert reasons == {"user disabled"}
        ends = events(gateway, "session.end", user)
        assert "revoked" in {e["detail"].get("reason") for e in ends}
    finally:
        stop(running)
        master.close()
        conn.close()


def test_removed_key_loses_its_connection_only(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    ctl_dir: Path,
) -> None:
    c = make_container(busybox_image)
    user = unique("rk")
    key_a = gateway.add_user(user)
    assert key_a is not None
    key_b = gateway.add_key(user)
    gateway.grant(c, user=user, rights="exec", logins="app")
    login = f"{user}+{c}"
    a = Master(gateway, login, key_a, ctl_dir / "a")
    b = Master(gateway, login, key_b, ctl_dir / "b")
    run_a = a.start("sleep 91")
    run_b = b.start("sleep 92")
    try:
        assert wait_until(lambda: has_process(c, r"sleep 91\b"), timeout=30)
        assert wait_until(lambda: has_process(c, r"sleep 92\b"), timeout=30)

        gateway.cli("key", "remove", fingerprint(key_a))
        t0 = time.monotonic()
        res = a.run("echo after")
        assert b"after" not in res.stdout and res.returncode != 0, res
        assert ended_within(run_a, 6.0 - (time.monotonic() - t0)), "key A's session kept running"
        # The other key's connection and session are untouched.
        time.sleep(1.5)
        assert run_b.poll() is None, "the session of the other key ended"
        assert has_process(c, r"sleep 92\b")
        assert b.run("echo still").stdout == b"still\n"
        assert wait_until(lambda: bool(events(gateway, "revoked", user)), timeout=10)
        assert {e["detail"]["reason"] for e in events(gateway, "revoked", user)} == {"key removed"}
    finally:
        stop(run_a, run_b)
        a.close()
        b.close()


# --- kill and shutdown end file sessions -----------------------------------------------------


def sftp_proc(gateway: Gateway, user: str, container: str) -> subprocess.Popen[bytes]:
    """An interactive OpenSSH sftp client that stays connected while its stdin is open."""
    return subprocess.Popen(
        [
            "sftp",
            *client_opts(gateway, user),
            "-P",
            str(gateway.port),
            f"{user}+{container}@127.0.0.1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def transport_gone(sftp: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether the sftp client's ssh transport exits within ``seconds``.

    An interactive sftp waiting at its prompt only reports "Connection closed" (it exits at the
    next command); its ssh child is what holds the channel, and it exits when the channel closes.
    """

    def gone() -> bool:
        if sftp.poll() is not None:
            return True
        try:
            kids = Path(f"/proc/{sftp.pid}/task/{sftp.pid}/children").read_text().split()
        except OSError:
            return True
        return not kids

    return wait_until(gone, timeout=seconds, interval=0.1)


def kill_all(gateway: Gateway, ids: list[str]) -> list[bytes]:
    kills = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "sessions", "kill", sid, "--wait", "8"],
            env=gateway.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for sid in ids
    ]
    return [k.communicate(timeout=60)[0] for k in kills]


def file_user(gateway: Gateway, container: str, rights: str = "sftp-read") -> str:
    user = unique("fk")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights=rights, logins="app")
    return user


async def test_kill_ends_sftp_and_scp(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    c = make_container(busybox_image)
    user = file_user(gateway, c, "sftp-read,sftp-write")
    in_container(c, "dd if=/dev/zero of=/tmp/big bs=1M count=8 2>/dev/null; chmod 644 /tmp/big")
    upload = tmp_path / "up"
    upload.write_bytes(b"x" * (8 << 20))
    client = sftp_proc(gateway, user, c)
    assert wait_until(lambda: len(active(gateway, user)) == 1, timeout=30)
    # asyncssh's sftp client, too.
    conn = await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=f"{user}+{c}",
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    )
    aclient = await conn.start_sftp_client()
    assert (await aclient.stat("/tmp/big")).size == 8 << 20
    # An upload by the legacy scp protocol (-O), slowed down so that it is still copying when
    # killed (a download's close would queue behind the data in the socket buffers).
    scp = subprocess.Popen(  # noqa: ASYNC220 (a client process, not work for the loop)
        [
            "scp", "-O", "-l", "400", *client_opts(gateway, user), "-P", str(gateway.port),
            str(upload), f"{user}+{c}@127.0.0.1:/tmp/up",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_until(lambda: len(active(gateway, user)) == 3, timeout=30), active(
            gateway, user
        )
        sessions = active(gateway, user)
        assert sorted(s["kind"] for s in sessions) == ["scp", "sftp", "sftp"]
        # All three at once (each `sessions kill` waits until the gateway has ended it).
        outs = kill_all(gateway, [sess["id"] for sess in sessions])
        t0 = time.monotonic()
        assert all(b"ended: killed" in o for o in outs), outs
        assert transport_gone(client, 5.0), "the sftp client stayed connected after the kill"
        await asyncio.wait_for(aclient.wait_closed(), timeout=5.0 - (time.monotonic() - t0))
        assert ended_within(scp, 5.0), "the scp transfer went on after the kill"
        assert scp.returncode != 0
        # The cut-short upload is discarded, not put in place.
        assert "up" not in in_container(c, "ls /tmp").split()
        assert wait_until(lambda: active(gateway, user) == [], timeout=5)
        reasons = {
            json.loads(gateway.cli("sessions", "show", s["id"], "--json").stdout)["end_reason"]
            for s in sessions
        }
        assert reasons == {"killed"}
    finally:
        stop(client, scp)
        conn.close()


def test_shutdown_ends_sftp(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory()
    c = make_container(busybox_image)
    user = file_user(gw, c)
    client = sftp_proc(gw, user, c)
    try:
        assert wait_until(lambda: len(active(gw, user)) == 1, timeout=30)
        assert gw.proc is not None
        gw.proc.terminate()
        # Ended at once and told why, not cut off when the process exits after the drain
        # timeout (kill_grace + 3 s).
        assert transport_gone(client, 3.0), "the sftp client stayed connected through shutdown"
        gw.stop()
    finally:
        stop(client)
    assert client.stderr is not None
    err = client.stderr.read()
    assert b"the gateway is shutting down" in err, err


@contextlib.asynccontextmanager
async def sftp_of(gateway: Gateway, user: str, c: str) -> AsyncIterator[asyncssh.SFTPClient]:
    async with asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=f"{user}+{c}",
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    ) as conn:
        client = await conn.start_sftp_client()
        assert client.supports_remote_copy
        yield client


CHUNK = 64 << 20


async def test_server_side_copy_is_bounded_and_stops_with_its_session(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """copy-data (the gateway copies through the container) has a bound per request, and a
    series of copies ends when the session is killed."""
    c = make_container(busybox_image)
    user = file_user(gateway, c, "sftp-read,sftp-write")
    # Sparse files: cheap to make, real bytes to copy.
    in_container(
        c,
        "dd if=/dev/zero of=/tmp/big bs=1 count=0 seek=256M 2>/dev/null",
        user="app",
    )
    async with sftp_of(gateway, user, c) as client:
        # "Copy to the end" stops at the bound instead of running as long as the source lasts.
        async with client.open("/tmp/big", "rb") as src, client.open("/tmp/c1", "wb") as dst:
            with pytest.raises(asyncssh.SFTPFailure, match="bound"):
                await asyncio.wait_for(client.remote_copy(src, dst), timeout=60)

        async with client.open("/tmp/big", "rb") as src, client.open("/tmp/c2", "wb") as dst:

            async def copy_all() -> None:
                # The same 64 MiB again and again: minutes of copying, 64 MiB of disk.
                for _ in range(1000):
                    await client.remote_copy(src, dst, 0, CHUNK, 0)

            copy = asyncio.ensure_future(copy_all())
            await asyncio.sleep(1.0)
            assert not copy.done(), "the copies finished before the kill"
            (sess,) = await asyncio.to_thread(active, gateway, user)
            outs = await asyncio.to_thread(kill_all, gateway, [sess["id"]])
            assert b"ended: killed" in outs[0], outs
            done, _ = await asyncio.wait({copy}, timeout=5.0)
            assert done, "the server-side copies went on after the kill"
            assert copy.exception() is not None
    # The unfinished target is not put in place.
    assert "c2" not in in_container(c, "ls /tmp").split()
