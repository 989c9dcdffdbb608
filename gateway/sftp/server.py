"""asyncssh SFTPServer over a container's file system (SCP rides on the same methods).

Every method asyncssh may call is overridden: the defaults act on the gateway's own file system
and user database. File operations happen inside the container through
:class:`~gateway.containerfs.ContainerFS`, as the session's login. Without the write right every
modifying operation is refused with "permission denied". Each finished operation is reported to
``FileAccess.on_op`` (reads and writes once per open file, at close, with the byte count).
Attributes and errors are translated in :mod:`gateway.sftp.mapping`; the request loop that calls
these methods is :mod:`gateway.sftp.loop`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import asyncssh
from asyncssh import (
    SFTPAttrs,
    SFTPError,
    SFTPFailure,
    SFTPInvalidHandle,
    SFTPName,
    SFTPOpUnsupported,
    SFTPPermissionDenied,
    SFTPVFSAttrs,
)
from asyncssh.constants import FXF_APPEND, FXF_CREAT, FXF_EXCL, FXF_READ, FXF_TRUNC, FXF_WRITE

from gateway.containerfs import ContainerFS, ReadFile, WriteFile
from gateway.errors import GatewayError
from gateway.sftp import FileOp
from gateway.sftp.mapping import attrs_from_stat, op_result, setstat_changes, sftp_error, vfs_attrs

if TYPE_CHECKING:
    from gateway.sftp import FileAccess

log = logging.getLogger(__name__)

_MODIFYING_OPEN = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL
# Directory listings one session holds in memory at once (each up to the helper's LIST_LIMIT).
MAX_LISTINGS_HELD = 8


@dataclass(slots=True)
class _Handle:
    file: ReadFile | WriteFile
    path: bytes
    started: float

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """For asyncssh's sparse-range request: report the whole file as data, no holes."""
        if whence == getattr(os, "SEEK_HOLE", 4):
            return 1 << 62
        return offset


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


class ContainerSFTPServer(asyncssh.SFTPServer):
    """One SFTP (or SCP) session inside one container."""

    def __init__(self, access: FileAccess, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        super().__init__(chan)
        self._access = access
        self._fs = ContainerFS(
            access.engine,
            access.container,
            access.login,
            access.paths,
            write_paths=access.write_paths,
            max_open=access.max_handles,
        )
        self._listings = 0  # directory listings held in memory (see scandir)
        self._started = False
        self._ending = False
        self._names: tuple[dict[int, str], dict[int, str]] = ({}, {})
        self._names_loaded = False
        self._starting = asyncio.Lock()  # requests may run concurrently (sftp.order)

    # Plumbing -----------------------------------------------------------------------------

    def ending(self) -> None:
        """The session is being ended (kill, revocation, shutdown): files closed from now on
        were cut short; uploads are discarded, never moved into place."""
        self._ending = True

    async def end_session(self) -> None:
        """Discard open files and stop the container's file helper (the session was ended)."""
        self._ending = True
        await self._fs.close()

    async def _ready(self) -> ContainerFS:
        if not self._started:
            async with self._starting:
                if not self._started:
                    await self._fs.start()
                    self._started = True
        return self._fs

    def start_dir(self) -> bytes | None:
        """Where relative paths start, once the session has started (None before)."""
        return self._fs.cwd if self._started else None

    def handle_path(self, file_obj: object) -> bytes | None:
        """The path an open file handle was opened on, as the client named it."""
        return file_obj.path if isinstance(file_obj, _Handle) else None

    def _emit(self, op: str, path: bytes, nbytes: int, result: str, started: float) -> None:
        cb = self._access.on_op
        if cb is None:
            return
        try:
            cb(FileOp(op, _show(path), nbytes, result, time.monotonic() - started))
        except Exception:  # bookkeeping must never break the data path
            log.exception("file operation hook failed")

    def _fail(self, op: str, path: bytes, exc: BaseException, started: float) -> NoReturn:
        self._emit(op, path, 0, op_result(exc), started)
        if isinstance(exc, GatewayError):
            raise sftp_error(exc) from None
        raise exc

    def _read_only(self, op: str, path: bytes) -> NoReturn:
        self._emit(op, path, 0, "denied", time.monotonic())
        raise SFTPPermissionDenied(
            f"{_show(path)}: Permission denied (read-only access: no sftp-write right)"
        )

    async def _modify(self, op: str, path: bytes, fn: Callable[[ContainerFS], Any]) -> None:
        """A modifying operation: refused without the write right, else done like :meth:`_run`."""
        if not self._access.writable:
            self._read_only(op, path)
        await self._run(op, path, fn)

    async def _run(self, op: str, path: bytes, fn: Callable[[ContainerFS], Any]) -> Any:
        t0 = time.monotonic()
        try:
            fs = await self._ready()
            result = await fn(fs)
        except (GatewayError, SFTPError) as exc:
            self._fail(op, path, exc, t0)
        self._emit(op, path, 0, "ok", t0)
        return result

    # Names ----------------------------------------------------------------------------------

    def format_user(self, uid: int | None) -> str:
        if uid is None:
            return ""
        return self._names[0].get(uid, str(uid))

    def format_group(self, gid: int | None) -> str:
        if gid is None:
            return ""
        return self._names[1].get(gid, str(gid))

    async def format_longname(self, name: SFTPName) -> None:
        if not self._names_loaded:
            self._names_loaded = True
            try:
                fs = await self._ready()
                self._names = await fs.names()
            except GatewayError as exc:
                log.debug("user names unavailable: %s", exc.user_message)
        super().format_longname(name)

    def map_path(self, path: bytes) -> bytes:
        return path

    def reverse_map_path(self, path: bytes) -> bytes:
        return path

    # Files ----------------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> _Handle:
        t0 = time.monotonic()
        if pflags & _MODIFYING_OPEN:
            if not self._access.writable:
                self._read_only("open", path)
            try:
                fs = await self._ready()
                f: ReadFile | WriteFile = await fs.open_write(
                    path,
                    create=bool(pflags & FXF_CREAT),
                    truncate=bool(pflags & FXF_TRUNC),
                    exclusive=bool(pflags & FXF_EXCL),
                    append=bool(pflags & FXF_APPEND),
                    readable=bool(pflags & FXF_READ),
                    mode=attrs.permissions,
                )
            except GatewayError as exc:
                self._fail("open", path, exc, t0)
        else:
            try:
                fs = await self._ready()
                f = await fs.open_read(path)
            except GatewayError as exc:
                self._fail("open", path, exc, t0)
        self._emit("open", path, 0, "ok", t0)
        return _Handle(f, path, time.monotonic())

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs) -> NoReturn:
        raise SFTPOpUnsupported("SFTP versions above 3 are not supported")

    def close(self, file_obj: object) -> Any:
        # asyncssh closes still-open handles itself when the session ends (the client never
        # sent a close): such an upload is incomplete and must not replace the final name. SCP
        # closes its file also when the connection broke mid-file.
        caller = sys._getframe(1).f_code.co_name
        if self._ending:
            aborted = True
        elif caller == "_process_close":
            aborted = False
        elif caller == "_cleanup":
            aborted = True
        else:
            aborted = self._client_gone()
        return self._close(file_obj, aborted)

    def _client_gone(self) -> bool:
        chan = self.channel
        state = getattr(chan, "_recv_state", "open")
        return bool(state != "open" or chan.is_closing())

    async def _close(self, file_obj: object, aborted: bool) -> None:
        h = self._handle(file_obj)
        f = h.file
        self._fs.forget(f)
        op = "write" if isinstance(f, WriteFile) else "read"
        if aborted:
            await f.abort()
            self._emit(op, h.path, f.nbytes, "aborted", h.started)
            return
        try:
            await f.close()
        except GatewayError as exc:
            self._emit(op, h.path, f.nbytes, op_result(exc), h.started)
            raise sftp_error(exc) from None
        self._emit(op, h.path, f.nbytes, "ok", h.started)

    @staticmethod
    def _handle(file_obj: object) -> _Handle:
        if not isinstance(file_obj, _Handle):
            raise SFTPInvalidHandle("invalid file handle")
        return file_obj

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        h = self._handle(file_obj)
        try:
            return await h.file.read(offset, size)
        except GatewayError as exc:
            raise sftp_error(exc) from None

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        h = self._handle(file_obj)
        if not isinstance(h.file, WriteFile):
            raise SFTPPermissionDenied(f"{_show(h.path)}: the file is not open for writing")
        try:
            return await h.file.write(offset, data)
        except GatewayError as exc:
            raise sftp_error(exc) from None

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        h = self._handle(file_obj)
        f = h.file
        try:
            st = await f.fstat()
        except GatewayError as exc:
            raise sftp_error(exc) from None
        return attrs_from_stat(st)

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        h = self._handle(file_obj)
        f = h.file
        if not isinstance(f, WriteFile):
            if not self._access.writable:
                self._read_only("setstat", h.path)
            await self.setstat(h.path, attrs)
            return
        t0 = time.monotonic()
        try:
            await f.setstat(**setstat_changes(attrs))
        except GatewayError as exc:
            self._fail("setstat", h.path, exc, t0)
        self._emit("setstat", h.path, 0, "ok", t0)

    async def fsync(self, file_obj: object) -> None:
        h = self._handle(file_obj)
        if isinstance(h.file, WriteFile):
            try:
                await h.file.flush()
            except GatewayError as exc:
                raise sftp_error(exc) from None

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> NoReturn:
        raise SFTPOpUnsupported("byte range locks are not supported")

    def unlock(self, file_obj: object, offset: int, length: int) -> NoReturn:
        raise SFTPOpUnsupported("byte range locks are not supported")

    async def fstatvfs(self, file_obj: object) -> SFTPVFSAttrs:
        h = self._handle(file_obj)
        return await self.statvfs(
            h.file.target if isinstance(h.file, ReadFile) else h.file.final.real
        )

    # Paths ----------------------------------------------------------------------------------

    async def lstat(self, path: bytes) -> SFTPAttrs:
        st = await self._run("lstat", path, lambda fs: fs.stat(path, follow=False))
        return attrs_from_stat(st)

    async def stat(self, path: bytes) -> SFTPAttrs:
        st = await self._run("stat", path, lambda fs: fs.stat(path, follow=True))
        return attrs_from_stat(st)

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        changes = setstat_changes(attrs)
        await self._modify("setstat", path, lambda fs: fs.setstat(path, follow=True, **changes))

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        changes = setstat_changes(attrs)
        await self._modify("setstat", path, lambda fs: fs.setstat(path, follow=False, **changes))

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        # A listing is held from the first readdir until its handle closes (up to the helper's
        # LIST_LIMIT of names each): only MAX_LISTINGS_HELD of them at once per session.
        if self._listings >= MAX_LISTINGS_HELD:
            self._emit("list", path, 0, "failure", time.monotonic())
            raise SFTPFailure(
                f"too many directory listings open at once (at most {MAX_LISTINGS_HELD})"
            )
        self._listings += 1
        try:
            entries = await self._run("list", path, lambda fs: fs.listdir(path))
            for name, st in entries:
                yield SFTPName(name, attrs=attrs_from_stat(st))
        finally:
            self._listings -= 1

    async def remove(self, path: bytes) -> None:
        await self._modify("remove", path, lambda fs: fs.remove(path))

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._modify("mkdir", path, lambda fs: fs.mkdir(path, attrs.permissions))

    async def rmdir(self, path: bytes) -> None:
        await self._modify("rmdir", path, lambda fs: fs.rmdir(path))

    async def realpath(self, path: bytes) -> bytes:
        result: bytes = await self._run("realpath", path, lambda fs: fs.realpath(path))
        return result

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._modify("rename", oldpath, lambda fs: fs.rename(oldpath, newpath, False))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._modify("rename", oldpath, lambda fs: fs.rename(oldpath, newpath, True))

    async def readlink(self, path: bytes) -> bytes:
        result: bytes = await self._run("readlink", path, lambda fs: fs.readlink(path))
        return result

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        await self._modify("symlink", newpath, lambda fs: fs.symlink(oldpath, newpath))

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        await self._modify("link", newpath, lambda fs: fs.link(oldpath, newpath))

    async def statvfs(self, path: bytes) -> SFTPVFSAttrs:
        v = await self._run("statvfs", path, lambda fs: fs.statvfs(path))
        return vfs_attrs(v, writable=self._access.writable)

    async def exit(self) -> None:
        # asyncssh closes the channel right after exit() returns; the sftp subsystem's exit status
        # must go out before that (OpenSSH's scp exits 1 after a good copy without it).
        chan = self.channel
        if chan.get_subsystem() == "sftp":
            chan.exit(0)
        try:
            await self._fs.close()
        except GatewayError as exc:
            log.debug("closing the container file session: %s", exc.user_message)
