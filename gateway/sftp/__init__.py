"""SFTP and SCP answered by the gateway, with the file work done inside the container.

The SSH server authorizes the session (``sftp-read`` at least), builds a :class:`FileAccess` and
starts :class:`~gateway.sftp.server.ContainerSFTPServer` under the ``sftp`` subsystem or
``scp -f``/``-t`` (``gateway.ssh.files.start_files``). The server releases its processes in
``exit()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.engines import Container, Engine


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
    engine: Engine
    container: Container
    login: str  # exec User for every process inside the container (name or uid[:gid])
    writable: bool  # the grant has sftp-write; else every modifying op -> permission denied
    paths: tuple[str, ...] = ()  # allowed prefixes, checked after resolving in the container
    # The same for modifying ops, from the write grants; None: the same as ``paths``.
    write_paths: tuple[str, ...] | None = None
    on_op: Callable[[FileOp], None] | None = None
    # Open handles (files and directory listings) of one session (SSHGW_MAX_SFTP_HANDLES).
    max_handles: int = 128


__all__ = ["FileAccess", "FileOp"]
