"""Start SFTP or SCP for an authorized file session: the file server over the container.

:func:`file_access` says what the session may do (login, read and write paths, open handles);
:func:`start_files` starts asyncssh's SFTP loop (paced by the client's socket,
:class:`~gateway.sftp.loop.PacedSFTPHandler`) or its SCP server, both over
:class:`~gateway.sftp.server.ContainerSFTPServer`. The test harness
(tests/integration/sftp_harness.py) starts its sessions the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import asyncssh
from asyncssh.scp import run_scp_server

from gateway.sftp import FileAccess, FileOp
from gateway.sftp.loop import WriteFlow, run_sftp_server
from gateway.sftp.server import ContainerSFTPServer

if TYPE_CHECKING:
    from gateway.engines import Engine
    from gateway.policy import Decision
    from gateway.ssh.context import SessionContext

SFTP_VERSION = 3


def file_access(
    engine: Engine, ctx: SessionContext, write: Decision, max_handles: int
) -> FileAccess:
    """What the file server may do for this session; every operation is tracked."""
    track, decision = ctx.track, ctx.decision

    def on_op(op: FileOp) -> None:
        track.file_op(op.op, op.path, op.nbytes, op.result, op.seconds)

    return FileAccess(
        engine=engine,
        container=ctx.container,
        login=ctx.login,
        writable=write.allowed,
        paths=decision.paths,
        write_paths=write.paths if write.allowed else decision.paths,
        on_op=on_op,
        max_handles=max_handles,
    )


def start_files(
    access: FileAccess,
    chan: asyncssh.SSHServerChannel[bytes],
    command: str | None,
    stdin: asyncssh.SSHReader[bytes],
    stdout: asyncssh.SSHWriter[bytes],
    stderr: asyncssh.SSHWriter[bytes],
    flow: WriteFlow | None = None,
) -> tuple[ContainerSFTPServer, Awaitable[None] | None]:
    """The file server and the work that serves the channel: the sftp subsystem when
    ``command`` is None, else ``scp -f|-t …``. No work: bad scp arguments (asyncssh already
    answered the client and exited the channel)."""
    server = ContainerSFTPServer(access, chan)
    if command is None:
        work = run_sftp_server(server, stdin, stdout, SFTP_VERSION, flow, access.max_handles)
        return server, work
    return server, run_scp_server(server, command, stdin, stdout, stderr)
