"""One SSH session channel: authorize it, then bridge it to docker exec or to the SFTP server.

The session object is handed to asyncssh synchronously from ``session_requested`` (so no request
can race its set-up); all awaited work (container lookup, grants, exec) happens in ``_run``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, TypeVar

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.packet import SSHPacket
from asyncssh.stream import SSHServerStreamSession

from gateway.engines.docker import STDERR, STDOUT, Container, ExecStream
from gateway.errors import (
    AccessDenied,
    ContainerNotRunning,
    EngineUnavailable,
    ExecFailed,
    GatewayError,
    NoSuchContainer,
)
from gateway.observe import SessionInfo, SessionTrack
from gateway.observe.logs import conn_id_var, session_id_var
from gateway.policy import (
    Decision,
    DenyReason,
    Grant,
    Right,
    Subject,
    access,
    decide,
    decide_as,
)
from gateway.policy import Target as PolicyTarget
from gateway.safetext import literal
from gateway.ssh.context import SessionContext
from gateway.ssh.pacing import EnvBudget, EventQueueCap, TokenBucket
from gateway.ssh.pidmark import PidMarkScanner
from gateway.ssh.transport import flow_of
from gateway.ssh.wrapper import (
    alive_argv,
    explain_start_failure,
    kill_argv,
    new_nonce,
    wrapper_argv,
)

if TYPE_CHECKING:
    from gateway.sftp.server import ContainerSFTPServer
    from gateway.ssh.context import Gateway, Identity
    from gateway.ssh.server import GatewayConnection

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_SIZE = 32 * 1024
EXTENDED_DATA_STDERR = 1
# Channel requests a client can send without limit (see gateway.ssh.pacing):
ENV_MAX_BYTES = 64 * 1024  # names + values of the env entries one channel keeps
EVENTS_PENDING_MAX = 16  # signals and breaks waiting for the session's reader
RESIZE_RATE, RESIZE_BURST = 10.0, 10.0  # terminal resizes passed on to the engine, per second
SIGNAL_RATE, SIGNAL_BURST = 2.0, 8.0  # signals delivered (each is an exec in the container)


class GatewaySession(SSHServerStreamSession[bytes]):
    def __init__(self, conn: GatewayConnection) -> None:
        super().__init__(None)
        self.gwconn = conn
        self.gw: Gateway = conn.gw
        self.session_id = uuid.uuid4().hex
        self._gone = asyncio.Event()
        self._grants: list[Grant] | None = None
        # What a client may queue with channel requests stays bounded (gateway.ssh.pacing).
        self.events = EventQueueCap(EVENTS_PENDING_MAX)
        self.newest_size: tuple[int, int] | None = None  # (rows, cols) of the last resize
        self._resize_queued = False
        self.dropped_requests = 0

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
            self._dropped("signal")

    def break_received(self, msec: int) -> bool:
        if self.events.admit():
            return bool(super().break_received(msec))
        self._dropped("break")
        return False

    def _dropped(self, what: str) -> None:
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
        self._gone.set()
        self.gwconn.session_closed(self)  # its place under max_sessions is free again

    # The session ---------------------------------------------------------------------------

    def _kind(self) -> tuple[str, str | None]:
        chan = self.chan
        if chan.get_subsystem() == "sftp":
            return "sftp", None
        command = chan.get_command()
        if command is not None and command.startswith("scp ") and _is_scp_server(command):
            return "scp", command
        if command is not None:
            return "exec", command
        return "shell", None

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
        kind, command = self._kind()
        status = 1
        try:
            if ident.target.container is None:
                status = await self._list(ident, stdout, stderr, pty)
            else:
                status = await self._session(ident, kind, command, pty, stdin, stdout, stderr)
        except GatewayError as exc:
            if exc.public_message != exc.user_message:
                log.warning("conn %s: %s", self.gwconn.conn_id, exc.user_message)
            self._say(stderr, exc.public_message, pty)
            status = exc.exit_status
        except asyncio.CancelledError:
            status = 255
            raise
        except Exception:
            log.exception("conn %s: session %s failed", self.gwconn.conn_id, self.session_id[:8])
            self._say(stderr, "internal error (logged on the gateway)", pty)
            status = 1
        finally:
            if not self._gone.is_set():
                try:
                    chan.exit(status)
                except Exception as exc:
                    log.debug("exit: %r", exc)

    def _say(self, writer: asyncssh.SSHWriter[bytes], message: str, pty: bool) -> None:
        if self._gone.is_set():
            return
        line = f"sshgw: {message}" + ("\r\n" if pty else "\n")
        try:
            writer.write(line.encode("utf-8", "replace"))
        except Exception as exc:
            log.debug("write error line: %r", exc)

    def _info(
        self,
        ident: Identity,
        kind: str,
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
        )

    async def _recheck(self, ident: Identity) -> None:
        """The connection's user and key or password must still be valid for a new channel."""
        reason = await self.gw.observer.recheck(self.gwconn.conn_id, ident.user)
        if reason is not None:
            self.gw.observer.access_denied(
                "revoked", ident.user, ident.target.container, "-", self.gwconn.remote
            )
            raise AccessDenied(f"access revoked ({reason})")

    async def _grants_rechecked(self, ident: Identity) -> list[Grant]:
        """The user's grants, read afresh, once the credential is re-checked (concurrently)."""
        check = asyncio.ensure_future(self._recheck(ident))
        try:
            grants = await self.gw.store.grants_for(ident.user)
        finally:
            if not check.done():
                await asyncio.wait({check})
        check.result()
        return grants

    async def _list(
        self,
        ident: Identity,
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
        pty: bool,
    ) -> int:
        """``ssh alice@gw``: the containers alice may reach."""
        grants = await self._grants_rechecked(ident)
        track = self.gw.observer.session_started(
            self._info(ident, "list", None, None, None, pty, False)
        )
        try:
            containers = await self._until_ended(self.gw.engine.list_containers(), track)
            if isinstance(containers, _Ended):
                self._say(stderr, _end_message(track), pty)
                track.end(255, self._end_reason(track))
                return 255
            subject = Subject(ident.user, ident.groups)
            rows: list[tuple[str, str, str, str, str]] = []
            for c in containers:
                acc = access(subject, grants, PolicyTarget(c.name, c.id, c.labels))
                if acc is None:
                    continue
                rows.append(
                    (c.name, c.image, c.state, ",".join(sorted(acc.rights)), ",".join(acc.logins))
                )
            out = _table(("CONTAINER", "IMAGE", "STATE", "RIGHTS", "LOGINS"), rows)
            if not rows:
                out = "No containers are available to you.\n"
            else:
                out = (
                    f"Containers available to {ident.user} "
                    f"(connect with ssh {ident.user}+CONTAINER@host):\n" + out
                )
            data = out.replace("\n", "\r\n") if pty else out
            stdout.write(data.encode("utf-8", "replace"))
            track.end(0, "exit")
            return 0
        except GatewayError:
            track.end(1, "error")
            raise

    async def _authorize(
        self, ident: Identity, container: Container, right: str, remote: str
    ) -> Decision:
        grants = self._grants
        if grants is None:
            grants = await self.gw.store.grants_for(ident.user)
        decision = decide(
            Subject(ident.user, ident.groups),
            grants,
            PolicyTarget(container.name, container.id, container.labels),
            right,
            ident.target.login,
        )
        if decision.allowed:
            return decision
        reason = decision.reason or DenyReason.NO_GRANT
        self.gw.observer.access_denied(reason.value, ident.user, container.name, right, remote)
        log.info(
            "conn %s: deny %s %s on %s: %s",
            self.gwconn.conn_id,
            ident.user,
            right,
            container.name,
            decision.message,
        )
        if reason in (DenyReason.NO_GRANT, DenyReason.EXPIRED):
            raise NoSuchContainer(ident.target.container or container.name)
        if reason is DenyReason.LOGIN_NOT_ALLOWED:
            raise AccessDenied(
                f"access denied: login {ident.target.login!r} is not allowed on {container.name}"
            )
        raise AccessDenied(f"access denied: you have no {right} right on {container.name}")

    async def _session(
        self,
        ident: Identity,
        kind: str,
        command: str | None,
        pty: bool,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> int:
        name = ident.target.container
        assert name is not None
        # The container and the grants are looked up at the same time.
        grants_task = asyncio.ensure_future(self._grants_rechecked(ident))
        try:
            container = await self.gw.engine.resolve(name)
        except EngineUnavailable:
            self.gw.observer.docker_error("inspect")
            raise
        finally:
            if not grants_task.done():
                await asyncio.wait({grants_task})
            grants_task.exception()  # retrieved here; raised by result() below
        self._grants = grants_task.result()
        right = {
            "shell": Right.SHELL,
            "exec": Right.EXEC,
            "sftp": Right.SFTP_READ,
            "scp": Right.SFTP_READ,
        }[kind]
        decision = await self._authorize(ident, container, right, self.gwconn.remote)
        if not container.running:
            raise ContainerNotRunning(container.name, container.state)
        login = decision.login or container.user or "root"
        info = self._info(ident, kind, container, login, command, pty, decision.record)
        track = self.gw.observer.session_started(info)
        ctx = SessionContext(
            ident, kind, command, container, login, decision, track, pty, stdin, stdout, stderr
        )
        try:
            if kind in ("sftp", "scp"):
                status = await self._files(ctx)
            else:
                status = await self._exec(ctx)
        except GatewayError as exc:
            track.end(exc.exit_status, "error")
            raise
        except BaseException:
            track.end(None, "error")
            raise
        return status

    # SFTP and SCP ----------------------------------------------------------------------------

    async def _files(self, ctx: SessionContext) -> int:
        from asyncssh.scp import run_scp_server

        from gateway.sftp import FileAccess, FileOp
        from gateway.sftp.server import ContainerSFTPServer, run_sftp_server

        ident, container, decision, track = ctx.ident, ctx.container, ctx.decision, ctx.track
        stdin, stdout, stderr = ctx.stdin, ctx.stdout, ctx.stderr
        # Writing is decided for the session's own login, and its paths come from write grants.
        write = decide_as(
            Subject(ident.user, ident.groups),
            self._grants or [],
            PolicyTarget(container.name, container.id, container.labels),
            Right.SFTP_WRITE,
            decision.login,
        )

        def on_op(op: FileOp) -> None:
            track.file_op(op.op, op.path, op.nbytes, op.result, op.seconds)

        fa = FileAccess(
            engine=self.gw.engine,
            container=container,
            login=ctx.login,
            writable=write.allowed,
            paths=decision.paths,
            write_paths=write.paths if write.allowed else decision.paths,
            on_op=on_op,
            max_handles=self.gw.settings.max_sftp_handles,
        )
        server = ContainerSFTPServer(fa, self.chan)
        if ctx.kind == "sftp":
            work: Awaitable[None] = run_sftp_server(
                server,
                stdin,
                stdout,
                3,
                flow_of(self.gwconn.conn),
                self.gw.settings.max_sftp_handles,
            )
        else:
            assert ctx.command is not None
            handler = run_scp_server(server, ctx.command, stdin, stdout, stderr)
            if handler is None:  # bad scp arguments: asyncssh already answered and exited
                track.end(1, "error")
                return 1
            work = handler
        if await self._until_ended(work, track, server) is ENDED:
            # Killed, revoked or shutting down: the transfer stopped; unfinished uploads are
            # discarded and the container's file helper is gone.
            if self.chan.get_write_buffer_size() > 0:
                # Unsent file data would hold the channel open for as long as the client takes
                # to read it (a slow scp: minutes): drop it and close now.
                self.chan.abort()
            else:
                self._say(stderr, _end_message(track), False)
            track.end(255, self._end_reason(track))
            return 255
        track.end(0, "exit")
        return 0

    def _end_reason(self, track: SessionTrack) -> str:
        if track.killed.is_set():
            return "killed"  # recorded as the track's kill reason ("killed" or "revoked")
        return "shutdown" if self.gw.stopping.is_set() else "client_gone"

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
        gone = asyncio.ensure_future(self._gone.wait())
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

    async def _exec(self, ctx: SessionContext) -> int:
        kind, command, pty = ctx.kind, ctx.command, ctx.pty
        container, decision, stdout = ctx.container, ctx.decision, ctx.stdout
        chan = self.chan
        env = self._env(pty)
        cols, rows = (chan.get_terminal_size()[:2]) if pty else (0, 0)
        login_ref = decision.login or container.user or "0"
        nonce = new_nonce()  # the PID marker is taken only with it (see _Bridge._pump_out)
        argv = wrapper_argv(
            "shell" if kind == "shell" else "exec",
            login_ref,
            rows,
            cols,
            command or "",
            nonce=nonce,
        )
        if kind == "shell" and pty and self.gw.motd:
            motd = self.gw.motd.replace("\r\n", "\n")
            if not motd.endswith("\n"):
                motd += "\n"
            stdout.write(motd.replace("\n", "\r\n").encode())
        t0 = time.monotonic()
        try:
            stream = await self.gw.engine.exec(
                container.id,
                argv,
                user=decision.login or container.user,
                env=env,
                tty=pty,
            )
        except ExecFailed as exc:
            self.gw.observer.docker_error("exec_start")
            if "not running" in exc.user_message:
                raise ContainerNotRunning(container.name) from None
            raise
        except (EngineUnavailable, NoSuchContainer):
            self.gw.observer.docker_error("exec_start")
            raise
        self.gw.observer.exec_started(time.monotonic() - t0)
        bridge = _Bridge(self, ctx, stream, (rows, cols), nonce, login_ref)
        try:
            return await bridge.run(ctx.stdin, stdout, ctx.stderr, login_ref)
        finally:
            await stream.close()

    def _env(self, pty: bool) -> dict[str, str]:
        allowed = self.gw.settings.accept_env
        env: dict[str, str] = {}
        for key, value in self.chan.get_environment().items():
            if any(fnmatch.fnmatchcase(key, pat) for pat in allowed) and "\0" not in value:
                env[key] = value
        term = self.chan.get_terminal_type()
        if pty and term:
            env["TERM"] = term
        return env


class _Bridge:
    """Moves bytes between one SSH channel and one exec, and ends the process when needed."""

    def __init__(
        self,
        session: GatewaySession,
        ctx: SessionContext,
        stream: ExecStream,
        size: tuple[int, int],
        nonce: str,
        user: str,
    ) -> None:
        self.s = session
        # Signals, hang-up and liveness checks run as the session's own login, never as root.
        self.user = user
        self.gw = session.gw
        self.container = ctx.container
        self.stream = stream
        self.track = ctx.track
        self.pty = ctx.pty
        self.size = size
        self.pid: int | None = None
        self.ready = asyncio.Event()
        # The wrapper's PID marker and the output held until it came (gateway.ssh.pidmark).
        self.marks = PidMarkScanner(nonce, pty=ctx.pty, stdout=STDOUT, stderr=STDERR)
        self._unsent: list[tuple[int, bytes]] = []
        self._resizes = TokenBucket(RESIZE_RATE, RESIZE_BURST)
        self._signals = TokenBucket(SIGNAL_RATE, SIGNAL_BURST)
        self.stdout: asyncssh.SSHWriter[bytes] | None = None
        self.stderr: asyncssh.SSHWriter[bytes] | None = None

    async def run(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
        login: str,
    ) -> int:
        self.stdout, self.stderr = stdout, stderr
        loop = asyncio.get_running_loop()
        out_task = loop.create_task(self._pump_out(stdout, stderr))
        in_task = loop.create_task(self._pump_in(stdin))
        gone_task = loop.create_task(self.s._gone.wait())
        kill_task = loop.create_task(self.track.killed.wait())
        stop_task = loop.create_task(self.gw.stopping.wait())
        tasks = {out_task, in_task, gone_task, kill_task, stop_task}
        try:
            done, _ = await asyncio.wait(
                {out_task, gone_task, kill_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if out_task in done:
                exc = out_task.exception()
                if exc is None:
                    return await self._finished(login, stderr)
                if not isinstance(exc, _ClientGone):
                    await self._terminate()
                    raise exc
            if kill_task in done or stop_task in done:
                killed = kill_task in done
                why = (
                    "session terminated by an administrator"
                    if killed
                    else ("the gateway is shutting down; session ended")
                )
                self.s._say(stderr, why, self.pty)
                await self._terminate()
                self.track.end(255, "killed" if killed else "shutdown")
                return 255
            # The client went away: the process must not live on.
            await self._terminate()
            self.track.end(None, "client_gone")
            return 255
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump_in(self, stdin: asyncssh.SSHReader[bytes]) -> None:
        while True:
            try:
                data = await stdin.read(READ_SIZE)
            except asyncssh.TerminalSizeChanged as exc:
                if self.ready.is_set():
                    # At most RESIZE_RATE engine calls a second; sizes sent meanwhile coalesce.
                    await asyncio.sleep(self._resizes.wait_time())
                    self._resizes.take()
                self.size = self.s.take_newest_size((exc.height, exc.width))
                self.track.resize(self.size[1], self.size[0])
                if self.ready.is_set():
                    await self._resize()
                continue
            except asyncssh.SignalReceived as exc:
                self.s.events.done()
                if self._signals.take():
                    await self._signal(str(exc.signal))
                else:
                    self.s._dropped("signal")
                continue
            except asyncssh.BreakReceived:
                self.s.events.done()
                continue
            except (asyncssh.Error, ConnectionError):
                return
            if not data:
                if not self.pty:
                    self.stream.write_eof()
                return
            if self.pty and not self.ready.is_set():
                # The terminal would echo type-ahead before the process announced itself.
                await self.ready.wait()
            self.track.to_container(len(data))
            if self.pty:
                self.track.input(data)
            await self.stream.write(data)

    async def _pump_out(
        self, stdout: asyncssh.SSHWriter[bytes], stderr: asyncssh.SSHWriter[bytes]
    ) -> None:
        marks = self.marks
        while (msg := await self.stream.read()) is not None:
            out = marks.feed(*msg)
            if marks.pid is not None and self.pid is None:
                self.pid = marks.pid
                self.ready.set()
                if self.pty:
                    self.s.gw.tasks.spawn(self._resize(), name="initial-resize")
            for kind, data in out:
                await self._emit(kind, data, stdout, stderr)
        # The output ended before the wrapper spoke: kept for the failure explanation.
        self._unsent = marks.finish()

    async def _emit(
        self,
        kind: int,
        data: bytes,
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        writer = stdout if kind == STDOUT else stderr
        self.track.from_container(data)
        try:
            writer.write(data)
            await writer.drain()  # the channel's window
            # The client's socket: asyncssh queues without limit when the window is large.
            flow = flow_of(writer.channel.get_connection())
            if flow is not None and not flow.writable:
                await flow.wait_writable()
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            # The client is gone; the session's watcher ends the process.
            self.s._gone.set()
            raise _ClientGone() from None

    async def _finished(self, login: str, stderr: asyncssh.SSHWriter[bytes]) -> int:
        try:
            code: int | None = await self.stream.wait(timeout=2.0)
        except EngineUnavailable:
            code = None
        if self.pid is None and (code is None or code in (126, 127)):
            why = explain_start_failure(bytes(self.marks.start_output), self.container.name, login)
            if why is not None:
                self.track.end(code, "error")
                raise ExecFailed(why)
        if self.pid is None and self._unsent and not self.s._gone.is_set():
            for k, d in self._unsent:
                writer = self.stdout if k == STDOUT else self.stderr
                if writer is not None:
                    writer.write(d)
        if code is None or code >= 128:
            # A signal death may be the container itself stopping; Docker records the new
            # state a moment after the exec's output ends.
            running, state = True, ""
            for delay in (0.0, 0.1, 0.25):
                await asyncio.sleep(delay)
                try:
                    c = await self.gw.engine.resolve(self.container.id)
                    running, state = c.running, c.state
                except NoSuchContainer:
                    running, state = False, "removed"
                except EngineUnavailable:
                    running, state = True, ""
                if not running:
                    break
            if not running:
                self.track.end(code, "container_gone")
                raise _ContainerGone(self.container.name, state, code)
        if code is None:
            self.track.end(None, "error")
            raise EngineUnavailable("the container did not report an exit status")
        self.track.end(code, "exit")
        return code

    async def _resize(self) -> None:
        for delay in (0.0, 0.05, 0.2):
            if delay:
                await asyncio.sleep(delay)
            rows, cols = self.size  # the newest size, if it changed meanwhile
            if await self.stream.resize(rows, cols):
                return

    async def _signal(self, name: str) -> None:
        name = name.upper().removeprefix("SIG")
        if self.pid is None or name not in _SIGNALS:
            return
        await self._kill(name)

    async def _kill(self, signal: str) -> None:
        assert self.pid is not None
        try:
            # Only while the exec still runs: its PID cannot have been reused by another process.
            info = await self.gw.engine.inspect_exec(self.stream.exec_id)
            if not info.get("Running"):
                return
            await self.gw.engine.run(self.container.id, kill_argv(self.pid, signal), user=self.user)
        except GatewayError as exc:
            log.info(
                "could not signal pid %s in %s: %s", self.pid, self.container.name, exc.user_message
            )

    async def _alive(self) -> bool:
        assert self.pid is not None
        try:
            info = await self.gw.engine.inspect_exec(self.stream.exec_id)
            if not info.get("Running"):
                return False
            code, _, _ = await self.gw.engine.run(
                self.container.id, alive_argv(self.pid), user=self.user
            )
            return code == 0
        except GatewayError:
            return False

    async def _terminate(self) -> None:
        """Hang up a PTY session's process, or TERM a command; KILL after the grace period."""
        if self.pid is None:
            # Give the wrapper a moment to announce itself.
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=2.0)
            except TimeoutError:
                log.warning("session %s: process id unknown; cannot end it", self.s.session_id[:8])
                return
        await self._kill("HUP" if self.pty else "TERM")
        deadline = time.monotonic() + self.gw.settings.kill_grace
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if not await self._alive():
                return
        await self._kill("KILL")


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
            session._dropped("env")
            return False
        return bool(process(packet))

    setattr(chan, "_process_env_request", process_env)  # noqa: B010 (an instance attribute)


class _ClientGone(Exception):
    """The SSH channel closed while output was still flowing."""


class _ContainerGone(GatewayError):
    def __init__(self, name: str, state: str, code: int | None) -> None:
        super().__init__(f"container {name} stopped during the session ({state or 'gone'})")
        self.exit_status = code if code is not None and code > 0 else 255


_SIGNALS = {
    "ABRT",
    "ALRM",
    "FPE",
    "HUP",
    "ILL",
    "INT",
    "KILL",
    "PIPE",
    "QUIT",
    "SEGV",
    "TERM",
    "USR1",
    "USR2",
}


class _Ended:
    """What :meth:`GatewaySession._until_ended` returns when the session was ended."""


ENDED = _Ended()


def _end_message(track: SessionTrack) -> str:
    if track.killed.is_set():
        if track.kill_reason == "killed":
            return "session terminated by an administrator"
        return "session ended: your access was revoked"
    return "the gateway is shutting down; session ended"


def _is_scp_server(command: str) -> bool:
    args = command.split()
    return any(a.startswith("-") and ("t" in a or "f" in a) for a in args[1:] if a != "--")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Columns of text; cells are shown literally (container owners choose names and images)."""
    rows = [tuple(literal(v) for v in r) for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"
