"""Processes inside the container: the long-lived helper shell and one-shot data streams."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.containerfs.errors import ContainerGone, FSError, NoShell
from gateway.containerfs.scripts import HELPER_SCRIPT, ONESHOT_SCRIPT
from gateway.containerfs.shell import classify, command, find_reply
from gateway.engines.base import STDERR, STDOUT, Engine, ExecStream, container_gone_text
from gateway.errors import EngineUnavailable, ExecFailed, GatewayError, NoSuchContainer

log = logging.getLogger(__name__)

EXEC_ENV: Mapping[str, str] = {"LC_ALL": "C"}
# Metadata answers are small; listings are bounded here (about 600 000 entries).
DEFAULT_LIMIT = 1 << 20
LIST_LIMIT = 64 << 20
STDERR_KEEP = 4096
# Output a one-shot transfer may send before its shell announced its process (streams of one
# exec are not ordered against each other, so a little stdout may come first).
START_OUTPUT_MAX = 1 << 20
# Helper shells one session may run at once: its requests can run at the same time
# (gateway.sftp.order), each helper answers one at a time.
POOL_SIZE = 4
# "exec: not found" style failures of the runtime come back as 126/127.
_NOT_FOUND_CODES = (126, 127)


@dataclass(frozen=True, slots=True)
class HelperInfo:
    """What the helper shell learned at start: the login's home (the start directory), its
    umask, which optional tools the image has (``dd``, ...), and its uid when known."""

    home: bytes
    umask: int
    tools: frozenset[str]
    uid: int | None = None


async def _start_exec(engine: Engine, container_id: str, login: str, script: str) -> ExecStream:
    try:
        return await engine.exec(
            container_id, ["sh", "-c", script], user=login, env=EXEC_ENV, workdir="/"
        )
    except NoSuchContainer:
        raise ContainerGone("the container is gone") from None
    except ExecFailed as exc:
        raise FSError(errno.EIO, b"", exc.user_message) from None
    except EngineUnavailable as exc:
        raise ContainerGone(exc.public_message) from None


async def _leftover(stream: ExecStream, keep: int) -> tuple[bytes, bytes]:
    """What a stream that was given up still holds: up to ``keep`` bytes of stdout and of
    stderr, read for at most 5 s (only what had arrived: the stream is closed)."""
    out = bytearray()
    err = bytearray()
    try:
        async with asyncio.timeout(5.0):
            while (msg := await stream.read()) is not None:
                kind, chunk = msg
                buf = out if kind == STDOUT else err
                buf += chunk[: max(0, keep - len(buf))]
    except (TimeoutError, GatewayError, OSError) as exc:
        log.debug("helper output after its end: %r", exc)
    return bytes(out), bytes(err)


def _start_failure(code: int | None, out: bytes, login: str) -> FSError:
    text = out.decode("utf-8", "replace").strip().splitlines()
    last = text[-1] if text else ""
    lower = last.lower()
    if "unable to find user" in lower or "no matching entries in passwd" in lower:
        return FSError(errno.EACCES, b"", f"login {login!r} does not exist in the container")
    if "executable file not found" in lower or "no such file or directory" in lower or code == 127:
        return NoShell("file transfer needs /bin/sh in the container, and this image has none")
    if container_gone_text(lower):
        return ContainerGone("the container is not running")
    detail = last[:200] or f"exit status {code}"
    return ContainerGone(f"cannot start the file helper in the container ({detail})")


class ShellHelper:
    """One ``sh`` per session answering requests (see :mod:`gateway.containerfs.shell`)."""

    def __init__(self, engine: Engine, container_id: str, login: str) -> None:
        self.engine = engine
        self.container_id = container_id
        self.login = login
        self._stream: ExecStream | None = None
        self._buf = bytearray()
        self._lock = asyncio.Lock()
        self._stderr = bytearray()
        self._closed = False
        self.info: HelperInfo | None = None
        self._dead: tuple[ExecStream | None, bytes] = (None, b"")
        self._key = b""

    def __repr__(self) -> str:
        if self._closed:
            state = "CLOSED"
        elif self._stream is None:
            state = "NOT STARTED" if self._dead[0] is None else "DEAD"
        elif self.info is None:
            state = "STARTING"
        else:
            state = "BUSY" if self._lock.locked() else "IDLE"
        who = f"{self.login or 'image user'}@{self.container_id[:12]}"
        return f"<ShellHelper {who} [{state}]>"

    async def start(self) -> HelperInfo:
        async with self._lock:
            return await self._start()

    async def _start(self) -> HelperInfo:
        if self._closed:
            raise ContainerGone("the file session has ended")
        if self._stream is not None and self.info is not None:
            return self.info
        self._buf.clear()
        self._stderr.clear()
        self._stream = await _start_exec(self.engine, self.container_id, self.login, HELPER_SCRIPT)
        # The session key: every request line must start with it (see scripts.HELPER_SCRIPT).
        self._key = os.urandom(16).hex().encode()
        try:
            try:
                await self._stream.write(self._key + b"\n")
            except (GatewayError, AssertionError, OSError):
                # Ended before it read a byte (an unknown login, no sh): its output says why.
                await self._kill()
                raise ContainerGone() from None
            code, body = await self._call_locked(b"q_init", DEFAULT_LIMIT, 60.0)
        except ContainerGone:
            dead, output = self._dead
            exit_code: int | None = None
            if dead is not None:
                rest, err = await _leftover(dead, STDERR_KEEP - len(output))
                output += rest
                self._stderr += err[: STDERR_KEEP - len(self._stderr)]
                try:
                    exit_code = await dead.wait(timeout=5.0)
                except EngineUnavailable:
                    exit_code = None
            raise _start_failure(exit_code, output + bytes(self._stderr), self.login) from None
        if code != 0:
            await self._kill()
            raise ContainerGone("the file helper did not start")
        umask_line, _, rest = body.partition(b"\n")
        tools_line, _, rest = rest.partition(b"\n")
        safety_line, _, home = rest.partition(b"\n")
        try:
            umask = int(umask_line.strip() or b"22", 8)
        except ValueError:
            umask = 0o022
        uid_text, _, unsafe = safety_line.partition(b" ")
        uid = int(uid_text) if uid_text.isdigit() else None
        if uid != 0 and unsafe.split():
            await self._kill()
            where = unsafe.split()[0].decode("utf-8", "backslashreplace")[:200]
            raise FSError(
                errno.EACCES,
                b"",
                f"file transfer refused: the container's tool {where} can be changed by"
                f" login {self.login!r}",
            )
        home = home if home.startswith(b"/") else b"/"
        self.info = HelperInfo(
            home=home,
            umask=umask,
            tools=frozenset(t.decode("ascii", "replace") for t in tools_line.split()),
            uid=uid,
        )
        return self.info

    async def call(
        self,
        func: str,
        *args: bytes | str | int,
        data: bytes | None = None,
        limit: int = DEFAULT_LIMIT,
        timeout: float = 120.0,
    ) -> tuple[int, bytes]:
        """Run ``func(args)`` in the helper; (status, output). ``data`` follows the request line."""
        line = command(func, *args)
        async with self._lock:
            if self._stream is None or self.info is None:
                await self._start()
            return await self._call_locked(line, limit, timeout, data)

    async def _call_locked(
        self, line: bytes, limit: int, timeout: float, data: bytes | None = None
    ) -> tuple[int, bytes]:
        stream = self._stream
        if stream is None:
            raise ContainerGone()
        nonce = os.urandom(8).hex().encode()
        mark = b"\0" + nonce + b" "
        try:
            async with asyncio.timeout(timeout):
                try:
                    await stream.write(self._key + b" T=" + nonce + b"; " + line + b"\n")
                    if data:
                        await stream.write(data)
                except (GatewayError, AssertionError, OSError) as exc:
                    # a stream may assert when its connection is already gone
                    log.debug("helper write failed: %r", exc)
                    raise ContainerGone() from None
                buf = self._buf
                start = 0
                while True:
                    try:
                        found = find_reply(buf, mark, start)
                    except ValueError:
                        raise ContainerGone("garbled answer from the container") from None
                    if found is not None:
                        end, status, used = found
                        body = bytes(buf[:end])
                        del buf[:used]
                        return status, body
                    if len(buf) > limit + len(mark) + 32:
                        raise FSError(errno.EFBIG, b"", "the container's answer is too large")
                    start = max(0, len(buf) - len(mark) - 32)
                    msg = await stream.read()
                    if msg is None:
                        raise ContainerGone()
                    kind, chunk = msg
                    if kind == STDOUT:
                        buf += chunk
                    elif kind == STDERR and len(self._stderr) < STDERR_KEEP:
                        self._stderr += chunk[: STDERR_KEEP - len(self._stderr)]
        except TimeoutError:
            await self._kill()
            raise FSError(errno.ETIMEDOUT, b"", "the container did not answer in time") from None
        except BaseException:
            # Out of step with the shell (or it is gone): a fresh one starts on the next call.
            await self._kill()
            raise

    async def _kill(self) -> None:
        stream, self._stream = self._stream, None
        self.info = None
        self._dead = (stream, bytes(self._buf[:STDERR_KEEP]))
        self._buf.clear()
        if stream is not None:
            stream.write_eof()
            await stream.close()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._kill()


class HelperPool:
    """The helper shells of one session: :meth:`call` takes an idle one, and starts another
    (up to ``size``) while all are busy. Each starts like the first, with the same checks;
    one that cannot start (the container limits its processes, say) stops the growth, and
    the call waits for a helper that runs. Requests hold no state in a helper (each names its
    directory and its file), so any helper can answer any request."""

    def __init__(
        self, engine: Engine, container_id: str, login: str, size: int = POOL_SIZE
    ) -> None:
        self._where = (engine, container_id, login)
        self.first = self._new()
        self._all = [self.first]
        self._idle: deque[ShellHelper] = deque([self.first])
        self._waiting: deque[asyncio.Future[ShellHelper]] = deque()
        self._size = size
        self._closed = False

    def _new(self) -> ShellHelper:
        return ShellHelper(*self._where)

    def __repr__(self) -> str:
        return f"<HelperPool {self.first!r} +{len(self._all) - 1}>"

    @property
    def info(self) -> HelperInfo | None:
        return self.first.info

    async def start(self) -> HelperInfo:
        return await self.first.start()

    async def call(
        self,
        func: str,
        *args: bytes | str | int,
        data: bytes | None = None,
        limit: int = DEFAULT_LIMIT,
        timeout: float = 120.0,
    ) -> tuple[int, bytes]:
        """:meth:`ShellHelper.call` on an idle helper of the session."""
        helper = await self._take()
        try:
            return await helper.call(func, *args, data=data, limit=limit, timeout=timeout)
        finally:
            self._give(helper)

    async def _take(self) -> ShellHelper:
        if self._closed:
            raise ContainerGone("the file session has ended")
        if self._idle:
            return self._idle.popleft()
        if len(self._all) < self._size and self.first.info is not None:
            helper = self._new()
            self._all.append(helper)
            try:
                await helper.start()
                return helper
            except (FSError, GatewayError) as exc:
                log.info("no further file helper (%d run): %s", len(self._all) - 1, exc)
                self._all.remove(helper)
                self._size = len(self._all)
                await helper.close()
        waiter: asyncio.Future[ShellHelper] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed over just as the caller gave up
            raise

    def _give(self, helper: ShellHelper) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(helper)
                return
        self._idle.append(helper)

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(ContainerGone("the file session has ended"))
        self._waiting.clear()
        for helper in self._all:
            await helper.close()


class OneShot:
    """A dedicated process for one data stream: the first stdin line is the command.

    The process announces its PID (inside the container) on stderr before it ``exec``s the data
    tool, so that a stream given up half-way can be stopped with :meth:`stop` (closing the
    connection alone leaves a blocked writer behind: Docker cannot signal an exec).
    """

    def __init__(self, stream: ExecStream, stopper: ShellHelper | HelperPool | None = None) -> None:
        self._stream = stream
        # Stops the process when the stream is given up half-way (see :meth:`stop`).
        self._stopper = stopper
        self.stderr = bytearray()
        self.exit_code: int | None = None
        self.pid: int | None = None
        self._early: list[bytes] = []
        self._eof = False

    def __repr__(self) -> str:
        state = "OUTPUT ENDED" if self._eof else "STREAMING"
        return f"<OneShot pid {self.pid} [{state}] {self._stream!r}>"

    @classmethod
    async def start(
        cls,
        engine: Engine,
        container_id: str,
        login: str,
        line: bytes,
        stopper: ShellHelper | HelperPool | None = None,
    ) -> OneShot:
        """Start ``line`` (a shell command line built with :func:`~.shell.sq`).

        ``stopper``: the helper that can stop the process if the stream is given up.
        """
        if b"\n" in line:
            raise ValueError("a one-shot command is one line")
        stream = await _start_exec(engine, container_id, login, ONESHOT_SCRIPT)
        shot = cls(stream, stopper)
        try:
            await stream.write(line + b"\n")
            async with asyncio.timeout(60):
                await shot._read_pid()
        except TimeoutError:
            await stream.close()
            raise FSError(
                errno.ETIMEDOUT, b"", "the container did not start the transfer"
            ) from None
        except BaseException:
            await stream.close()
            raise
        return shot

    async def _read_pid(self) -> None:
        early = 0
        while b"\n" not in self.stderr:
            if early > START_OUTPUT_MAX or len(self.stderr) > STDERR_KEEP:
                # The shell did not announce its process first, as the script makes it do:
                # whatever talks here is not held in memory waiting for it.
                raise FSError(errno.EIO, b"", "the container's shell did not start the transfer")
            msg = await self._stream.read()
            if msg is None:
                self._eof = True
                code = await self.wait(timeout=10.0)
                raise _start_failure(code, b"".join(self._early), "")
            kind, chunk = msg
            if kind == STDOUT:
                self._early.append(chunk)
                early += len(chunk)
            else:
                self.stderr += chunk
        first, _, rest = bytes(self.stderr).partition(b"\n")
        self.stderr = bytearray(rest)
        if first.strip().isdigit():
            self.pid = int(first)

    async def read(self) -> bytes | None:
        """The next piece of stdout; None at the end of output."""
        if self._early:
            return self._early.pop(0)
        while not self._eof:
            msg = await self._stream.read()
            if msg is None:
                self._eof = True
                return None
            kind, chunk = msg
            if kind == STDOUT:
                return chunk
            if len(self.stderr) < STDERR_KEEP:
                self.stderr += chunk[: STDERR_KEEP - len(self.stderr)]
        return None

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except (EngineUnavailable, AssertionError, OSError):
            raise ContainerGone("the write stream into the container broke") from None

    def write_eof(self) -> None:
        self._stream.write_eof()

    async def finish(self, timeout: float = 120.0) -> int:
        """Drain the output and return the exit code."""
        try:
            async with asyncio.timeout(timeout):
                while await self.read() is not None:
                    pass
                self.exit_code = await self._stream.wait(timeout=timeout)
        except TimeoutError:
            raise FSError(errno.ETIMEDOUT, b"", "the container did not finish in time") from None
        except EngineUnavailable as exc:
            raise ContainerGone(exc.public_message) from None
        finally:
            await self.close()
        return self.exit_code

    async def wait(self, timeout: float = 30.0) -> int:
        try:
            self.exit_code = await self._stream.wait(timeout=timeout)
        except EngineUnavailable as exc:
            raise ContainerGone(exc.public_message) from None
        return self.exit_code

    async def check_end(self) -> None:
        """After the end of output: an FSError when the process failed (told by its stderr)."""
        if await self.wait() != 0:
            err = classify(bytes(self.stderr))
            raise FSError(err, b"", None if err != errno.EIO else "read failed")

    async def stop(self) -> None:
        """Give up on the stream: stop the process if it may still run, then disconnect."""
        helper = self._stopper
        if not self._eof and self.pid is not None and helper is not None:
            try:
                await helper.call("q_kill", self.pid, timeout=30.0)
            except FSError as exc:
                log.debug("cannot stop process %s: %s", self.pid, exc.user_message)
        await self.close()

    async def close(self) -> None:
        await self._stream.close()
