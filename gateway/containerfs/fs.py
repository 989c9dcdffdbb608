"""A container's file system, seen through processes exec'd inside it as the session's login.

Every operation runs in the container with the login's own uid, so the container's permissions
decide (a non-root login cannot read /root/secret). :class:`ContainerFS` holds what every
session has in common (the start directory, path rules, open files and their limits) and
delegates the work to one :class:`~gateway.containerfs.backend.Backend`, chosen once at
:meth:`ContainerFS.start`: the helper shell (:mod:`gateway.containerfs.shellfs`), or, for root in
an image without a shell, the engine's archive API (:mod:`gateway.containerfs.archive`).

Paths are bytes. Relative paths are taken from the session's start directory (the login's home).
With path prefixes (a grant's ``paths``), every path is first resolved inside the container
(``..`` and symlinks, physically) and checked with :func:`gateway.policy.path_allowed`;
operations on a link itself (lstat, remove, rename, ...) resolve only its parent directory.
"""

from __future__ import annotations

import errno
import logging
import posixpath
from typing import Unpack

from gateway.containerfs.archive import ArchiveBackend
from gateway.containerfs.backend import (
    AttrChanges,
    Attrs,
    Backend,
    OpenFlags,
    VFSStat,
    Where,
    archive_refusal,
)
from gateway.containerfs.errors import FSError, NoShell
from gateway.containerfs.files import SMALL_READ, OpenFile, ReadFile, WriteFile
from gateway.containerfs.helper import HelperInfo
from gateway.containerfs.shell import Stat
from gateway.containerfs.shellfs import ShellBackend
from gateway.engines.base import Container, Engine
from gateway.policy import normalize_prefix, path_allowed

__all__ = ["INLINE_BUDGET", "MAX_OPEN_FILES", "OUTSIDE", "ContainerFS", "VFSStat", "Where"]

log = logging.getLogger(__name__)

OUTSIDE = "outside the paths this grant allows"
# Open files per session, and file content held in memory for small reads across them.
MAX_OPEN_FILES = 128
INLINE_BUDGET = 16 << 20


def _text(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


class ContainerFS:
    """File operations inside one container as one login (one instance per SFTP/SCP session)."""

    def __init__(
        self,
        engine: Engine,
        container: Container,
        login: str,
        paths: tuple[str, ...] = (),
        write_paths: tuple[str, ...] | None = None,
        max_open: int = MAX_OPEN_FILES,
    ) -> None:
        self.engine = engine
        self.max_open = max_open
        self.container = container
        self.login = login
        # Read paths confine what is read and looked at; write paths (default: the same) every
        # change.
        self.paths = tuple(normalize_prefix(p) for p in paths)
        self.write_paths = (
            self.paths if write_paths is None else tuple(normalize_prefix(p) for p in write_paths)
        )
        # The helper shell, unless start() finds no shell and may use the archive API instead.
        self.backend: Backend = ShellBackend(engine, container.id, login)
        self._info: HelperInfo | None = None
        self._cwd: bytes | None = None
        self._names: tuple[dict[int, str], dict[int, str]] | None = None
        self._open: set[OpenFile] = set()

    def __repr__(self) -> str:
        state = "NOT STARTED" if self._info is None else f"cwd {_text(self.cwd)!r}"
        return (
            f"<ContainerFS {self.login or 'image user'}@{self.container.name}"
            f" [{state}, {len(self._open)} open] {self.backend!r}>"
        )

    # Session ---------------------------------------------------------------------------------

    async def start(self) -> HelperInfo:
        """Start the backend (the helper shell, else the archive API) and the start directory."""
        if self._info is not None and isinstance(self.backend, ArchiveBackend):
            return HelperInfo(home=self.cwd, umask=self.umask, tools=frozenset())
        try:
            info = await self.backend.start()
        except NoShell:
            if not isinstance(self.backend, ShellBackend):
                raise
            refusal = archive_refusal(self.login, bool(self.paths or self.write_paths))
            if refusal is not None:
                raise refusal from None
            await self.backend.close()
            self.backend = ArchiveBackend(self.engine, self.container.id)
            info = await self.backend.start()
        self._info = info
        if self._cwd is None:
            self._cwd = await self._start_dir(info.home)
        return info

    @property
    def archive(self) -> ArchiveBackend | None:
        """The archive backend when this session uses it (an image without a shell)."""
        return self.backend if isinstance(self.backend, ArchiveBackend) else None

    async def _start_dir(self, home: bytes) -> bytes:
        if not self.paths:
            return home
        try:
            real = await self.resolve(home, True)
            if path_allowed(self.paths, _text(real)):
                return real
        except FSError:
            pass
        return self.paths[0].encode("utf-8", "surrogateescape")

    @property
    def cwd(self) -> bytes:
        return self._cwd or b"/"

    @property
    def umask(self) -> int:
        return self.backend.umask

    def has_tool(self, name: str) -> bool:
        return self.backend.has_tool(name)

    async def close(self) -> None:
        """Abort open files (temporary files are removed) and stop the helper."""
        for f in list(self._open):
            try:
                await f.abort()
            except FSError as exc:
                log.debug("abort %r: %s", f.path, exc)
        self._open.clear()
        await self.backend.close()

    # Paths -----------------------------------------------------------------------------------

    def abspath(self, path: bytes) -> bytes:
        if b"\0" in path:
            raise FSError(errno.EINVAL, path.replace(b"\0", b"?"), "invalid file name")
        if not path:
            path = b"."
        if not path.startswith(b"/"):
            path = posixpath.join(self.cwd, path)
        return path

    async def resolve(self, path: bytes, follow: bool) -> bytes:
        """The physical path inside the container (the last component need not exist)."""
        return await self.backend.resolve(self.abspath(path), follow, path)

    async def _where(self, path: bytes, follow: bool, write: bool = False) -> Where:
        """Where an operation acts: a directory and a name in it.

        With path rules the path is resolved physically inside the container first and checked;
        the helper then enters the directory again and verifies it is still that directory
        (``verify``) before it acts on the name, so nothing swapped meanwhile is followed. A
        path outside the rules is refused the same way whether or not it exists.
        """
        p = self.abspath(path)
        rules = self.write_paths if write else self.paths
        if not (self.paths or self.write_paths):
            return Where.of(p, 0)
        if p.endswith(b"/") and p.strip(b"/"):
            follow = True  # "link/" names the link's target, as in POSIX path resolution
        try:
            real = await self.resolve(p, follow)
        except FSError:
            if rules and not path_allowed(rules, _text(posixpath.normpath(p))):
                raise FSError(errno.EACCES, path, OUTSIDE) from None
            raise
        if not path_allowed(rules, _text(real)):
            raise FSError(errno.EACCES, path, OUTSIDE)
        return Where.of(real, 1)

    def allowed(self, real: bytes) -> bool:
        return path_allowed(self.paths, _text(real))

    async def realpath(self, path: bytes) -> bytes:
        if self.paths:
            return (await self._where(path, True)).real
        return await self.resolve(path, True)

    # Metadata --------------------------------------------------------------------------------

    async def stat(self, path: bytes, follow: bool = True) -> Stat:
        return await self.backend.stat(await self._where(path, follow), path, follow)

    async def listdir(self, path: bytes) -> list[tuple[bytes, Stat]]:
        w = await self._where(path, True)
        entries = await self.backend.listdir(w, self.abspath(path), path)
        if self.paths:
            parent = posixpath.dirname(w.real.rstrip(b"/")) or b"/"
            if not self.allowed(parent):
                entries = [e for e in entries if e[0] != b".."]
        return entries

    async def mkdir(self, path: bytes, mode: int | None) -> None:
        w = await self._where(path, False, write=True)
        perms = (0o777 if mode is None else mode) & 0o7777 & ~self.umask
        await self.backend.mkdir(w, perms, path)

    async def rmdir(self, path: bytes) -> None:
        await self.backend.rmdir(await self._where(path, False, write=True), path)

    async def remove(self, path: bytes) -> None:
        await self.backend.remove(await self._where(path, False, write=True), path)

    async def rename(self, old: bytes, new: bytes, overwrite: bool) -> None:
        src = await self._where(old, False, write=True)
        dst = await self._where(new, False, write=True)
        await self.backend.rename(src, dst, overwrite, old, new)

    async def symlink(self, target: bytes, linkpath: bytes) -> None:
        if b"\0" in target:
            raise FSError(errno.EINVAL, linkpath, "invalid link target")
        w = await self._where(linkpath, False, write=True)
        await self.backend.symlink(target, w, linkpath)

    async def link(self, old: bytes, new: bytes) -> None:
        src = await self._where(old, False, write=True)
        dst = await self._where(new, False, write=True)
        await self.backend.link(src, dst, new)

    async def readlink(self, path: bytes) -> bytes:
        return await self.backend.readlink(await self._where(path, False), path)

    async def setstat(
        self,
        path: bytes,
        *,
        follow: bool = True,
        **changes: Unpack[AttrChanges],
    ) -> None:
        attrs = Attrs(**changes)
        if attrs.size is not None and attrs.size < 0:
            raise FSError(errno.EINVAL, path)
        w = await self._where(path, follow, write=True)
        await self.backend.setstat(w, path, follow, attrs)

    async def statvfs(self, path: bytes) -> VFSStat:
        return await self.backend.statvfs(await self._where(path, True), path)

    # Names of users and groups (for listings) ----------------------------------------------

    async def names(self) -> tuple[dict[int, str], dict[int, str]]:
        """uid -> name and gid -> name from the container's /etc/passwd and /etc/group."""
        if self._names is None:
            users = await self.backend.id_map(b"/etc/passwd")
            groups = await self.backend.id_map(b"/etc/group")
            self._names = (users, groups)
        return self._names

    # Files -----------------------------------------------------------------------------------

    def _check_open_limit(self, path: bytes) -> None:
        if len(self._open) >= self.max_open:
            raise FSError(errno.EMFILE, path, f"too many open files (at most {self.max_open})")

    def _inline_held(self) -> int:
        return sum(f.held for f in self._open if isinstance(f, ReadFile))

    async def open_read(self, path: bytes) -> ReadFile:
        self._check_open_limit(path)
        w = await self._where(path, True)
        # Small files come whole with the open, within a memory budget for the session.
        inline = SMALL_READ + 1 if self._inline_held() + SMALL_READ <= INLINE_BUDGET else 0
        target, ident, content = await self.backend.open_read(w, path, inline)
        f = ReadFile(self.backend, self.forget, path, target, ident, content)
        self._open.add(f)
        return f

    async def open_write(
        self,
        path: bytes,
        *,
        create: bool,
        truncate: bool,
        exclusive: bool,
        append: bool,
        readable: bool,
        mode: int | None,
    ) -> WriteFile:
        self._check_open_limit(path)
        w = await self._where(path, True, write=True)
        real = w.real
        if real.endswith(b"/") or w.name in (b"", b".", b".."):
            raise FSError(errno.EISDIR, path)
        if readable and self.paths and not self.allowed(real):
            raise FSError(errno.EACCES, path, OUTSIDE)
        flags = OpenFlags(create, truncate, exclusive, append, readable, mode)
        f = await self.backend.open_write(w, path, flags, self.forget)
        self._open.add(f)
        return f

    def forget(self, f: OpenFile) -> None:
        self._open.discard(f)
