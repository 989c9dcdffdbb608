"""Local port forwarding into containers: ``ssh -L`` and ``ssh -D`` (``direct-tcpip`` channels).

``GatewayConnection.connection_requested`` hands a channel to :func:`forward_requested`, which
takes the channel's place under ``max_sessions`` at once and returns a coroutine; asyncssh
confirms the channel only once it returns (a :class:`asyncssh.ChannelOpenError` refuses it, and
OpenSSH prints "open failed: REASON"). Before that, in order: the login names a container, the
credential is re-checked and the grants read while the container is looked up, the ``forward``
right is decided for the port (:func:`gateway.ssh.authorize.decide_forward`), the destination is
checked (:func:`gateway.ssh.relay.plan_dest`: the container itself, never anything else) and
the port is reached: the container's address from the gateway first, else a relay exec'd in the
container (:mod:`gateway.ssh.relay`), else one error naming what is missing.

A confirmed forward is a session of kind ``forward`` (:class:`~gateway.observe.SessionTrack`:
audit start and end with bytes and duration, metrics, ``sessions kill``, revocation, shutdown).
Bytes flow both ways with back-pressure: the client's data is read only as fast as the service
takes it (the channel's window closes meanwhile), the service's only while the channel's window
and the client's socket have room (:func:`gateway.ssh.transport.flow_of`); each side holds a
bounded buffer. EOF travels each way on its own (half-close); a relay's output ending ends the
forward (the process is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import asyncssh
from asyncssh.stream import SSHTCPStreamSession

from gateway.engines.base import STDERR
from gateway.errors import ContainerNotRunning, GatewayError
from gateway.observe import SessionInfo, SessionTrack
from gateway.observe.logs import conn_id_var, session_id_var
from gateway.policy import Right
from gateway.ssh.authorize import decide_forward, denial, deny_reason
from gateway.ssh.channel import grants_and_container
from gateway.ssh.relay import (
    RELAY_NONE,
    RELAY_TOOLS,
    Dest,
    DestRefused,
    plan_dest,
    relay_argv,
    relay_failure,
    scan_relay_mark,
)
from gateway.ssh.transport import flow_of
from gateway.ssh.wrapper import PID_MARK_END, kill_argv, new_nonce
from gateway.vocab import DenyReason, EndReason, SessionKind

if TYPE_CHECKING:
    from gateway.engines import Container, Engine, ExecStream
    from gateway.ssh.context import Identity
    from gateway.ssh.server import GatewayConnection

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # largest read from either side
DIRECT_LIMIT = 256 * 1024  # the service's socket: read-ahead before its reading pauses
DIRECT_CONNECT_TIMEOUT = 2.0  # connecting to the container's address from the gateway
RELAY_START_TIMEOUT = 15.0  # the relay's marker (exec start and tool lookup)
RELAY_EARLY_MAX = 1 << 20  # service output held while the relay's marker is awaited
RELAY_CONNECT_WAIT = 0.15  # nc, socat: how long a failed connect is waited for before confirming
RELAY_GRACE = 2.0  # after the client closed: how long the relay may take to end on its own
STDERR_KEEP = 4096  # relay stderr kept for the log


def _refused(reason: str) -> asyncssh.ChannelOpenError:
    return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)


class Unreachable(GatewayError):
    """The port cannot be reached in the container (nothing answers, no relay tool)."""


def forward_requested(
    conn: GatewayConnection, dest_host: str, dest_port: int
) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
    """A ``direct-tcpip`` channel: its place under ``max_sessions`` is taken now; the returned
    coroutine authorizes and connects it (asyncssh confirms the channel when it returns)."""
    try:
        conn.channel_room("forward")
    except asyncssh.ChannelOpenError:
        conn.gw.observer.forward_opened("refused")
        raise
    fwd = ForwardChannel(conn, dest_host, dest_port)
    conn.open_channels.add(fwd)
    return fwd.open()


class ForwardChannel(SSHTCPStreamSession[bytes]):
    """One forwarded connection into a container (asyncssh's session of the channel)."""

    def __init__(self, conn: GatewayConnection, dest_host: str, dest_port: int) -> None:
        super().__init__(None)
        self.gwconn = conn
        self.gw = conn.gw
        self.dest_host = dest_host
        self.dest_port = dest_port
        self.session_id = uuid.uuid4().hex
        self.gone = asyncio.Event()  # the channel closed
        self.lost = False  # ... because the connection was lost (not closed by the client)
        self.pipe: DirectPipe | RelayPipe | None = None
        self.info: SessionInfo | None = None

    def __repr__(self) -> str:
        state = "CLOSED" if self.gone.is_set() else ("OPEN" if self.pipe else "OPENING")
        via = f" via {self.pipe.via}" if self.pipe is not None else ""
        return (
            f"<ForwardChannel {self.session_id[:4]}… {self.dest_host}:{self.dest_port}{via} "
            f"[{state}]>"
        )

    # Before the channel is confirmed ----------------------------------------------------------

    async def open(self) -> ForwardChannel:
        conn_id_var.set(self.gwconn.conn_id)
        session_id_var.set(self.session_id[:12])
        try:
            await self._prepare()
            conn = self.gwconn.conn
            if conn is None or conn.is_closed():
                raise _refused("the connection closed")
            return self
        except BaseException as exc:
            self.gwconn.open_channels.discard(self)
            if self.pipe is not None:
                await self.pipe.finish()
                await self.pipe.reap(grace=0.0)
            if isinstance(exc, asyncssh.ChannelOpenError):
                raise
            if isinstance(exc, Unreachable):
                self.gw.observer.forward_opened("unreachable")
                log.info("conn %s: forward refused: %s", self.gwconn.conn_id, exc.user_message)
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_CONNECT_FAILED, exc.public_message
                ) from None
            if isinstance(exc, GatewayError):
                self.gw.observer.forward_opened("error")
                if exc.public_message != exc.user_message:
                    log.warning("conn %s: forward: %s", self.gwconn.conn_id, exc.user_message)
                raise _refused(exc.public_message) from None
            if isinstance(exc, Exception):
                self.gw.observer.forward_opened("error")
                log.exception("conn %s: forward failed", self.gwconn.conn_id)
                raise _refused("internal error (logged on the gateway)") from None
            raise

    async def _prepare(self) -> None:
        ident = self.gwconn.identity
        if ident is None:
            raise _refused("not authenticated")
        name = ident.target.container
        if name is None:
            self.gw.observer.forward_opened("refused")
            raise _refused(
                "forwarding needs a container in the login name (USER+CONTAINER@gateway)"
            )
        grants, container = await grants_and_container(
            self.gwconn, ident, SessionKind.FORWARD, name
        )
        decision = decide_forward(ident, grants, container, self.dest_port)
        if not decision.allowed:
            self._denied(ident, container.name, deny_reason(decision), decision.message)
            raise _refused(denial(decision, ident, container).public_message)
        if not container.running:
            raise ContainerNotRunning(container.name, container.state)
        try:
            dest = plan_dest(
                self.dest_host,
                names=(container.name, name),
                addresses=container.addresses,
                network_mode=container.network_mode,
                host_network=self.gw.settings.forward_host_network,
            )
        except DestRefused as exc:
            self._denied(ident, container.name, DenyReason.DEST_NOT_ALLOWED, str(exc))
            raise _refused(
                f"forwarding to {self.dest_host} is not allowed in {container.name}: {exc}"
            ) from None
        login = decision.login or container.user or "root"
        self.pipe = await _connect(self.gw.engine, container, dest, self.dest_port, login)
        self.info = SessionInfo(
            id=self.session_id,
            conn_id=self.gwconn.conn_id,
            user=ident.user,
            container=container.name,
            container_id=container.id,
            login=login if self.pipe.via != "direct" else None,
            kind=SessionKind.FORWARD,
            command=f"{self.dest_host}:{self.dest_port} via {self.pipe.via}",
            remote=self.gwconn.remote,
            pty=False,
            term=None,
            cols=0,
            rows=0,
            record=False,
            connected_at=self.gwconn.accepted_at,
            port=self.dest_port,
        )
        self.gw.observer.forward_opened("ok", self.pipe.via)

    def _denied(self, ident: Identity, container: str, reason: DenyReason, why: str) -> None:
        self.gw.observer.forward_opened("denied")
        self.gw.observer.access_denied(
            reason, ident.user, container, Right.FORWARD, self.gwconn.remote, SessionKind.FORWARD
        )
        log.info(
            "conn %s: deny forward %s -> %s:%d: %s",
            self.gwconn.conn_id,
            ident.user,
            self.dest_host,
            self.dest_port,
            why,
        )

    # The confirmed channel --------------------------------------------------------------------

    def session_started(self) -> None:
        chan = self._chan
        assert chan is not None
        reader = asyncssh.SSHReader[bytes](self, chan)
        writer = asyncssh.SSHWriter[bytes](self, chan)
        self.gw.tasks.spawn(self._run(reader, writer), name=f"forward-{self.session_id[:8]}")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost = exc is not None
        self.gone.set()
        self.gwconn.open_channels.discard(self)  # its place under max_sessions is free again

    async def _run(
        self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
    ) -> None:
        conn_id_var.set(self.gwconn.conn_id)
        session_id_var.set(self.session_id[:12])
        pipe, info = self.pipe, self.info
        assert pipe is not None and info is not None
        track = self.gw.observer.session_started(info)
        up = asyncio.ensure_future(_up(reader, pipe, track))
        down = asyncio.ensure_future(_down(writer, pipe, track))
        waits = {
            asyncio.ensure_future(track.killed.wait()),
            asyncio.ensure_future(self.gw.stopping.wait()),
            asyncio.ensure_future(self.gone.wait()),
        }
        reason = EndReason.EXIT
        try:
            pending = {up, down}
            while pending:
                await asyncio.wait(pending | waits, return_when=asyncio.FIRST_COMPLETED)
                pending = {t for t in pending if not t.done()}
                if down.done() and isinstance(pipe, RelayPipe):
                    break  # the relay process ended: nothing more flows either way
                if any(w.done() for w in waits):
                    reason = self._end_reason(track)
                    break
        finally:
            for t in (up, down, *waits):
                if not t.done():
                    t.cancel()
            await asyncio.wait({up, down}, timeout=5.0)
            if not self.gone.is_set():
                with contextlib.suppress(Exception):
                    writer.close()
            track.end(await pipe.finish(), reason)
            # A relay still running after the client closed gets a moment to end by itself;
            # after a kill, a revocation or at shutdown it is ended at once.
            ended = reason in (EndReason.EXIT, EndReason.CLIENT_GONE)
            await pipe.reap(grace=RELAY_GRACE if ended else 0.0)

    def _end_reason(self, track: SessionTrack) -> EndReason:
        if track.killed.is_set():
            return EndReason.KILLED  # the track records KILLED or REVOKED
        if self.gw.stopping.is_set():
            return EndReason.SHUTDOWN
        # The client closing the channel is how a forward normally ends.
        return EndReason.CLIENT_GONE if self.lost else EndReason.EXIT


async def _up(
    reader: asyncssh.SSHReader[bytes], pipe: DirectPipe | RelayPipe, track: SessionTrack
) -> None:
    """Client → service: read the channel only as fast as the service takes it."""
    try:
        while data := await reader.read(CHUNK):
            track.to_container(len(data))
            await pipe.write(data)
    except (OSError, asyncssh.Error, GatewayError) as exc:
        log.debug("forward: to the service: %r", exc)
        return
    pipe.write_eof()  # the client's EOF: the service sees it, its answer keeps flowing


async def _down(
    writer: asyncssh.SSHWriter[bytes], pipe: DirectPipe | RelayPipe, track: SessionTrack
) -> None:
    """Service → client: read the service only while the channel and the client's socket have
    room."""
    flow = flow_of(writer.channel.get_connection())
    try:
        while (data := await pipe.read()) is not None:
            track.from_container(data)
            writer.write(data)
            await writer.drain()
            if flow is not None and not flow.writable:
                await flow.wait_writable()
        writer.write_eof()
    except (OSError, asyncssh.Error, GatewayError) as exc:
        log.debug("forward: to the client: %r", exc)


# Reaching the port ------------------------------------------------------------------------------


async def _connect(
    engine: Engine, container: Container, dest: Dest, port: int, login: str
) -> DirectPipe | RelayPipe:
    """The first way to the port that works: the container's address, then a relay."""
    direct_why = "it has no address the gateway can reach"
    for addr in dest.direct:
        if UNROUTABLE.holds(addr):
            direct_why = f"no answer from {addr} (not routed from the gateway)"
            continue
        try:
            async with asyncio.timeout(DIRECT_CONNECT_TIMEOUT):
                r, w = await asyncio.open_connection(addr, port, limit=DIRECT_LIMIT)
            return DirectPipe(r, w)
        except TimeoutError:
            UNROUTABLE.add(addr)  # not again for a while: each forward would wait as long
            direct_why = f"no answer from {addr} within {DIRECT_CONNECT_TIMEOUT:g} s"
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else exc.__class__.__name__
            direct_why = f"{why.lower()} on {addr}"
    where = f"port {port} in container {container.name}"
    try:
        return await _start_relay(engine, container, dest.inside, port, login)
    except _NoRelayTool:
        tools = ", ".join(RELAY_TOOLS)
        raise Unreachable(
            f"cannot reach {where}: {direct_why}, and the image has no relay tool "
            f"({tools}) to reach {dest.inside} inside it"
        ) from None
    except _RelayFailed as exc:
        raise Unreachable(f"cannot reach {where}: {direct_why}; relay: {exc}") from None


class Unroutable:
    """Container addresses that did not answer a connect (a network the gateway is not on):
    skipped for ``ttl`` seconds; at most ``size`` remembered, the oldest forgotten first."""

    def __init__(self, ttl: float = 60.0, size: int = 1024) -> None:
        self.ttl = ttl
        self.size = size
        self._until: dict[str, float] = {}

    def holds(self, addr: str) -> bool:
        until = self._until.get(addr)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._until[addr]
        return False

    def add(self, addr: str) -> None:
        self._until.pop(addr, None)
        if len(self._until) >= self.size:
            del self._until[next(iter(self._until))]
        self._until[addr] = time.monotonic() + self.ttl


UNROUTABLE = Unroutable()


class _NoRelayTool(Exception):
    pass


class _RelayFailed(Exception):
    pass


async def _start_relay(
    engine: Engine, container: Container, inside: str, port: int, login: str
) -> RelayPipe:
    nonce = new_nonce()
    stream = await engine.exec(container.id, relay_argv(inside, port, nonce), user=login)
    err = bytearray()
    early: list[bytes] = []
    held = 0
    try:
        async with asyncio.timeout(RELAY_START_TIMEOUT):
            while True:
                msg = await stream.read()
                if msg is None:
                    raise _RelayFailed(relay_failure(bytes(err), b"".join(early)))
                kind, data = msg
                if kind != STDERR:
                    held += len(data)
                    if held > RELAY_EARLY_MAX:
                        raise _RelayFailed("too much output before the relay started")
                    early.append(data)
                    continue
                if len(err) < STDERR_KEEP:
                    err += data[: STDERR_KEEP - len(err)]
                mark = scan_relay_mark(bytes(err), nonce)
                if mark.state == "found":
                    break
    except TimeoutError:
        await stream.close()
        raise _RelayFailed(f"did not start within {RELAY_START_TIMEOUT:g} s") from None
    except BaseException:
        await stream.close()
        raise
    if mark.tool == RELAY_NONE:
        await stream.close()
        raise _NoRelayTool()
    if mark.tool != "bash":  # bash's marker comes once connected; nc's and socat's before
        await _connected(stream, err, early)
    return RelayPipe(engine, container, login, stream, mark.pid, mark.tool, early)


async def _connected(stream: ExecStream, err: bytearray, early: list[bytes]) -> None:
    """Give the relay ``RELAY_CONNECT_WAIT`` to fail to connect (it ends with the tool's error)
    before the channel is confirmed; the service speaking first, or silence, means connected."""
    try:
        async with asyncio.timeout(RELAY_CONNECT_WAIT):
            while (msg := await stream.read()) is not None:
                kind, data = msg
                if kind != STDERR:
                    early.append(data)
                    return
                if len(err) < STDERR_KEEP:
                    err += data[: STDERR_KEEP - len(err)]
    except TimeoutError:
        return
    await stream.close()
    text = bytes(err).rpartition(PID_MARK_END)[2]  # what the tool said after the marker
    raise _RelayFailed(relay_failure(text, b""))


class DirectPipe:
    """A TCP connection from the gateway to the container's address."""

    via = "direct"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes | None:
        try:
            data = await self._reader.read(CHUNK)
        except OSError:
            return None
        return data or None

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def write_eof(self) -> None:
        with contextlib.suppress(OSError):
            if self._writer.can_write_eof() and not self._writer.is_closing():
                self._writer.write_eof()

    async def finish(self) -> int | None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        return None

    async def reap(self, grace: float) -> None:
        return None


class RelayPipe:
    """A relay process in the container (``nc``, ``socat`` or ``bash``), its stdin and stdout."""

    def __init__(
        self,
        engine: Engine,
        container: Container,
        login: str,
        stream: ExecStream,
        pid: int,
        tool: str,
        early: list[bytes],
    ) -> None:
        self.engine = engine
        self.container = container
        self.login = login
        self.stream = stream
        self.pid = pid
        self.tool = tool
        self._early = early
        self._ended = False  # the output ended: the process is gone
        self.exit_status: int | None = None
        self.stderr = bytearray()
        self.via = f"relay ({tool})"

    async def read(self) -> bytes | None:
        if self._early:
            return self._early.pop(0)
        while True:
            msg = await self.stream.read()
            if msg is None:
                self._ended = True
                return None
            kind, data = msg
            if kind == STDERR:
                if len(self.stderr) < STDERR_KEEP:
                    self.stderr += data[: STDERR_KEEP - len(self.stderr)]
                continue
            return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)

    def write_eof(self) -> None:
        self.stream.write_eof()

    async def finish(self) -> int | None:
        """Close the stream; the relay's exit status when it has ended."""
        if self._ended:
            with contextlib.suppress(GatewayError):
                self.exit_status = await self.stream.wait(timeout=2.0)
        else:
            self.stream.write_eof()
        await self.stream.close()
        if self.stderr:
            log.debug("relay %s stderr: %r", self.tool, bytes(self.stderr[:200]))
        return self.exit_status

    async def reap(self, grace: float) -> None:
        """End the relay's process group unless it ended by itself within ``grace``."""
        if self._ended:
            return
        try:
            await asyncio.sleep(grace)
            info = await self.engine.inspect_exec(self.stream.exec_id)
            if not info.get("Running"):
                return
            code, _, _ = await self.engine.run(
                self.container.id, kill_argv(self.pid, "TERM"), user=self.login, timeout=10.0
            )
            log.debug("relay %s (pid %d) ended: kill exited %d", self.tool, self.pid, code)
        except GatewayError as exc:
            log.info("relay %s (pid %d) not ended: %s", self.tool, self.pid, exc.user_message)
