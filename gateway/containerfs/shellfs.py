"""The shell-helper backend: every file operation is a process exec'd as the session's login.

Metadata and small files go through the session's long-lived helper shell
(:class:`~gateway.containerfs.helper.ShellHelper`, requests of :mod:`gateway.containerfs.shell`);
large reads and writes through dedicated ``tar``/``dd`` processes
(:class:`~gateway.containerfs.helper.OneShot`). The container's own permissions decide, and with
path rules every action names a directory the helper verifies before it acts (``Where.verify``).

Writing (:class:`ShellWriteFile`): data first collects in a small buffer; a file that stays
small is written by the helper in one request, a larger one streams into a dedicated ``dd``. A
new file is written under a temporary name in the same directory and renamed over the final name
on close, so an interrupted upload never leaves a partial file under the final name. An existing
file is written in place (like OpenSSH's sftp-server: inode, owner, mode and links stay).
"""

from __future__ import annotations

import errno
import logging
import os
import re

from gateway.containerfs.backend import Attrs, Forget, OpenFlags, VFSStat, Where
from gateway.containerfs.errors import FSError, show_path
from gateway.containerfs.files import MAX_READ, SMALL_READ, SMALL_WRITE, DataStream, WriteFile
from gateway.containerfs.helper import DEFAULT_LIMIT, LIST_LIMIT, HelperInfo, HelperPool, OneShot
from gateway.containerfs.shell import (
    Stat,
    classify,
    fd_open,
    parse_id_map,
    parse_listing,
    parse_stat,
    sq,
)
from gateway.containerfs.tar import member_path
from gateway.engines.base import Engine

log = logging.getLogger(__name__)

_IDENT = re.compile(rb"\d{1,20}:\d{1,20}")


class ShellBackend:
    """File operations through the session's helper shell and one-shot processes."""

    def __init__(self, engine: Engine, container_id: str, login: str) -> None:
        self.engine = engine
        self.container_id = container_id
        self.login = login
        self.helper = HelperPool(engine, container_id, login)

    def __repr__(self) -> str:
        return f"<ShellBackend {self.helper!r}>"

    @property
    def umask(self) -> int:
        info = self.helper.info
        return info.umask if info is not None else 0o022

    def has_tool(self, name: str) -> bool:
        info = self.helper.info
        return info is not None and name in info.tools

    async def start(self) -> HelperInfo:
        return await self.helper.start()

    async def close(self) -> None:
        await self.helper.close()

    async def oneshot(self, line: bytes) -> OneShot:
        return await OneShot.start(
            self.engine, self.container_id, self.login, line, stopper=self.helper
        )

    async def _call(
        self,
        func: str,
        shown: bytes,
        *args: bytes | int,
        limit: int = DEFAULT_LIMIT,
        timeout: float = 120.0,
    ) -> bytes:
        """A helper request that must succeed: its output, or an FSError naming ``shown``."""
        code, body = await self.helper.call(func, *args, limit=limit, timeout=timeout)
        if code != 0:
            raise FSError(classify(body), shown)
        return body

    # Metadata --------------------------------------------------------------------------------

    async def resolve(self, path: bytes, follow: bool, shown: bytes) -> bytes:
        return await self._call("q_real", shown, path, 1 if follow else 0)

    async def stat(self, w: Where, shown: bytes, follow: bool) -> Stat:
        # A resolved path is physical: its last component is no link, so lstat is stat.
        body = await self._call(
            "q_st", shown, w.dir, w.name, w.verify, 1 if follow and not w.verify else 0
        )
        return parse_stat(body)

    async def listdir(self, w: Where, at: bytes, shown: bytes) -> list[tuple[bytes, Stat]]:
        d = w.real if w.verify else at
        body = await self._call("q_list", shown, d, w.verify, limit=LIST_LIMIT, timeout=600.0)
        return parse_listing(body)

    async def mkdir(self, w: Where, perms: int, shown: bytes) -> None:
        await self._call("q_mkdir", shown, w.dir, w.name, b"%o" % perms, w.verify)

    async def rmdir(self, w: Where, shown: bytes) -> None:
        await self._call("q_rmdir", shown, w.dir, w.name, w.verify)

    async def remove(self, w: Where, shown: bytes) -> None:
        await self._call("q_rm", shown, w.dir, w.name, w.verify)

    async def rename(self, src: Where, dst: Where, overwrite: bool, old: bytes, new: bytes) -> None:
        code, body = await self.helper.call(
            "q_mv", src.dir, src.name, dst.dir, dst.name, 0 if overwrite else 1,
            src.verify | dst.verify,
        )  # fmt: skip
        if code != 0:
            err = classify(body)
            raise FSError(err, new if err == errno.EEXIST else old)

    async def symlink(self, target: bytes, w: Where, shown: bytes) -> None:
        await self._call("q_symlink", shown, target, w.dir, w.name, w.verify)

    async def link(self, src: Where, dst: Where, shown: bytes) -> None:
        await self._call(
            "q_link", shown, src.dir, src.name, dst.dir, dst.name, src.verify | dst.verify
        )

    async def readlink(self, w: Where, shown: bytes) -> bytes:
        body = await self._call("q_readlink", shown, w.dir, w.name, w.verify)
        return body[:-1] if body.endswith(b"\n") else body

    async def setstat(self, w: Where, shown: bytes, follow: bool, attrs: Attrs) -> None:
        await self._call("q_setstat", shown, w.dir, w.name, w.verify, 1 if follow else 0,
                         *attrs.args())  # fmt: skip

    async def handle_stat(self, target: bytes, ident: bytes, shown: bytes) -> Stat:
        """fstat of an open handle: the object it opened, or an error."""
        return parse_stat(await self._call("q_fstat", shown, target, ident))

    async def handle_setstat(self, target: bytes, ident: bytes, shown: bytes, attrs: Attrs) -> None:
        """fsetstat of an open handle: the object it opened, or an error."""
        if attrs.size is not None and attrs.size < 0:
            raise FSError(errno.EINVAL, shown)
        await self._call("q_fsetstat", shown, target, ident, *attrs.args())

    async def statvfs(self, w: Where, shown: bytes) -> VFSStat:
        body = await self._call("q_statvfs", shown, w.dir, w.name, w.verify)
        try:
            # VFSStat's nine fields in order, all decimal but the fsid (hex)
            nums = [int(x, 16 if i == 7 else 10) for i, x in enumerate(body.split()[:9])]
            if len(nums) != 9:
                raise ValueError(body)
            return VFSStat(*nums)
        except ValueError:
            raise FSError(errno.EIO, shown, "unexpected answer from the container") from None

    async def id_map(self, path: bytes) -> dict[int, str]:
        try:
            code, body = await self.helper.call("q_cat", path, 1 << 20, limit=(1 << 20) + 1024)
        except FSError:
            return {}
        return parse_id_map(body) if code == 0 else {}

    # Files -----------------------------------------------------------------------------------

    async def open_read(
        self, w: Where, shown: bytes, inline: int
    ) -> tuple[bytes, bytes, bytes | None]:
        code, body = await self.helper.call(
            "q_open_r", w.dir, w.name, inline, w.verify, limit=SMALL_READ + 4096
        )
        if code != 0:
            if code == 2:
                raise FSError(errno.EIO, shown, "read failed")
            err = classify(body)
            text = body.strip().splitlines()
            detail = "not a regular file" if text and text[-1] == b"Not a regular file" else None
            raise FSError(err, shown, detail)
        ident, _, body = body.partition(b"\n")
        if not _IDENT.fullmatch(ident):
            raise FSError(errno.EIO, shown, "unexpected answer from the container")
        # A small file arrived whole; a larger one is streamed from the start on demand.
        content = body if inline and len(body) <= SMALL_READ else None
        return w.real, ident, content

    async def read_source(
        self, target: bytes, ident: bytes, offset: int
    ) -> tuple[DataStream, int, bytes | None]:
        # The stream reads the object the handle opened, through a descriptor (fd 3).
        opened = fd_open(target, ident)
        if offset == 0 and self.has_tool("tar"):
            line = opened + b"exec tar -chf - -C /proc/self/fd -- 3 </dev/null"
            return await self.oneshot(line), 0, member_path(b"3")
        line = (
            opened
            + b"exec $DD if=/proc/self/fd/3 bs=65536 iflag=skip_bytes "
            + sq(b"skip=%d" % offset)
            + b" status=none </dev/null"
        )
        return await self.oneshot(line), offset, None

    async def open_write(
        self, w: Where, shown: bytes, flags: OpenFlags, forget: Forget
    ) -> WriteFile:
        tmp = b".sshgw-" + os.urandom(6).hex().encode() + b".tmp"
        opts = (
            (b"c" if flags.create else b"")
            + (b"e" if flags.exclusive else b"")
            + (b"t" if flags.truncate else b"")
        )
        body = await self._call("q_open_w", shown, w.dir, w.name, tmp, opts, w.verify)
        kind, _, rest = body.strip().partition(b" ")
        ident, _, st_text = rest.partition(b" ")
        if kind not in (b"E", b"N") or not _IDENT.fullmatch(ident):
            raise FSError(errno.EIO, shown, "unexpected answer from the container")
        if kind == b"E":
            if parse_stat(st_text).is_dir:
                raise FSError(errno.EISDIR, shown)
            return ShellWriteFile(
                self, forget, shown, w, w.real, ident, temp=False, excl=False,
                append=flags.append, readable=flags.readable, create_mode=None,
            )  # fmt: skip
        create_mode: int | None = None
        if flags.mode is not None:
            want = flags.mode & 0o7777 & ~self.umask
            if want != 0o666 & ~self.umask:
                create_mode = want
        return ShellWriteFile(
            self, forget, shown, w, w.join(tmp), ident, temp=True, excl=flags.exclusive,
            append=flags.append, readable=flags.readable, create_mode=create_mode,
        )  # fmt: skip


class ShellWriteFile(WriteFile):
    """A file opened for writing (and maybe reading) through the helper shell.

    A new file lives under a temporary name until close. Its mode and times are kept here and
    applied in the same request that writes the last data and renames it (``q_finish``), so a
    small upload costs one round trip at close; ``fstat`` applies them first.
    """

    def __init__(
        self,
        shell: ShellBackend,
        forget: Forget,
        path: bytes,
        final: Where,
        target: bytes,
        ident: bytes,
        *,
        temp: bool,
        excl: bool,
        append: bool,
        readable: bool,
        create_mode: int | None,
    ) -> None:
        super().__init__(forget, path, final, append=append, readable=readable)
        self.shell = shell
        self.target = target
        self.ident = ident
        self.temp = temp
        self.excl = excl
        self._pending = bytearray()
        self._pending_start = 0
        self._writer: OneShot | None = None
        self._writer_pos = 0
        # A temporary file: its exact size, and attributes still to apply.
        self._size = 0
        self._mode = create_mode
        self._atime: int | None = None
        self._mtime: int | None = None

    def __repr__(self) -> str:
        if self.closed:
            state = "CLOSED"
        elif self._writer is not None:
            state = f"STREAMING at {self._writer_pos}"
        elif self._pending:
            state = f"BUFFERED {len(self._pending)} bytes at {self._pending_start}"
        else:
            state = "OPEN"
        kind = "NEW" if self.temp else "IN PLACE"
        return f"<ShellWriteFile {show_path(self.path)!r} [{state}, {kind}, {self.nbytes} written]>"

    # Writing ---------------------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        if self.closed:
            raise FSError(errno.EBADF, self.path)
        n = len(data)
        self.nbytes += n
        if self.temp:
            if self.append:
                offset = self._size
            self._size = max(self._size, offset + n)
            self._atime = self._mtime = None  # a write after setting times moves mtime
        append = self.append and not self.temp
        if self._writer is not None:
            if append or offset == self._writer_pos:
                await self._writer.write(data)
                self._writer_pos += n
                return n
            await self._finish_writer()
        if self._pending and (append or offset == self._pending_start + len(self._pending)):
            self._pending += data
        else:
            if self._pending:
                await self._flush_pending()
            self._pending_start = offset
            self._pending = bytearray(data)
        if len(self._pending) > SMALL_WRITE:
            await self._start_writer()
        return n

    async def _flush_pending(self) -> None:
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending = bytearray()
        append = 1 if self.append and not self.temp else 0
        code, body = await self.shell.helper.call(
            "q_put", self.target, self.ident, self._pending_start, append, len(data), data=data
        )
        if code != 0:
            raise FSError(classify(body), self.path)

    async def _start_writer(self) -> None:
        start = self._pending_start
        if self.append and not self.temp:
            flags = b" oflag=append conv=notrunc"
        else:
            flags = b" oflag=seek_bytes " + sq(b"seek=%d" % start) + b" conv=notrunc"
        line = (
            fd_open(self.target, self.ident)
            + b"exec $DD of=/proc/self/fd/3 bs=65536"
            + flags
            + b" status=none"
        )
        self._writer = await self.shell.oneshot(line)
        self._writer_pos = start
        data = bytes(self._pending)
        self._pending = bytearray()
        await self._writer.write(data)
        self._writer_pos += len(data)

    async def _finish_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.write_eof()
        code = await writer.finish()
        if code != 0:
            raise FSError(classify(bytes(writer.stderr)), self.path)

    async def flush(self) -> None:
        await self._finish_writer()
        await self._flush_pending()

    async def _apply_deferred(self) -> None:
        if self._mode is None and self._atime is None and self._mtime is None:
            return
        mode, atime, mtime = self._mode, self._atime, self._mtime
        self._mode = self._atime = self._mtime = None
        await self.shell.handle_setstat(
            self.target, self.ident, self.path, Attrs(mode=mode, atime=atime, mtime=mtime)
        )

    # Other operations on the handle ------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        if not self.readable:
            raise FSError(errno.EBADF, self.path, "the file is not open for reading")
        await self.flush()
        size = max(0, min(size, MAX_READ))
        code, body = await self.shell.helper.call(
            "q_read", self.target, self.ident, offset, size, limit=size + 1024
        )
        if code != 0:
            raise FSError(errno.EIO, self.path, "read failed")
        return body

    async def fstat(self) -> Stat:
        await self.flush()
        if self.temp:
            await self._apply_deferred()
        return await self.shell.handle_stat(self.target, self.ident, self.path)

    async def set_attrs(self, attrs: Attrs) -> None:
        size, uid, gid, mode, atime, mtime = attrs.astuple()
        if self.temp:
            if size is not None and size == self._size:
                size = None  # OpenSSH's scp "truncates" every upload to its own size
            if mode is not None:
                self._mode = mode
                mode = None
            if atime is not None or mtime is not None:
                self._atime, self._mtime = atime, mtime
                atime = mtime = None
            if size is None and uid is None and gid is None:
                return
            if size is not None:
                self._size = size
        await self.flush()
        await self.shell.handle_setstat(
            self.target, self.ident, self.path, Attrs(size, uid, gid, mode, atime, mtime)
        )

    async def close(self) -> None:
        if self.closed:
            return
        self._forget(self)
        try:
            if self.temp:
                await self._finish_writer()
            else:
                await self.flush()
        except BaseException:
            await self.abort()
            raise
        self.closed = True
        if self.temp:
            await self._finish()

    async def publish(self) -> None:
        """Give a new file its final name now and keep writing it there: what the client
        wrote so far, mode and times included, is in place (an OPEN, RENAME or REMOVE by path
        before the CLOSE finds it, as sftp-server's files exist from OPEN on)."""
        if self.closed or not self.temp:
            return
        await self._finish_writer()
        await self._finish()
        self.temp = False
        self.target = self.final.real

    async def _finish(self) -> None:
        """Write what is pending, apply the deferred attributes and rename the temporary
        file to its final name (``q_finish``, one request)."""
        data = bytes(self._pending)
        self._pending = bytearray()

        def opt(v: int | None, fmt: bytes = b"%d") -> bytes:
            return b"" if v is None else fmt % v

        final = self.final
        code, body = await self.shell.helper.call(
            "q_finish",
            final.dir,
            self.target.rpartition(b"/")[2],
            final.name,
            self.ident,
            len(data),
            self._pending_start,
            opt(self._mode, b"%o"),
            opt(self._atime),
            opt(self._mtime),
            1 if self.excl else 0,
            final.verify,
            data=data,
        )
        if code != 0:
            raise FSError(classify(body), self.path)
        self._mode = self._atime = self._mtime = None  # applied

    async def abort(self) -> None:
        """Give up: stop the stream, remove the temporary file (a new file never appears)."""
        self.closed = True
        self._forget(self)
        self._pending = bytearray()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.write_eof()
            await writer.stop()
        if self.temp:
            try:
                await self.shell.helper.call("q_discard", self.target, timeout=30.0)
            except FSError as exc:
                log.debug("cannot remove %r: %s", self.target, exc)
