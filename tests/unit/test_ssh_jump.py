"""ProxyJump's pure pieces: the inner user name as a target, and the flow control of a
connection carried inside another connection's channel."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from gateway.config import Settings
from gateway.errors import InvalidInput
from gateway.routing import Target
from gateway.ssh.hostkeys import known_hosts_lines
from gateway.ssh.jump import inner_target
from gateway.ssh.transport import CoalescingTransport
from tests.unit.test_transport import Inner


def test_inner_user_name_is_the_login_in_the_container() -> None:
    assert inner_target("alice", "web1", "root") == Target("alice", "web1", "root")
    assert inner_target("alice", "web1", "1000:1000") == Target("alice", "web1", "1000:1000")
    # Her own gateway name: the grant's default login, as alice+web1@gw.
    assert inner_target("alice", "web1", "alice") == Target("alice", "web1")
    # Not a login: no target (the inner connection then offers no method).
    for bad in ("", "a b", "x+y", "../x", "a" * 40, "root\n"):
        assert inner_target("alice", "web1", bad) is None, bad


async def test_inner_connection_waits_while_the_outer_socket_is_full() -> None:
    loop = asyncio.get_running_loop()
    outer = CoalescingTransport(Inner(), loop)
    inner = CoalescingTransport(Inner(), loop, upstream=outer)
    assert inner.writable
    outer._inner_paused()  # the outer client's socket is full
    assert not inner.writable, "the inner sessions would keep producing into a full socket"
    waiter = asyncio.ensure_future(inner.wait_writable())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    outer._inner_resumed()
    await asyncio.wait_for(waiter, 1.0)
    assert inner.writable


async def test_inner_connection_waits_for_its_own_channel_too() -> None:
    loop = asyncio.get_running_loop()
    outer = CoalescingTransport(Inner(), loop)
    inner = CoalescingTransport(Inner(), loop, upstream=outer)
    inner._inner_paused()  # the jump channel's send buffer is above its mark
    waiter = asyncio.ensure_future(inner.wait_writable())
    outer._inner_paused()
    inner._inner_resumed()  # the channel drained, but the outer socket is still full
    await asyncio.sleep(0.01)
    assert not waiter.done()
    outer._inner_resumed()
    await asyncio.wait_for(waiter, 1.0)


def test_known_hosts_lines_name_every_host_key() -> None:
    keys = [asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-rsa")]
    lines = known_hosts_lines(keys, "sshgw-containers")
    assert [ln.split()[:2] for ln in lines] == [
        ["sshgw-containers", "ssh-ed25519"],
        ["sshgw-containers", "ssh-rsa"],
    ]
    for line, key in zip(lines, keys, strict=True):
        # What OpenSSH reads back is the same public key.
        parsed = asyncssh.import_public_key(line.split(None, 1)[1])
        assert parsed.get_fingerprint() == key.get_fingerprint()


@pytest.mark.parametrize("port", [-1, 65536])
def test_jump_port_is_a_port_or_zero(port: int) -> None:
    with pytest.raises(InvalidInput, match="jump_port"):
        Settings(jump_port=port)
    assert Settings(jump_port=0).jump_port == 0
