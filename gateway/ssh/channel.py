"""One SSH session channel: its requests, then authorize it and hand it to exec or to files.

The session object is handed to asyncssh synchronously from ``session_requested`` (so no request
can race its set-up); all awaited work (container lookup, grants, exec) happens in ``_run``.
Requests a client can repeat without limit (env, resize, signal, break) are bounded here
(:mod:`gateway.ssh.pacing`). What the channel asks for is :func:`classify_request`; the rights
are decided in :mod:`gateway.ssh.authorize`; a listing is rendered by :mod:`gateway.ssh.listing`,
files are served through :mod:`gateway.ssh.files`, shells and commands run in
:mod:`gateway.ssh.bridge`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.packet import SSHPacket
from asyncssh.stream import SSHServerStreamSession

from gateway.engines import Container
from gateway.engines.base import AmbiguousContainer
from gateway.errors import (
    AccessDenied,
    BadLogin,
    ContainerNotRunning,
    EngineUnavailable,
    GatewayError,
    InvalidInput,
)
from gateway.observe import SessionInfo, SessionTrack
from gateway.observe.logs import conn_id_var, session_id_var
from gateway.policy import Decision, Grant, Subject
from gateway.routing import parse_login
from gateway.ssh.authorize import (
    KIND_RIGHT,
    decide_session,
    decide_write,
    denial,
    deny_reason,
    reachable,
)
from gateway.ssh.bridge import run_exec
from gateway.ssh.context import ByteWriter, SessionContext
from gateway.ssh.files import file_access, start_files
from gateway.ssh.listing import WEB_USAGE, render_listing, render_web_link, web_request
from gateway.ssh.pacing import EnvBudget, EventQueueCap
from gateway.ssh.transport import flow_of
from gateway.store.weblinks import LINK_TTL, WebGrant, digest
from gateway.vocab import DenyReason, EndReason, SessionKind

if TYPE_CHECKING:
    from gateway.sftp.server import ContainerSFTPServer
    from gateway.ssh.context import Gateway, Identity
    from gateway.ssh.server import GatewayConnection

log = logging.getLogger(__name__)

T = TypeVar("T")

EXTENDED_DATA_STDERR = 1
# Channel requests a client can send without limit (see gateway.ssh.pacing):
ENV_MAX_BYTES = 64 * 1024  # names + values of the env entries one channel keeps
EVENTS_PENDING_MAX = 16  # signals and breaks waiting for the session's reader


class GatewaySession(SSHServerStreamSession[bytes]):
    def __init__(self, conn: GatewayConnection) -> None:
        super().__init__(None)
        self.gwconn = conn
        self.gw: Gateway = conn.gw
        self.session_id = uuid.uuid4().hex
        self.gone = asyncio.Event()  # the client went away (or the channel closed)
        self._grants: list[Grant] | None = None
        # What a client may queue with channel requests stays bounded (gateway.ssh.pacing).
        self.events = EventQueueCap(EVENTS_PENDING_MAX)
        self.newest_size: tuple[int, int] | None = None  # (rows, cols) of the last resize
        self._resize_queued = False
        self.dropped_requests = 0
        self.kind: SessionKind | None = None  # known once the session started
        self._ended = False

    def __repr__(self) -> str:
        if self.gone.is_set():
            state = "CLOSED"
        elif self._ended:
            state = "ENDED"
        elif self.kind is not None:
            state = "RUNNING"
        else:
            state = "OPENING"
        ident = self.gwconn.identity
        who = "-"
        if ident is not None:
            who = "+".join(p for p in (ident.user, ident.target.container, ident.target.login) if p)
        kind = self.kind or "session"
        return f"<GatewaySession {self.session_id[:4]}… {kind} {who} [{state}]>"

    @property
    def chan(self) -> asyncssh.SSHServerChannel[bytes]:
        chan = self._chan
        assert isinstance(chan, asyncssh.SSHServerChannel)
        return chan

    def connection_made(self, chan: SSHChannel[bytes]) -> None:
        super().connection_made(chan)
        _cap_env(chan, EnvBudget(self.gw.settings.max_env, ENV_MAX_BYTES), self)

    # Requests a client can repeat without limit: queued for the reader only within bounds.
    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        # Sizes coalesce: the reader applies the newest one; at most one resize is queued.
        self.newest_size = (height, width)
        if self._resize_queued:
            return
        self._resize_queued = True
        super().terminal_size_changed(width, height, pixwidth, pixheight)

    def take_newest_size(self, fallback: tuple[int, int]) -> tuple[int, int]:
        self._resize_queued = False
        return self.newest_size or fallback

    def signal_received(self, signal: str) -> None:
        if self.events.admit():
            super().signal_received(signal)
        else:
            self.dropped("signal")

    def break_received(self, msec: int) -> bool:
        if self.events.admit():
            return bool(super().break_received(msec))
        self.dropped("break")
        return False

    def dropped(self, what: str) -> None:
        """Count (and now and then log) a channel request dropped for coming too fast."""
        self.dropped_requests += 1
        if self.dropped_requests in (1, 100, 10000):
            log.info(
                "conn %s: session %s: %s request dropped (%d so far: too many at once)",
                self.gwconn.conn_id,
                self.session_id[:8],
                what,
                self.dropped_requests,
            )

    # Requests: accept the forms we know; authorization happens in _run with a clear message.
    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        chan = self.chan
        stdin = asyncssh.SSHReader(self, chan)
        stdout = asyncssh.SSHWriter(self, chan)
        stderr = asyncssh.SSHWriter(self, chan, EXTENDED_DATA_STDERR)
        self.gw.tasks.spawn(self._run(stdin, stdout, stderr), name=f"session-{self.session_id[:8]}")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gone.set()
        self.gwconn.session_closed(self)  # its place under max_sessions is free again

    # The session ---------------------------------------------------------------------------

    async def _run(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        chan = self.chan
        ident = self.gwconn.identity
        assert ident is not None
        # This task runs in its own context: every log line it writes carries the ids.
        conn_id_var.set(self.gwconn.conn_id)
        session_id_var.set(self.session_id[:12])
        pty = chan.get_terminal_type() is not None
        kind = classify_request(chan.get_subsystem(), chan.get_command())
        self.kind = kind if ident.target.container is not None else SessionKind.LIST
        command = chan.get_command() if kind in (SessionKind.EXEC, SessionKind.SCP) else None
        status = 1
        try:
            web = web_request(command) if ident.target.container is None else None
            if web is not None:
                status = await self._web_link(ident, web, command, stdout, pty)
            elif ident.target.container is None:
                status = await self._list(ident, stdout, stderr, pty)
            else:
                status = await self._session(ident, kind, command, pty, stdin, stdout, stderr)
        except GatewayError as exc:
            if exc.public_message != exc.user_message:
                log.warning("conn %s: %s", self.gwconn.conn_id, exc.user_message)
            self.say(stderr, exc.public_message, pty)
            status = exc.exit_status
        except asyncio.CancelledError:
            status = 255
            raise
        except Exception:
            log.exception("conn %s: session %s failed", self.gwconn.conn_id, self.session_id[:8])
            self.say(stderr, "internal error (logged on the gateway)", pty)
            status = 1
        finally:
            self._ended = True
            if not self.gone.is_set():
                try:
                    chan.exit(status)
                except Exception as exc:
                    log.debug("exit: %r", exc)

    def say(self, writer: ByteWriter, message: str, pty: bool) -> None:
        """One ``sshgw: …`` line to the client, unless it is gone."""
        if self.gone.is_set():
            return
        line = f"sshgw: {message}" + ("\r\n" if pty else "\n")
        try:
            writer.write(line.encode("utf-8", "replace"))
        except Exception as exc:
            log.debug("write error line: %r", exc)

    def _info(
        self,
        ident: Identity,
        kind: SessionKind,
        container: Container | None,
        login: str | None,
        command: str | None,
        pty: bool,
        record: bool,
    ) -> SessionInfo:
        chan = self.chan
        cols, rows = (chan.get_terminal_size()[:2]) if pty else (0, 0)
        return SessionInfo(
            id=self.session_id,
            conn_id=self.gwconn.conn_id,
            user=ident.user,
            container=container.name if container else None,
            container_id=container.id if container else None,
            login=login,
            kind=kind,
            command=command,
            remote=self.gwconn.remote,
            pty=pty,
            term=chan.get_terminal_type(),
            cols=cols,
            rows=rows,
            record=record,
            connected_at=self.gwconn.accepted_at,
            via=self.gwconn.via,
        )

    async def _list(
        self,
        ident: Identity,
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
        pty: bool,
    ) -> int:
        """``ssh alice@gw``: the containers alice may reach."""
        grants = await grants_rechecked(self.gwconn, ident, SessionKind.LIST)
        track = self.gw.observer.session_started(
            self._info(ident, SessionKind.LIST, None, None, None, pty, False)
        )
        try:
            containers = await self._until_ended(self.gw.engine.list_containers(), track)
            if isinstance(containers, _Ended):
                self.say(stderr, _end_message(track), pty)
                track.end(255, self._end_reason(track))
                return 255
            subject = Subject(ident.user, ident.groups)
            stdout.write(render_listing(subject, grants, containers, pty=pty))
            track.end(0, EndReason.EXIT)
            return 0
        except GatewayError:
            track.end(1, EndReason.ERROR)
            raise

    async def _web_link(
        self,
        ident: Identity,
        arg: str,
        command: str | None,
        stdout: asyncssh.SSHWriter[bytes],
        pty: bool,
    ) -> int:
        """``ssh alice@gw web web1``: a one-time link to a terminal in web1, in the browser
        (served by ``gateway.web.terminal``), for a user who may have a shell there now."""
        base = self.gw.settings.http_public_url
        if not base or self.gw.settings.http_address is None:
            raise InvalidInput("the web terminal is off on this gateway")
        try:
            target = parse_login(f"{ident.user}+{arg}") if arg else None
        except BadLogin as exc:
            raise InvalidInput(f"{exc.user_message}; {WEB_USAGE}") from None
        if target is None or target.container is None:
            raise InvalidInput(WEB_USAGE)
        asked = replace(ident, target=target)
        kind = SessionKind.SHELL
        grants, container = await grants_and_container(self.gwconn, asked, kind, target.container)
        decision = self._authorize(asked, grants, container, kind)
        if not container.running:
            raise ContainerNotRunning(container.name, container.state)
        info = self._info(ident, SessionKind.LIST, container, decision.login, command, pty, False)
        track = self.gw.observer.session_started(info)
        try:
            cred = ident.credential  # re-checked again when the browser's session starts
            proof = cred.key if cred.method == "publickey" else digest(cred.password_hash or "")
            grant = WebGrant(ident.user, container.name, target.login, cred.method, proof or "")
            token = await self.gw.store.create_web_link(grant, LINK_TTL)
        except GatewayError:
            track.end(1, EndReason.ERROR)
            raise
        url = f"{base.rstrip('/')}/web/login#{token}"
        stdout.write(render_web_link(url, container.name, LINK_TTL, pty=pty))
        track.end(0, EndReason.EXIT)
        return 0

    def _authorize(
        self, ident: Identity, grants: list[Grant], container: Container, kind: SessionKind
    ) -> Decision:
        return authorize(self.gwconn, ident, grants, container, kind)

    async def _session(
        self,
        ident: Identity,
        kind: SessionKind,
        command: str | None,
        pty: bool,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> int:
        name = ident.target.container
        assert name is not None
        self._grants, container = await grants_and_container(self.gwconn, ident, kind, name)
        decision = self._authorize(ident, self._grants, container, kind)
        if not container.running:
            raise ContainerNotRunning(container.name, container.state)
        login = decision.login or container.user or "root"
        info = self._info(ident, kind, container, login, command, pty, decision.record)
        track = self.gw.observer.session_started(info)
        ctx = SessionContext(
            ident, kind, command, container, login, decision, track, pty, stdin, stdout, stderr
        )
        try:
            if kind in (SessionKind.SFTP, SessionKind.SCP):
                status = await self._files(ctx, stdin, stdout, stderr)
            else:
                status = await run_exec(self, ctx)
        except GatewayError as exc:
            track.end(exc.exit_status, EndReason.ERROR)
            raise
        except BaseException:
            track.end(None, EndReason.ERROR)
            raise
        return status

    # SFTP and SCP ----------------------------------------------------------------------------

    async def _files(
        self,
        ctx: SessionContext,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> int:
        track = ctx.track
        # Writing is decided for the session's own login, and its paths come from write grants.
        write = decide_write(ctx.ident, self._grants or [], ctx.container, ctx.decision)
        access = file_access(self.gw.engine, ctx, write, self.gw.settings.max_sftp_handles)
        command = None if ctx.kind == SessionKind.SFTP else ctx.command
        server, work = start_files(
            access, self.chan, command, stdin, stdout, stderr, flow_of(self.gwconn.conn)
        )
        if work is None:  # bad scp arguments: asyncssh already answered and exited
            track.end(1, EndReason.ERROR)
            return 1
        if await self._until_ended(work, track, server) is ENDED:
            # Killed, revoked or shutting down: the transfer stopped; unfinished uploads are
            # discarded and the container's file helper is gone.
            if self.chan.get_write_buffer_size() > 0:
                # Unsent file data would hold the channel open for as long as the client takes
                # to read it (a slow scp: minutes): drop it and close now.
                self.chan.abort()
            else:
                self.say(stderr, _end_message(track), False)
            track.end(255, self._end_reason(track))
            return 255
        track.end(0, EndReason.EXIT)
        return 0

    def _end_reason(self, track: SessionTrack) -> EndReason:
        if track.killed.is_set():
            return EndReason.KILLED  # recorded as the track's kill reason (KILLED or REVOKED)
        return EndReason.SHUTDOWN if self.gw.stopping.is_set() else EndReason.CLIENT_GONE

    async def _until_ended(
        self,
        work: Awaitable[T],
        track: SessionTrack,
        server: ContainerSFTPServer | None = None,
    ) -> T | _Ended:
        """Run ``work`` until it finishes (its result) or the session is ended (``ENDED``).

        An administrator's kill, a revocation and gateway shutdown end every kind of session
        (shell and exec end in ``_Bridge``): the work is cancelled, a file session's open
        files are discarded and its container helper stopped.
        """
        task = asyncio.ensure_future(work)
        kill = asyncio.ensure_future(track.killed.wait())
        stop = asyncio.ensure_future(self.gw.stopping.wait())
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait({task, kill, stop, gone}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            if server is not None:
                server.ending()  # what closes now was cut short: discard, never commit
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
            if server is not None:
                try:
                    await asyncio.wait_for(server.end_session(), timeout=5.0)
                except (TimeoutError, GatewayError) as exc:
                    log.info("session %s: file helper: %r", self.session_id[:8], exc)
            return ENDED
        finally:
            for t in (task, kill, stop, gone):
                if not t.done():
                    t.cancel()

    # Shell and exec ----------------------------------------------------------------------


class Peer(Protocol):
    """Who a session serves, as the checks below need it: an SSH connection
    (:class:`~gateway.ssh.server.GatewayConnection`) or a browser's WebSocket."""

    gw: Gateway
    conn_id: str  # what the observer re-checks the credential under
    remote: str


def authorize(
    conn: Peer, ident: Identity, grants: list[Grant], container: Container, kind: SessionKind
) -> Decision:
    """The grants' decision on a session of ``kind``; a denial is counted, logged and raised
    as the error the user sees."""
    right = KIND_RIGHT[kind]
    decision = decide_session(ident, grants, container, right)
    if decision.allowed:
        return decision
    reason = deny_reason(decision)
    conn.gw.observer.access_denied(
        reason, ident.user, container.name, right, conn.remote, kind=kind
    )
    log.info(
        "conn %s: deny %s %s on %s: %s",
        conn.conn_id,
        ident.user,
        right,
        container.name,
        decision.message,
    )
    raise denial(decision, ident, container)


async def _recheck(conn: Peer, ident: Identity, kind: SessionKind | None) -> None:
    """The connection's user and key or password must still be valid for a new channel
    (``kind``: the session's, None for a ProxyJump channel)."""
    gw = conn.gw
    reason = await gw.observer.recheck(conn.conn_id, ident.user)
    if reason is not None:
        gw.observer.access_denied(
            DenyReason.REVOKED, ident.user, ident.target.container, "-", conn.remote, kind=kind
        )
        raise AccessDenied(f"access revoked ({reason})")


async def grants_rechecked(conn: Peer, ident: Identity, kind: SessionKind | None) -> list[Grant]:
    """The user's grants, read afresh, once the credential is re-checked (concurrently)."""
    check = asyncio.ensure_future(_recheck(conn, ident, kind))
    try:
        grants = await conn.gw.store.grants_for(ident.user)
    finally:
        if not check.done():
            await asyncio.wait({check})
    check.result()
    return grants


async def grants_and_container(
    conn: Peer, ident: Identity, kind: SessionKind | None, name: str
) -> tuple[list[Grant], Container]:
    """The grants (credential re-checked) and the container ``name``, looked up at once."""
    gw = conn.gw
    grants_task = asyncio.ensure_future(grants_rechecked(conn, ident, kind))
    try:
        container = await gw.engine.resolve(name)
    except EngineUnavailable:
        gw.observer.docker_error("inspect")
        raise
    except AmbiguousContainer as exc:
        # On several engines: named only where a grant reaches it (else "no such container").
        raise exc.naming(reachable(ident, await grants_task, exc.candidates)) from None
    finally:
        if not grants_task.done():
            await asyncio.wait({grants_task})
        grants_task.exception()  # retrieved here; raised by result() below
    return grants_task.result(), container


def _cap_env(chan: SSHChannel[bytes], budget: EnvBudget, session: GatewaySession) -> None:
    """Refuse env requests beyond ``budget``; asyncssh itself keeps every one it is sent.

    asyncssh dispatches a channel request to the channel's ``_process_env_request`` method
    (looked up by name on the instance); this wraps it on this one channel.
    """
    process = getattr(chan, "_process_env_request", None)
    if process is None:
        return

    def process_env(packet: SSHPacket) -> bool:
        peek = SSHPacket(packet.get_remaining_payload())
        key, value = peek.get_string(), peek.get_string()
        if not budget.admit(key, value):
            session.dropped("env")
            return False
        return bool(process(packet))

    setattr(chan, "_process_env_request", process_env)  # noqa: B010 (an instance attribute)


class _Ended:
    """What :meth:`GatewaySession._until_ended` returns when the session was ended."""


ENDED = _Ended()


def _end_message(track: SessionTrack) -> str:
    if track.killed.is_set():
        if track.kill_reason == EndReason.KILLED:
            return "session terminated by an administrator"
        return "session ended: your access was revoked"
    return "the gateway is shutting down; session ended"


def classify_request(subsystem: str | None, command: str | None) -> SessionKind:
    """The kind of a session channel: SFTP (the subsystem), SCP (``scp -t|-f …``, which the
    gateway answers itself), EXEC (any other command) or SHELL."""
    if subsystem == "sftp":
        return SessionKind.SFTP
    if command is not None and command.startswith("scp ") and _is_scp_server(command):
        return SessionKind.SCP
    if command is not None:
        return SessionKind.EXEC
    return SessionKind.SHELL


def _is_scp_server(command: str) -> bool:
    args = command.split()
    return any(a.startswith("-") and ("t" in a or "f" in a) for a in args[1:] if a != "--")
