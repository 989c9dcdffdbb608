"""A minimal SSH server that serves only the container SFTP/SCP server (no auth, no database).

It runs on its own event loop in a thread, so tests drive it with the real OpenSSH ``sftp``/``scp``
clients (subprocesses) and paramiko (blocking) without caring about asyncio. Sessions start the
way the gateway starts them (``gateway.ssh.files.start_files``), then exit with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.stream import SSHServerStreamSession

from gateway.engines import DockerEngine
from gateway.sftp import FileAccess, FileOp
from gateway.ssh.files import start_files
from tests.support.openssh import CONNECT_TIMEOUT, KEYS_ONLY, NO_CONFIG

# Batch clients that read no config and trust the harness's throw-away host key; no key is
# needed (the harness accepts every user without authentication).
SSH_OPTS = (*NO_CONFIG, *KEYS_ONLY, *CONNECT_TIMEOUT)


class _Session(SSHServerStreamSession):  # type: ignore[type-arg]
    def __init__(self, harness: SFTPHarness) -> None:
        super().__init__(None)
        self.harness = harness

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def exec_requested(self, command: str) -> bool:
        return command.startswith("scp ")

    def session_started(self) -> None:
        chan = self._chan
        stdin = asyncssh.SSHReader(self, chan)
        stdout = asyncssh.SSHWriter(self, chan)
        stderr = asyncssh.SSHWriter(self, chan, asyncssh.EXTENDED_DATA_STDERR)
        task = asyncio.get_running_loop().create_task(self._run(chan, stdin, stdout, stderr))
        self.harness.tasks.add(task)
        task.add_done_callback(self.harness.tasks.discard)

    async def _run(self, chan: Any, stdin: Any, stdout: Any, stderr: Any) -> None:
        command = None if chan.get_subsystem() == "sftp" else chan.get_command()
        _server, work = start_files(self.harness.access(), chan, command, stdin, stdout, stderr)
        try:
            if work is not None:
                await work
        finally:
            with contextlib.suppress(Exception):
                chan.exit(0)


class _Server(asyncssh.SSHServer):
    def __init__(self, harness: SFTPHarness) -> None:
        self.harness = harness

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> _Session:
        return _Session(self.harness)


class SFTPHarness:
    """``with SFTPHarness(container, login=..., writable=..., paths=...) as h: h.sftp(...)``."""

    def __init__(
        self,
        container: str,
        *,
        login: str = "root",
        writable: bool = True,
        paths: tuple[str, ...] = (),
        workdir: Path | None = None,
    ) -> None:
        self.container_name = container
        self.login = login
        self.writable = writable
        self.paths = paths
        self.ops: list[FileOp] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.workdir = workdir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._engine: DockerEngine | None = None
        self._container: Any = None
        self._server: asyncssh.SSHAcceptor | None = None

    def access(self) -> FileAccess:
        assert self._engine is not None
        return FileAccess(
            engine=self._engine,
            container=self._container,
            login=self.login,
            writable=self.writable,
            paths=self.paths,
            on_op=self.ops.append,
        )

    def _call(self, coro: Any, timeout: float = 60) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    async def _start(self) -> None:
        self._engine = DockerEngine()
        self._container = await self._engine.resolve(self.container_name)
        key = asyncssh.generate_private_key("ssh-ed25519")
        self._server = await asyncssh.create_server(
            lambda: _Server(self),
            "127.0.0.1",
            0,
            server_host_keys=[key],
            encoding=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 10)
        for task in list(self.tasks):
            task.cancel()
        if self._engine is not None:
            await self._engine.close()

    def __enter__(self) -> SFTPHarness:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def idle(self, timeout: float = 20) -> bool:
        """Wait until every session task ended (their exit() ran)."""

        async def wait() -> bool:
            tasks = list(self.tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
            return all(t.done() for t in tasks)

        return bool(self._call(wait(), timeout + 5))

    # clients ----------------------------------------------------------------------------------

    def sftp(
        self, commands: str | bytes, *, timeout: float = 120, extra: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[bytes]:
        """OpenSSH ``sftp -b -`` with ``commands`` on stdin."""
        data = commands.encode() if isinstance(commands, str) else commands
        return subprocess.run(
            ["sftp", *SSH_OPTS, "-P", str(self.port), *extra, "-b", "-", "t@127.0.0.1"],
            input=data,
            capture_output=True,
            timeout=timeout,
            cwd=self.workdir,
            check=False,
        )

    def scp(
        self, *args: str, legacy: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        """OpenSSH ``scp``; remote paths are written ``:PATH`` (the host is filled in)."""
        argv = ["scp", *SSH_OPTS, "-P", str(self.port)]
        if legacy:
            argv.append("-O")
        argv += [f"t@127.0.0.1{a}" if a.startswith(":") else a for a in args]
        return subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def paramiko(self) -> Any:
        """A connected paramiko SFTPClient (close it, or use it as a context manager)."""
        import paramiko

        transport = paramiko.Transport(("127.0.0.1", self.port))
        transport.connect()
        transport.auth_none("t")
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        return client
