"""SFTP and SCP answered by the gateway, with the file work done inside the container.

The SSH server authorizes the session (``sftp-read`` at least), builds a :class:`FileAccess` and
hands :func:`make_sftp_server` to asyncssh's ``run_sftp_server`` (the ``sftp`` subsystem) or
``run_scp_server`` (``scp -f``/``-t``). The server releases its processes in ``exit()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from gateway.engines import Container, DockerEngine


@dataclass(frozen=True)
class FileOp:
    """One finished file operation, for metrics and audit."""

    op: str  # open, read, write, stat, lstat, list, mkdir, rmdir, remove, rename, symlink, ...
    path: str
    nbytes: int
    result: str  # "ok" | "denied" | "no_such_file" | "exists" | "failure" | "aborted" ...
    seconds: float


@dataclass(frozen=True)
class FileAccess:
    engine: DockerEngine
    container: Container
    login: str  # exec User for every process inside the container (name or uid[:gid])
    writable: bool  # the grant has sftp-write; else every modifying op -> permission denied
    paths: tuple[str, ...] = ()  # allowed prefixes, checked after resolving in the container
    # The same for modifying ops, from the write grants; None: the same as ``paths``.
    write_paths: tuple[str, ...] | None = None
    on_op: Callable[[FileOp], None] | None = None
    # Open handles (files and directory listings) of one session (SSHGW_MAX_SFTP_HANDLES).
    max_handles: int = 128


def make_sftp_server(
    access: FileAccess, chan: asyncssh.SSHServerChannel[bytes]
) -> asyncssh.SFTPServer:
    from gateway.sftp.server import ContainerSFTPServer

    return ContainerSFTPServer(access, chan)


__all__ = ["FileAccess", "FileOp", "make_sftp_server"]
