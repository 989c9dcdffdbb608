"""Memory under clients that stop reading: the gateway must stop producing, not buffer.

asyncssh never pauses a producer when the client's TCP socket is full (``pause_writing`` does
nothing) and its SFTP server writes replies without waiting: on an earlier gateway one client
with a 1 GiB window that ran ``cat /dev/zero`` and stopped reading grew the gateway by 985 MiB in
12 s, and one that pipelined 48 SFTP reads of 4 MiB grew it by 211 MiB (docs/SECURITY.md,
"Memory and backpressure"). The bound asserted here is a memory cap, not a timing.

The hostile client is asyncssh with a huge channel window whose socket is then no longer read
(``pause_reading`` on its transport): the gateway sees a peer whose TCP receive window is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, unique
from tests.e2e.test_sftp import files_user, in_container
from tests.support import hostile
from tests.support.memory import rss, watch_growth

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

GROWTH_MAX = 64 << 20  # bytes the gateway may grow by per non-reading client
WATCH = 10.0  # seconds the client keeps not reading
HUGE_WINDOW = 1 << 30


def gateway_pid(gateway: Gateway) -> int:
    assert gateway.proc is not None and gateway.proc.poll() is None
    return gateway.proc.pid


@asynccontextmanager
async def connect(
    gateway: Gateway, user: str, container: str
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    conn = await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=f"{user}+{container}",
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    )
    try:
        yield conn
    finally:
        conn.abort()
        await conn.wait_closed()


async def test_exec_output_to_a_client_that_stops_reading(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    container = make_container(busybox_image)
    user = unique("m")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="exec")
    pid = gateway_pid(gateway)
    async with connect(gateway, user, container) as conn:
        growth = await hostile.growth_under_cat_zero(conn, conn, pid, WATCH, HUGE_WINDOW)
    print(f"exec cat /dev/zero, client not reading: +{growth / 2**20:.1f} MiB")
    assert growth <= GROWTH_MAX, (
        f"the gateway grew by {growth / 2**20:.0f} MiB in {WATCH:.0f} s for one client that "
        f"stopped reading (bound {GROWTH_MAX / 2**20:.0f} MiB)"
    )


@pytest.mark.parametrize("handles", [1, 48])
async def test_pipelined_sftp_reads_from_a_client_that_stops_reading(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, handles: int
) -> None:
    """48 reads of 4 MiB, on one handle or on 48: requests on different handles run at the
    same time (gateway.sftp.order), so what they may ask for in flight is bounded too."""
    container = make_container(busybox_image)
    # 256 MiB, sparse: reading it costs the container no disk.
    in_container(container, "dd if=/dev/zero of=/tmp/big bs=1M seek=255 count=1 2>/dev/null")
    user = files_user(gateway, container, rights="sftp-read")
    pid = gateway_pid(gateway)
    async with connect(gateway, user, container) as conn:
        chan, sink = await conn.create_session(
            hostile.Sink, subsystem="sftp", encoding=None, window=HUGE_WINDOW
        )
        chan.write(hostile.sftp_packet(hostile.FXP_INIT, (3).to_bytes(4, "big")))
        kind, _ = await sink.sftp_packet()
        assert kind == hostile.FXP_VERSION
        opened = []
        for i in range(handles):
            open_req = (1 + i).to_bytes(4, "big") + hostile.sftp_string(b"/tmp/big")
            open_req += (1).to_bytes(4, "big") + (0).to_bytes(4, "big")  # READ, no attrs
            chan.write(hostile.sftp_packet(hostile.FXP_OPEN, open_req))
            kind, body = await sink.sftp_packet()
            assert kind == hostile.FXP_HANDLE, (kind, body)
            opened.append(body[8 : 8 + int.from_bytes(body[4:8], "big")])
        await asyncio.sleep(0.5)
        base = rss(pid)
        hostile.stop_reading(conn)
        size = 4 << 20
        for i in range(48):
            req = (100 + i).to_bytes(4, "big") + hostile.sftp_string(opened[i % handles])
            req += (i * size).to_bytes(8, "big") + size.to_bytes(4, "big")
            chan.write(hostile.sftp_packet(hostile.FXP_READ, req))
        growth = await watch_growth(pid, base, WATCH)
    print(
        f"sftp 48 x 4 MiB reads on {handles} handle(s), client not reading: +{growth / 2**20:.1f} MiB"
    )
    assert growth <= GROWTH_MAX, (
        f"the gateway grew by {growth / 2**20:.0f} MiB in {WATCH:.0f} s for 48 pipelined reads of "
        f"4 MiB on {handles} handle(s) never read (bound {GROWTH_MAX / 2**20:.0f} MiB)"
    )
