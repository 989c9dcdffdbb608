"""Bytes between one SSH channel and one exec; and ending the exec's process when needed.

The exec starts with the wrapper (:mod:`gateway.ssh.wrapper`), whose PID marker is read by
:class:`~gateway.ssh.pidmark.PidMarkScanner`; with that PID the bridge delivers signals, hangs up
a terminal session and ends the process when the client goes away, an administrator kills the
session, the user's access is revoked or the gateway shuts down. When the exec's output ends, it
tells a process that did not start, a container that stopped and a normal exit apart.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import asyncssh

from gateway.engines.base import STDERR, STDOUT, ExecStream
from gateway.errors import (
    ContainerNotRunning,
    EngineUnavailable,
    ExecFailed,
    GatewayError,
    NoSuchContainer,
)
from gateway.ssh.context import ByteReader, ByteWriter, SessionContext
from gateway.ssh.pacing import EventQueueCap, TokenBucket
from gateway.ssh.pidmark import PidMarkScanner
from gateway.ssh.transport import flow_of
from gateway.ssh.wrapper import (
    alive_argv,
    explain_start_failure,
    kill_argv,
    new_nonce,
    wrapper_argv,
)
from gateway.vocab import EndReason, SessionKind

if TYPE_CHECKING:
    from gateway.ssh.context import Gateway

log = logging.getLogger(__name__)

READ_SIZE = 32 * 1024
RESIZE_RATE, RESIZE_BURST = 10.0, 10.0  # terminal resizes passed on to the engine, per second
SIGNAL_RATE, SIGNAL_BURST = 2.0, 8.0  # signals delivered (each is an exec in the container)


class ExecChannel(Protocol):
    """What :func:`run_exec` reads from the channel (``asyncssh.SSHServerChannel``)."""

    def get_environment(self) -> Mapping[str, str]: ...

    def get_terminal_type(self) -> str | None: ...

    def get_terminal_size(self) -> tuple[int, int, int, int]: ...


class ExecSession(Protocol):
    """What the bridge needs from the session it serves: an SSH session channel
    (:class:`~gateway.ssh.channel.GatewaySession`) or a browser's (``gateway.web.terminal``)."""

    gw: Gateway
    session_id: str
    gone: asyncio.Event  # set when the client went away
    events: EventQueueCap  # signals and breaks queued for the reader

    @property
    def chan(self) -> ExecChannel: ...

    def say(self, writer: ByteWriter, message: str, pty: bool) -> None: ...

    def take_newest_size(self, fallback: tuple[int, int]) -> tuple[int, int]: ...

    def dropped(self, what: str) -> None: ...


async def run_exec(session: ExecSession, ctx: SessionContext) -> int:
    """Start the shell or command in the container, then bridge the channel to it."""
    gw = session.gw
    kind, command, pty = ctx.kind, ctx.command, ctx.pty
    container, decision, stdout = ctx.container, ctx.decision, ctx.stdout
    chan = session.chan
    env = exec_env(chan, gw.settings.accept_env, pty)
    cols, rows = (chan.get_terminal_size()[:2]) if pty else (0, 0)
    login_ref = decision.login or container.user or "0"
    nonce = new_nonce()  # the PID marker is taken only with it (see gateway.ssh.pidmark)
    argv = wrapper_argv(
        "shell" if kind == SessionKind.SHELL else "exec",
        login_ref,
        rows,
        cols,
        command or "",
        nonce=nonce,
    )
    if kind == SessionKind.SHELL and pty and gw.motd:
        motd = gw.motd.replace("\r\n", "\n")
        if not motd.endswith("\n"):
            motd += "\n"
        stdout.write(motd.replace("\n", "\r\n").encode())
    t0 = time.monotonic()
    try:
        stream = await gw.engine.exec(
            container.id,
            argv,
            user=decision.login or container.user,
            env=env,
            tty=pty,
        )
    except ExecFailed as exc:
        gw.observer.docker_error("exec_start")
        if "not running" in exc.user_message:
            raise ContainerNotRunning(container.name) from None
        raise
    except (EngineUnavailable, NoSuchContainer):
        gw.observer.docker_error("exec_start")
        raise
    gw.observer.exec_started(time.monotonic() - t0)
    bridge = Bridge(session, ctx, stream, (rows, cols), nonce, login_ref)
    try:
        return await bridge.run(ctx.stdin, stdout, ctx.stderr, login_ref)
    finally:
        await stream.close()


def exec_env(chan: ExecChannel, accept_env: Sequence[str], pty: bool) -> dict[str, str]:
    """The client's env entries that ``accept_env`` lets through, and TERM with a terminal."""
    env: dict[str, str] = {}
    for key, value in chan.get_environment().items():
        if any(fnmatch.fnmatchcase(key, pat) for pat in accept_env) and "\0" not in value:
            env[key] = value
    term = chan.get_terminal_type()
    if pty and term:
        env["TERM"] = term
    return env


class Bridge:
    """Moves bytes between one SSH channel and one exec, and ends the process when needed."""

    def __init__(
        self,
        session: ExecSession,
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
        self.stdout: ByteWriter | None = None
        self.stderr: ByteWriter | None = None

    async def run(
        self,
        stdin: ByteReader,
        stdout: ByteWriter,
        stderr: ByteWriter,
        login: str,
    ) -> int:
        self.stdout, self.stderr = stdout, stderr
        self.track.listen(lambda text: self.s.say(stderr, text, self.pty))  # the drain's notice
        loop = asyncio.get_running_loop()
        out_task = loop.create_task(self._pump_out(stdout, stderr))
        in_task = loop.create_task(self._pump_in(stdin))
        gone_task = loop.create_task(self.s.gone.wait())
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
                if not killed:
                    why = "the gateway is shutting down; session ended"
                elif self.track.kill_reason == EndReason.REVOKED:
                    why = "session ended: your access was revoked"
                else:
                    why = "session terminated by an administrator"
                self.s.say(stderr, why, self.pty)
                await self._terminate()
                self.track.end(255, EndReason.KILLED if killed else EndReason.SHUTDOWN)
                return 255
            # The client went away: the process must not live on.
            await self._terminate()
            self.track.end(None, EndReason.CLIENT_GONE)
            return 255
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump_in(self, stdin: ByteReader) -> None:
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
                    self.s.dropped("signal")
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

    async def _pump_out(self, stdout: ByteWriter, stderr: ByteWriter) -> None:
        marks = self.marks
        while True:
            # Room at the client first, then the next output: while the client is slow the
            # output waits in the engine stream's (adaptive) read-ahead, and this task holds
            # no chunk of its own (500 slow sessions held 500 joined chunks of up to 256 KiB).
            await self._room(stdout)
            msg = await self.stream.read()
            if msg is None:
                break
            out = marks.feed(*msg)
            del msg
            if marks.pid is not None and self.pid is None:
                self.pid = marks.pid
                self.ready.set()
                if self.pty:
                    self.s.gw.tasks.spawn(self._resize(), name="initial-resize")
            self._write(out, stdout, stderr)
            del out
        await self._room(stdout)  # all output on its way before the exit status
        # The output ended before the wrapper spoke: kept for the failure explanation.
        self._unsent = marks.finish()

    def _write(
        self,
        out: list[tuple[int, bytes]],
        stdout: ByteWriter,
        stderr: ByteWriter,
    ) -> None:
        """Hand output to the channel (which copies it); no reference to it stays here."""
        try:
            for kind, data in out:
                self.track.from_container(data)
                (stdout if kind == STDOUT else stderr).write(data)
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            # The client is gone; the session's watcher ends the process.
            self.s.gone.set()
            raise _ClientGone() from None

    async def _room(self, writer: ByteWriter) -> None:
        """Wait until the channel's window and the client's socket take more output."""
        try:
            await writer.drain()  # the channel's window (stdout and stderr share it)
            if not isinstance(writer, asyncssh.SSHWriter):
                return  # the web terminal's drain waits for the browser's socket itself
            # The client's socket: asyncssh queues without limit when the window is large.
            flow = flow_of(writer.channel.get_connection())
            if flow is not None and not flow.writable:
                await flow.wait_writable()
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            self.s.gone.set()
            raise _ClientGone() from None

    async def _finished(self, login: str, stderr: ByteWriter) -> int:
        try:
            code: int | None = await self.stream.wait(timeout=2.0)
        except EngineUnavailable:
            code = None
        if self.pid is None and (code is None or code in (126, 127)):
            why = explain_start_failure(bytes(self.marks.start_output), self.container.name, login)
            if why is not None:
                self.track.end(code, EndReason.ERROR)
                raise ExecFailed(why)
        if self.pid is None and self._unsent and not self.s.gone.is_set():
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
                self.track.end(code, EndReason.CONTAINER_GONE)
                raise _ContainerGone(self.container.name, state, code)
        if code is None:
            self.track.end(None, EndReason.ERROR)
            raise EngineUnavailable("the container did not report an exit status")
        self.track.end(code, EndReason.EXIT)
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
