"""Channels per connection: one authenticated connection cannot open sessions without end.

Attack that succeeded on an earlier gateway: asyncssh has no MaxSessions, so one connection
could open channel after channel, each a ``docker exec`` and a bridge held by the gateway.
``SSHGW_MAX_SESSIONS`` bounds the channels open at once on one connection; the next one is
refused at channel open with a reason the client can show, and a closed channel frees its place.
The default (64) leaves room for parallel tools over one OpenSSH ControlMaster connection
(20 at once: ``tests/e2e/test_ssh_exec.py::test_controlmaster_parallel_sessions``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, GatewayFactory, unique, wait_until
from tests.e2e.test_metrics_prometheus import sample, scrape

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

LIMIT = 3


@pytest.fixture(scope="module")
def small_gateway(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory({"SSHGW_MAX_SESSIONS": str(LIMIT)})


def user_with_grant(gateway: Gateway, container: str) -> str:
    user = unique("ch")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="shell,exec", logins="app")
    return user


async def echo(proc: asyncssh.SSHClientProcess[bytes], line: bytes) -> bytes:
    proc.stdin.write(line)
    async with asyncio.timeout(30):
        return await proc.stdout.readline()


async def test_one_session_too_many_is_refused_at_channel_open(
    small_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = small_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    async with asyncssh.connect(
        "127.0.0.1",
        gw.port,
        username=f"{user}+{c}",
        client_keys=[str(gw.keys[user])],
        known_hosts=None,
        agent_path=None,
    ) as conn:
        procs = [await conn.create_process("cat", encoding=None) for _ in range(LIMIT)]
        for i, p in enumerate(procs):
            assert await echo(p, b"hello %d\n" % i) == b"hello %d\n" % i
        with pytest.raises(asyncssh.ChannelOpenError) as err:
            await conn.create_process("echo one-too-many", encoding=None)
        assert err.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        assert err.value.reason == f"too many sessions on this connection (at most {LIMIT})"
        # The refusal ends nothing: the connection and its sessions keep working.
        for i, p in enumerate(procs):
            assert await echo(p, b"still %d\n" % i) == b"still %d\n" % i
        # A closed session frees its place.
        procs[0].stdin.write_eof()
        async with asyncio.timeout(30):
            done = await procs[0].wait()
        assert done.exit_status == 0
        deadline = time.monotonic() + 20
        while True:  # the gateway learns of the close a moment after the client does
            try:
                again = await conn.create_process("cat", encoding=None)
                break
            except asyncssh.ChannelOpenError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert await echo(again, b"again\n") == b"again\n"
        for p in [*procs[1:], again]:
            p.stdin.write_eof()
        async with asyncio.timeout(30):
            for p in [*procs[1:], again]:
                assert (await p.wait()).exit_status == 0
    body = scrape(gw)
    assert sample(body, "sshgw_channels_refused_total", reason="max_sessions") >= 1


async def test_sessions_over_several_connections_are_counted_each(
    small_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    # The limit is per connection: a second connection has its own places.
    gw = small_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    conns = [
        await asyncssh.connect(
            "127.0.0.1",
            gw.port,
            username=f"{user}+{c}",
            client_keys=[str(gw.keys[user])],
            known_hosts=None,
            agent_path=None,
        )
        for _ in range(2)
    ]
    try:
        procs = [
            await conn.create_process("cat", encoding=None) for conn in conns for _ in range(LIMIT)
        ]
        for i, p in enumerate(procs):
            assert await echo(p, b"%d\n" % i) == b"%d\n" % i
        for p in procs:
            p.stdin.write_eof()
        async with asyncio.timeout(30):
            for p in procs:
                await p.wait()
    finally:
        for conn in conns:
            conn.close()


@pytest.fixture
def ctl_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="gwch", dir="/tmp"))  # unix socket paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_controlmaster_sessions_beyond_the_limit_fail_and_others_go_on(
    small_gateway: Gateway, make_container: MakeContainer, busybox_image: str, ctl_dir: Path
) -> None:
    gw = small_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    login = f"{user}+{c}"
    ctl = ctl_dir / "m"
    master_log = ctl_dir / "master.log"
    mux = ["-o", f"ControlPath={ctl}"]
    with master_log.open("wb") as log:
        master = subprocess.Popen(
            gw.ssh_cmd(
                login,
                extra_opts=[
                    *mux,
                    "-o",
                    "ControlMaster=yes",
                    "-o",
                    "ControlPersist=no",
                    "-v",  # its log shows the reason of a refused channel
                    "-N",
                ],
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    running: list[subprocess.Popen[bytes]] = []

    def over_master(*args: str) -> list[str]:
        # An unregistered key: a client that falls back to a connection of its own (as
        # OpenSSH does when the master's session is refused) fails there instead.
        return gw.ssh_cmd(
            login, *args, key=gw.stranger_key, extra_opts=[*mux, "-o", "ControlMaster=no"]
        )

    def check() -> bool:
        res = subprocess.run(
            [*over_master(), "-O", "check"], capture_output=True, timeout=10, check=False
        )
        return res.returncode == 0

    try:
        assert wait_until(check, timeout=30), master_log.read_bytes()
        for i in range(LIMIT):
            p = subprocess.Popen(
                over_master(f"echo up-{i}; exec sleep 60"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            running.append(p)
            assert p.stdout is not None
            assert p.stdout.readline() == f"up-{i}\n".encode()
        refused = subprocess.run(
            over_master("echo one-too-many"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 255, refused
        assert refused.stdout == b""
        assert b"Session open refused by peer" in refused.stderr
        # The master, a stock OpenSSH client, shows the gateway's reason.
        reason = f"too many sessions on this connection (at most {LIMIT})".encode()
        assert wait_until(lambda: reason in master_log.read_bytes(), timeout=10), (
            master_log.read_bytes()
        )
        # One ends; then a new one gets its place, and the others were never disturbed.
        running[0].kill()
        running[0].wait(timeout=10)

        def one_more() -> bool:
            res = subprocess.run(
                over_master("echo after"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
            return res.returncode == 0 and res.stdout == b"after\n"

        assert wait_until(one_more, timeout=30, interval=0.5)
        assert all(p.poll() is None for p in running[1:])
        assert master.poll() is None
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        master.kill()
        master.wait(timeout=10)
