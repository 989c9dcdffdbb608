"""Channel requests and SFTP handles a client can repeat without limit.

An SSH client may send env, signal and window-change requests, and SFTP open/opendir requests,
as fast as its link allows. asyncssh keeps every env entry and queues every signal and resize
for the session; each signal cost a ``docker exec`` in the container and each resize a Docker
API call, and every SFTP handle stayed open. On an earlier gateway each attack below grew memory
or the engine's work without bound; each test shows the bound now holds (docs/SECURITY.md,
"Memory and backpressure").
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, GatewayFactory, unique
from tests.e2e.test_sftp import files_user, in_container
from tests.security.test_memory import connect, gateway_pid, rss, watch_growth

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def exec_starts(container: str, since: float, until: float) -> list[str]:
    """``exec_start`` events of the Docker engine for ``container`` between two times."""
    res = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{until:.3f}",
            "--filter",
            f"container={container}",
            "--filter",
            "event=exec_start",
            "--format",
            "{{.Action}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


# env ------------------------------------------------------------------------------------------


async def test_env_requests_are_bounded(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    """4000 env entries of 16 KiB (64 MiB) on one channel: the gateway keeps ``max_env``."""
    gw = gateway_factory({"SSHGW_MAX_ENV": "10"})
    container = make_container(busybox_image)
    user = unique("env")
    gw.add_user(user)
    gw.grant(container, user=user, rights="exec")
    pid = gateway_pid(gw)
    async with connect(gw, user, container) as conn:
        res = await conn.run("echo warm", encoding=None)
        assert res.stdout == b"warm\n", res
        await asyncio.sleep(0.5)
        base = rss(pid)
        env = {f"LC_X{i}": "v" * (16 << 10) for i in range(4000)}
        run = asyncio.ensure_future(
            conn.run("env | grep -c '^LC_X' || true", env=env, encoding=None, timeout=120)
        )
        growth = await watch_growth(pid, base, seconds=6.0)
        res = await run
    count = int(res.stdout.strip() or b"0")
    print(f"4000 env entries of 16 KiB: +{growth / 2**20:.1f} MiB, {count} reached the container")
    assert 0 < count <= 10, res
    assert growth <= 24 << 20, f"the gateway grew by {growth / 2**20:.0f} MiB for env requests"


# signals -------------------------------------------------------------------------------------


async def test_signal_flood_does_not_become_an_exec_flood(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """300 signal requests: each delivered signal is an exec in the container; few are."""
    container = make_container(busybox_image)
    user = unique("sig")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="exec")
    async with connect(gateway, user, container) as conn:
        # The command ignores USR1 (its children inherit that), so it lives through the flood.
        proc = await conn.create_process("trap '' USR1; echo up; sleep 60", encoding=None)
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"up\n"
        t0 = time.time()
        for _ in range(300):
            proc.send_signal("USR1")
        await asyncio.sleep(8.0)
        t1 = time.time()
        still_running = proc.exit_status is None
        proc.send_signal("KILL")
        await asyncio.wait_for(proc.wait_closed(), 30)
    starts = exec_starts(container, t0, t1)
    print(f"300 signal requests: {len(starts)} execs in 8 s")
    assert still_running
    # Each delivered signal costs an inspect and one exec; the first ones are delivered.
    assert 1 <= len(starts) <= 8 + 2 * 8 + 4, starts[:5]


async def test_one_signal_still_ends_a_command(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    container = make_container(busybox_image)
    user = unique("sig")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="exec")
    async with connect(gateway, user, container) as conn:
        proc = await conn.create_process("echo up; sleep 60", encoding=None)
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"up\n"
        proc.send_signal("TERM")
        await asyncio.wait_for(proc.wait_closed(), 30)
        assert proc.exit_status == 128 + 15 or proc.exit_signal is not None, (
            proc.exit_status,
            proc.exit_signal,
        )


# window-change -------------------------------------------------------------------------------


async def test_resize_flood_coalesces_to_the_newest_size(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """10 000 window-change requests: the newest size is applied, not every one in turn."""
    container = make_container(busybox_image)
    user = unique("rs")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="shell")
    async with connect(gateway, user, container) as conn:
        proc = await conn.create_process(
            term_type="xterm", term_size=(80, 24), encoding=None, request_pty="force"
        )
        proc.stdin.write(b"echo rea''dy\n")
        out = b""
        async with asyncio.timeout(30):
            while b"ready" not in out:
                out += await proc.stdout.read(4096)
        for i in range(10000):
            proc.change_terminal_size(100 + i % 50, 30 + i % 20)
        proc.change_terminal_size(123, 45)
        # Applied by the time the shell answers (a queue of 10 000 engine calls took minutes).
        proc.stdin.write(b"stty size; echo do''ne\n")
        out = b""
        async with asyncio.timeout(60):
            while b"done" not in out:
                out += await proc.stdout.read(4096)
        proc.stdin.write(b"exit\n")
        await asyncio.wait_for(proc.wait_closed(), 30)
    assert b"45 123" in out, out[-500:]
    # Every size passed on is a Docker API call and a resize event in the session's recording:
    # the recording shows how many were applied (an earlier gateway applied all 10 001).
    cast = None
    deadline = time.monotonic() + 20
    while cast is None and time.monotonic() < deadline:
        for path in (gateway.data_dir / "recordings").rglob("*.cast"):
            text = path.read_text(errors="replace")
            if user in text or "45 123" in text:
                cast = text
        await asyncio.sleep(0.3)
    assert cast is not None, "no recording of the session"
    resizes = sum(1 for line in cast.splitlines() if ', "r", ' in line)
    print(f"10 001 window-change requests: {resizes} resizes applied")
    assert 1 <= resizes <= 200, resizes


# SFTP handles ---------------------------------------------------------------------------------


async def test_sftp_handles_are_capped(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory({"SSHGW_MAX_SFTP_HANDLES": "20"})
    container = make_container(busybox_image)
    in_container(
        container, "mkdir -p /srv/d && for i in 1 2 3 4 5 6 7 8 9 10; do touch /srv/d/$i; done"
    )
    user = files_user(gw, container, rights="sftp-read")
    async with connect(gw, user, container) as conn, conn.start_sftp_client() as sftp:
        handler = sftp._handler
        opened = []
        for _ in range(20):
            opened.append(await handler.opendir(b"/srv/d"))
        with pytest.raises(asyncssh.SFTPFailure, match="too many open handles"):
            await handler.opendir(b"/srv/d")
        with pytest.raises(asyncssh.SFTPFailure, match="too many open handles"):
            await sftp.open("/srv/d/1", "rb")
        await handler.close(opened.pop())
        # a closed handle makes room again
        f = await sftp.open("/srv/d/1", "rb")
        await f.close()


async def test_directory_listings_held_are_capped(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """Each started listing is held until its handle closes: at most 8 per session."""
    container = make_container(busybox_image)
    in_container(
        container,
        "mkdir -p /srv/d && i=0; while [ $i -lt 300 ]; do touch /srv/d/f$i; i=$((i+1)); done",
    )
    user = files_user(gateway, container, rights="sftp-read")
    async with connect(gateway, user, container) as conn, conn.start_sftp_client() as sftp:
        handler = sftp._handler
        handles = [await handler.opendir(b"/srv/d") for _ in range(9)]
        for h in handles[:8]:
            names, _ = await handler.readdir(h)
            assert names
        with pytest.raises(asyncssh.SFTPFailure, match="too many directory listings"):
            await handler.readdir(handles[8])
        await handler.close(handles[0])
        await asyncio.sleep(0.2)  # the dropped listing is finalized by the event loop
        again = await handler.opendir(b"/srv/d")
        names, _ = await handler.readdir(again)
        assert names
        for h in [*handles[1:], again]:
            await handler.close(h)
        await asyncio.sleep(0.2)
        # with the listings closed, an ordinary listing works again
        assert len(await sftp.listdir("/srv/d")) >= 300


# archive backend: writes at large offsets ---------------------------------------------------------


async def test_archive_write_at_a_large_offset_allocates_no_gap(
    gateway: Gateway, make_container: MakeContainer, noshell_image: str
) -> None:
    """An image without a shell: uploads are spooled by the gateway; a write at offset 2 GiB
    must not allocate the 2 GiB gap in memory."""
    container = make_container(noshell_image)
    user = files_user(gateway, container, rights="sftp-read,sftp-write", logins="root")
    pid = gateway_pid(gateway)
    async with connect(gateway, user, container) as conn, conn.start_sftp_client() as sftp:
        await sftp.listdir("/")
        await asyncio.sleep(0.5)
        base = rss(pid)
        f = await sftp.open("/tmp/holey", "wb")
        watch = asyncio.ensure_future(watch_growth(pid, base, seconds=4.0))
        await f.write(b"x", 2 << 30)
        await f.write(b"y", 3 << 30)
        growth = await watch
        # What the gateway holds for the open upload on its own disk (its spool file).
        spooled = spool_blocks(pid, min_size=2 << 30)
        # The connection drops without a close: nothing is sent into the container.
    print(
        f"archive write at 2 GiB and 3 GiB: +{growth / 2**20:.1f} MiB RSS, "
        f"{spooled / 2**20:.1f} MiB spooled on disk"
    )
    assert growth <= 64 << 20, f"the gateway grew by {growth / 2**20:.0f} MiB"
    assert spooled <= 64 << 20, f"the gateway wrote {spooled / 2**20:.0f} MiB of gap to its disk"


def spool_blocks(pid: int, min_size: int) -> int:
    """Bytes allocated on disk by the files of ``pid`` of at least ``min_size`` bytes."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            st = os.stat(fd)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size >= min_size:
            total += st.st_blocks * 512
    return total
