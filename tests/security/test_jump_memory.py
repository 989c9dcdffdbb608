"""Memory under a ProxyJump client that stops reading (see tests/security/test_memory.py).

Through a jump, the container's output crosses two SSH layers in the gateway: the inner
connection's channel, then the outer connection's jump channel and socket. A client with huge
windows on both layers that stops reading its TCP socket must stop the container's output, not
make the gateway queue it (gateway.ssh.jump: the inner connection's flow control also waits for
the outer socket).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, unique
from tests.security.test_memory import GROWTH_MAX, HUGE_WINDOW, WATCH, gateway_pid
from tests.support import hostile

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


class HugeWindowTunnel:
    """asyncssh's ``tunnel=``: the jump channel opened with a huge window (asyncssh's own
    tunnel uses 2 MiB, which the gateway's channel flow control alone would respect)."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    async def create_connection(
        self, session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]], host: str, port: int
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        return await self.conn.create_connection(session_factory, host, port, window=HUGE_WINDOW)


async def test_jump_exec_output_to_a_client_that_stops_reading(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    container = make_container(busybox_image)
    user = unique("mj")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="exec", logins="root")
    pid = gateway_pid(gateway)
    outer = await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=user,
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    )
    try:
        inner = await asyncssh.connect(
            container,
            22,
            tunnel=HugeWindowTunnel(outer),
            username="root",
            known_hosts=None,
            agent_path=None,
        )
        growth = await hostile.growth_under_cat_zero(inner, outer, pid, WATCH, HUGE_WINDOW)
        inner.abort()
    finally:
        outer.abort()
        await outer.wait_closed()
    print(f"jump exec cat /dev/zero, client not reading: +{growth / 2**20:.1f} MiB")
    assert growth <= GROWTH_MAX, (
        f"the gateway grew by {growth / 2**20:.0f} MiB in {WATCH:.0f} s for one jump client "
        f"that stopped reading (bound {GROWTH_MAX / 2**20:.0f} MiB)"
    )
