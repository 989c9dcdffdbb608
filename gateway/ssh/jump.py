"""ProxyJump in process: ``ssh -J alice@gw root@web1``.

The client, authenticated as ``alice`` on the *outer* connection, opens a ``direct-tcpip``
channel to ``web1`` on the jump port (``SSHGW_JUMP_PORT``, 22). The gateway checks alice's grants
for ``web1`` (refused: the channel open fails with the reason), then serves an *inner* SSH
connection itself over that channel: a :class:`JumpConnection`, which is a
:class:`~gateway.ssh.server.GatewayConnection` whose identity is the outer one with the target
``alice+web1+LOGIN`` (``LOGIN`` is the inner user name; alice's own name means the grant's
default login). From there every session is the ordinary path (``channel.GatewaySession``):
shell, exec, SFTP, SCP, rights, path rules, recording, audit, kill and revocation.

The inner connection needs no authentication of its own: its transport is a channel of alice's
authenticated outer connection, so whoever speaks on it is alice (asyncssh's ``begin_auth``
returning False: the client's ``none`` method succeeds). See docs/SECURITY.md.

Bounds: the channel is the inner connection's transport (:class:`ChannelTransport`); it
reports the channel's send buffer and the outer socket to the inner connection's flow control
(:mod:`gateway.ssh.transport`), so the inner sessions' producers wait for the client exactly as
on a direct connection. A jump channel takes one place under ``max_sessions`` of the outer
connection, and every session inside it takes one more from the same count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel, SSHTCPChannel

from gateway.errors import ContainerNotRunning, GatewayError, NoSuchContainer
from gateway.observe.logs import conn_id_var
from gateway.policy import Subject, access
from gateway.routing import CONTAINER_RE, LOGIN_RE, Target
from gateway.ssh.authorize import policy_target
from gateway.ssh.channel import grants_and_container
from gateway.ssh.context import Identity
from gateway.ssh.server import GatewayConnection
from gateway.ssh.transport import coalesce_writes, flow_of
from gateway.vocab import DenyReason

log = logging.getLogger(__name__)

VIA = "proxyjump"  # how the audit trail marks what came through a jump
JUMP_RIGHT = "proxyjump"  # what a refused jump is audited as (the sessions then need their own)


class Jumps:
    """Opens jump channels; made once by ``app`` with the listener's SSH options."""

    def __init__(self, **ssh_options: Any) -> None:
        # The inner connections get the listener's options (host keys, algorithms, encoding,
        # login timeout…); only the server object differs per connection.
        self._base = asyncssh.SSHServerConnectionOptions(
            server_factory=lambda: None, keepalive_interval=None, **ssh_options
        )

    def open(
        self, outer: GatewayConnection, dest_host: str
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        """What ``connection_requested`` returns for a channel to ``dest_host`` on the jump port:
        asyncssh awaits it, and a :class:`asyncssh.ChannelOpenError` refuses the channel."""
        return self._open(outer, dest_host)

    async def _open(self, outer: GatewayConnection, name: str) -> asyncssh.SSHTCPSession[bytes]:
        if isinstance(outer, JumpConnection):
            raise _refused("no ProxyJump from inside a ProxyJump connection")
        ident = outer.identity
        if ident is None:
            raise _refused("not authenticated")
        if not CONTAINER_RE.fullmatch(name):
            raise _refused(f"no such container, or access denied: {name[:64]!r}")
        outer.channel_room(VIA)
        try:
            await _admit(outer, ident, name)
        except GatewayError as exc:
            if exc.public_message != exc.user_message:
                log.warning("conn %s: proxyjump to %s: %s", outer.conn_id, name, exc.user_message)
            raise _refused(exc.public_message) from None
        outer.channel_room(VIA)  # again: other channels may have opened meanwhile
        if outer.conn is None or outer.conn.is_closed():
            raise _refused("connection closed")  # asyncssh would drop the session silently
        inner = JumpConnection(outer, name)
        options = asyncssh.SSHServerConnectionOptions(self._base, server_factory=lambda: inner)
        tunnel = JumpTunnel(outer, inner, asyncssh.SSHServerConnection(_loop(), options))
        log.info("conn %s: proxyjump %s to %s (%s)", outer.conn_id, ident.user, name, inner.jump_id)
        return tunnel


async def _admit(outer: GatewayConnection, ident: Identity, name: str) -> None:
    """Alice's credential is still valid and a live grant gives her some right on ``name``
    (each session then decides its own right); the container runs. Raises GatewayError."""
    gw = outer.gw
    try:
        grants, container = await grants_and_container(outer, ident, None, name)
    except NoSuchContainer:
        grants, container = [], None
    if (
        container is None
        or access(Subject(ident.user, ident.groups), grants, policy_target(container)) is None
    ):
        gw.observer.access_denied(DenyReason.NO_GRANT, ident.user, name, JUMP_RIGHT, outer.remote)
        log.info("conn %s: deny proxyjump %s to %s", outer.conn_id, ident.user, name)
        raise NoSuchContainer(name)
    if not container.running:
        raise ContainerNotRunning(container.name, container.state)


def _refused(reason: str) -> asyncssh.ChannelOpenError:
    return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def inner_target(user: str, container: str, inner_name: str) -> Target | None:
    """The target of a jump connection to ``container`` whose client sent ``inner_name``: the
    login inside the container, or the grant's default login when it is the gateway user's own
    name (``ssh -J alice@gw web1`` from alice's account). None: not a login name."""
    if inner_name == user:
        return Target(user, container)
    if not LOGIN_RE.fullmatch(inner_name):
        return None
    return Target(user, container, inner_name)


class JumpConnection(GatewayConnection):
    """The inner connection of a jump: authenticated by the outer one, into one container."""

    def __init__(self, outer: GatewayConnection, container: str) -> None:
        super().__init__(outer.gw)
        self.outer = outer
        self.container = container
        self.via = VIA
        # Its sessions belong to the outer connection, for the observer: their rows, the
        # re-check of the credential for every channel, and revocation, which ends them with
        # their message before it closes the outer connection (and with it this one).
        self.jump_id = self.conn_id
        self.conn_id = outer.conn_id
        self.remote, self.source = outer.remote, outer.source
        self.accepted_at = outer.accepted_at
        # One allowance for the outer connection, its jumps and every session inside them.
        self.open_channels = outer.open_channels
        self._target: Target | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        # No startup slot and no failure counting: the outer connection is authenticated,
        # and this one cannot fail to (a malformed login name only gets no methods).
        self.conn = conn
        coalesce_writes(conn, self.gw.settings.write_buffer_high)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True  # the outer connection stays registered with the observer
        log.debug("conn %s: proxyjump %s closed: %r", self.conn_id, self.jump_id, exc)

    async def begin_auth(self, username: str) -> bool:
        conn_id_var.set(self.conn_id)
        outer = self.outer.identity
        assert outer is not None
        self._target = inner_target(outer.user, self.container, username)
        if self._target is None:
            self._banner(
                f"sshgw: malformed login {username[:64]!r}: the user name of a ProxyJump "
                "host is the login inside the container"
            )
            return True  # and no method is offered: the client gives up
        return False  # authenticated by the outer connection

    def public_key_auth_supported(self) -> bool:
        return False

    def password_auth_supported(self) -> bool:
        return False

    def auth_completed(self) -> None:
        outer, target = self.outer.identity, self._target
        assert outer is not None and target is not None
        credential = outer.credential
        self.identity = Identity(outer.user, outer.groups, target, credential, via=VIA)
        self.gw.observer.auth_attempt(VIA, True, outer.user, self.remote)
        log.info(
            "conn %s: %s via proxyjump %s into %s as %s",
            self.conn_id,
            outer.user,
            self.jump_id,
            self.container,
            target.login or "the default login",
        )


class ChannelTransport(asyncio.Transport):
    """The outer connection's jump channel as the inner connection's transport.

    ``upstream`` is the outer connection's flow control: the inner connection's own
    (:func:`gateway.ssh.transport.coalesce_writes`) also waits for the outer socket.
    """

    def __init__(
        self,
        chan: SSHTCPChannel[bytes],
        protocol: asyncssh.SSHServerConnection,
        upstream: object,
    ) -> None:
        super().__init__()
        self._chan = chan
        self._protocol = protocol
        self.upstream = upstream

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._chan.is_closing():
            return
        try:
            self._chan.write(bytes(data))
        except (BrokenPipeError, OSError) as exc:  # the outer channel closed meanwhile
            log.debug("jump channel write: %r", exc)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if not self._chan.is_closing():
            self._chan.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._chan.close()

    def abort(self) -> None:
        self._chan.abort()

    def is_closing(self) -> bool:
        return self._chan.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return None  # no socket options to set on a channel
        return self._chan.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("a jump channel carries one connection")

    def pause_reading(self) -> None:
        self._chan.pause_reading()

    def resume_reading(self) -> None:
        self._chan.resume_reading()

    def is_reading(self) -> bool:
        return not self._chan.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._chan.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._chan.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)


class JumpTunnel(asyncssh.SSHTCPSession[bytes]):
    """The outer channel's session: hands the channel's bytes and events to the inner
    connection, and keeps the channel's place under the outer connection's ``max_sessions``."""

    def __init__(
        self,
        outer: GatewayConnection,
        inner: JumpConnection,
        conn: asyncssh.SSHServerConnection,
    ) -> None:
        self._outer = outer
        self._inner = inner
        self._conn = conn
        self._places: set[object] = outer.open_channels
        self._places.add(self)

    def connection_made(self, chan: SSHChannel[bytes]) -> None:
        assert isinstance(chan, SSHTCPChannel)
        transport = ChannelTransport(chan, self._conn, flow_of(self._outer.conn))
        self._conn.connection_made(transport)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._conn.data_received(data)

    def eof_received(self) -> bool:
        self._conn.eof_received()
        return False

    def pause_writing(self) -> None:
        self._conn.pause_writing()  # the inner connection's flow control (coalesce_writes)

    def resume_writing(self) -> None:
        self._conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._places.discard(self)
        self._conn.connection_lost(exc)


__all__: Sequence[str] = (
    "ChannelTransport",
    "JumpConnection",
    "JumpTunnel",
    "Jumps",
    "inner_target",
)
