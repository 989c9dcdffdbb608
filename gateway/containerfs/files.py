"""Open files: reads served from one sequential stream, writes into a temporary name.

Reading: a file no larger than ``SMALL_READ`` arrives whole with the open request, through the
helper shell. A larger one is read by a dedicated process started at the first read: ``tar -c``
(parsed on the fly by :mod:`gateway.containerfs.tar`) from offset 0, or ``dd`` from any other
offset. Requests are answered in full (short only at the end of the file); a request ahead of
the stream by a little is served by skipping, one anywhere else restarts the stream there.

Writing: data first collects in a small buffer; a file that stays small is written by the
helper in one request, a larger one streams into a dedicated ``dd``. A new file is written under
a temporary name in the same directory and renamed over the final name on close, so an
interrupted upload never leaves a partial file under the final name. An existing file is written
in place (like OpenSSH's sftp-server: inode, owner, mode and links stay).
"""

from __future__ import annotations

import errno
import logging
import tempfile
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from gateway.containerfs.errors import FSError
from gateway.containerfs.helper import OneShot, ShellHelper
from gateway.containerfs.shell import Stat, classify, fd_open, sq
from gateway.containerfs.tar import END, TarError, TarMember, TarReader, member_path

if TYPE_CHECKING:
    from gateway.containerfs.fs import ContainerFS, Where

log = logging.getLogger(__name__)

SMALL_READ = 512 * 1024
SMALL_WRITE = 256 * 1024
MAX_READ = 4 * 1024 * 1024
# An archive-mode upload is held in memory up to this size, then in a temporary file.
SPOOL_MEMORY = 8 << 20
SKIP_AHEAD = 1024 * 1024


class DataStream(Protocol):
    """Where a file's bytes come from: a one-shot process, or the engine's archive API."""

    stderr: bytearray

    async def read(self) -> bytes | None: ...

    async def wait(self, timeout: float = 30.0) -> int: ...

    async def stop(self, helper: ShellHelper | None) -> None: ...


class _Source:
    """A dedicated stream producing the file's bytes from ``pos`` on."""

    def __init__(self, shot: DataStream, pos: int, tar_name: bytes | None) -> None:
        self.shot = shot
        self.pos = pos
        self._tar = TarReader() if tar_name is not None else None
        self._tar_name = tar_name
        self._member: TarMember | None = None
        self._member_left = 0
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._head_off = 0
        self.eof = False

    async def _pull(self) -> None:
        """Add at least one chunk, or reach the end."""
        while not self.eof:
            chunk = await self.shot.read()
            if self._tar is None:
                if chunk is None:
                    await self._check_exit()
                    self.eof = True
                    return
                if chunk:
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                    return
                continue
            if chunk is None:
                self._tar.feed_eof()
            else:
                self._tar.feed(chunk)
            added = self._drain_tar()
            if added or self.eof:
                return
            if chunk is None:
                await self._check_exit()
                raise FSError(errno.EIO, b"", "the tar stream from the container ended early")

    def _drain_tar(self) -> bool:
        assert self._tar is not None
        added = False
        try:
            while (ev := self._tar.next_event()) is not None:
                if isinstance(ev, TarMember):
                    if self._member is not None:
                        raise TarError("more than one member in the tar stream")
                    if not ev.is_file or member_path(ev.name) != self._tar_name:
                        raise TarError("unexpected member in the tar stream")
                    self._member = ev
                    self._member_left = ev.size
                    if ev.size == 0:
                        self.eof = True
                elif isinstance(ev, bytes):
                    if self._member is None:
                        raise TarError("data before a header in the tar stream")
                    self._member_left -= len(ev)
                    self._chunks.append(ev)
                    self._buffered += len(ev)
                    added = True
                    if self._member_left == 0:
                        self.eof = True
                elif ev is END:
                    if self._member is None:
                        raise FSError(errno.EIO, b"", "the container sent no file content")
                    self.eof = True
        except TarError as exc:
            raise FSError(errno.EIO, b"", f"bad tar stream from the container: {exc}") from None
        return added

    async def _check_exit(self) -> None:
        code = await self.shot.wait()
        if code != 0:
            text = bytes(self.shot.stderr)
            raise FSError(
                classify(text), b"", None if classify(text) != errno.EIO else "read failed"
            )

    async def take(self, n: int) -> bytes:
        while self._buffered < n and not self.eof:
            await self._pull()
        chunks = self._chunks
        if not chunks:
            return b""
        # The first chunk may be partly used already (``_head_off``): slices are cut through a
        # memoryview, so each byte is copied once however the chunks and requests line up.
        parts: list[bytes] = []
        need = n
        while need and chunks:
            head = chunks[0]
            off = self._head_off
            left = len(head) - off
            if off == 0 and left <= need:
                parts.append(head)
                chunks.popleft()
                need -= left
                continue
            k = min(left, need)
            with memoryview(head) as view:
                parts.append(bytes(view[off : off + k]))
            need -= k
            if k == left:
                chunks.popleft()
                self._head_off = 0
            else:
                self._head_off = off + k
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._buffered -= len(out)
        self.pos += len(out)
        return out

    async def skip(self, n: int) -> None:
        while n > 0:
            got = await self.take(min(n, 256 * 1024))
            if not got:
                return
            n -= len(got)

    async def close(self, helper: ShellHelper | None) -> None:
        await self.shot.stop(None if self.eof else helper)


class ReadFile:
    """A file opened for reading."""

    def __init__(
        self, fs: ContainerFS, path: bytes, target: bytes, ident: bytes, data: bytes | None
    ) -> None:
        self.fs = fs
        self.path = path
        self.target = target
        # dev:ino of the object opened: every later read acts on it or fails (never the name's
        # new object when it was swapped meanwhile).
        self.ident = ident
        self._st: Stat | None = None
        self._data = data
        self._src: _Source | None = None
        self._last: tuple[int, bytes] | None = None
        self.nbytes = 0
        self.closed = False

    @property
    def held(self) -> int:
        """Bytes of content this file keeps in memory."""
        return len(self._data) if self._data is not None else 0

    async def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, MAX_READ))
        if self._data is not None:
            out = self._data[offset : offset + size]
        else:
            if self._last is not None and self._last[0] == offset and len(self._last[1]) >= size:
                return self._last[1][:size]
            out = await self._read_stream(offset, size)
            self._last = (offset, out)
        self.nbytes += len(out)
        return out

    async def _read_stream(self, offset: int, size: int) -> bytes:
        src = self._src
        if src is None or offset < src.pos or offset > src.pos + SKIP_AHEAD:
            await self._restart(offset)
            src = self._src
            assert src is not None
        elif offset > src.pos:
            await src.skip(offset - src.pos)
            if src.pos != offset:  # the file ended before the offset
                return b""
        return await src.take(size)

    async def _restart(self, offset: int) -> None:
        if self._src is not None:
            old, self._src = self._src, None
            await old.close(self.fs.helper)
        fs = self.fs
        target = self.target
        if fs.archive is not None:
            # the archive API cannot seek: stream from the start and skip
            stream = await fs.archive.open_stream(target)
            self._src = _Source(stream, 0, member_path(target.rpartition(b"/")[2]))
            if offset:
                await self._src.skip(offset)
            return
        # The stream reads the object this handle opened, through a descriptor (fd 3).
        opened = fd_open(target, self.ident)
        if offset == 0 and fs.has_tool("tar"):
            line = opened + b"exec tar -chf - -C /proc/self/fd -- 3 </dev/null"
            shot = await fs.oneshot(line)
            self._src = _Source(shot, 0, member_path(b"3"))
        else:
            line = (
                opened
                + b"exec $DD if=/proc/self/fd/3 bs=65536 iflag=skip_bytes "
                + sq(b"skip=%d" % offset)
                + b" status=none </dev/null"
            )
            shot = await fs.oneshot(line)
            self._src = _Source(shot, offset, None)

    async def fstat(self) -> Stat:
        if self._st is None:
            self._st = await self.fs.handle_stat(self.target, self.ident, self.path)
        return self._st

    async def close(self) -> None:
        self.closed = True
        self._data = None
        self.fs.forget(self)
        if self._src is not None:
            src, self._src = self._src, None
            await src.close(self.fs.helper)

    async def abort(self) -> None:
        await self.close()


class WriteFile:
    """A file opened for writing (and maybe reading).

    A new file lives under a temporary name until close. Its mode and times are kept here and
    applied in the same request that writes the last data and renames it (``q_finish``), so a
    small upload costs one round trip at close; ``fstat`` applies them first.
    """

    def __init__(
        self,
        fs: ContainerFS,
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
        self.fs = fs
        self.path = path
        self.final = final
        self.target = target
        self.ident = ident
        self.temp = temp
        self.excl = excl
        self.append = append
        self.readable = readable
        self._pending = bytearray()
        self._pending_start = 0
        self._writer: OneShot | None = None
        self._writer_pos = 0
        # A temporary file: its exact size, and attributes still to apply.
        self._size = 0
        self._mode = create_mode
        self._atime: int | None = None
        self._mtime: int | None = None
        self.nbytes = 0
        self.closed = False

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
        code, body = await self.fs.helper.call(
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
        self._writer = await self.fs.oneshot(line)
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
        await self.fs.handle_setstat(
            self.target, self.ident, self.path, None, None, None, mode, atime, mtime
        )

    # Other operations on the handle ------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        if not self.readable:
            raise FSError(errno.EBADF, self.path, "the file is not open for reading")
        await self.flush()
        size = max(0, min(size, MAX_READ))
        code, body = await self.fs.helper.call(
            "q_read", self.target, self.ident, offset, size, limit=size + 1024
        )
        if code != 0:
            raise FSError(errno.EIO, self.path, "read failed")
        return body

    async def fstat(self) -> Stat:
        await self.flush()
        if self.temp:
            await self._apply_deferred()
        return await self.fs.handle_stat(self.target, self.ident, self.path)

    async def setstat(
        self,
        *,
        size: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mode: int | None = None,
        atime: int | None = None,
        mtime: int | None = None,
    ) -> None:
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
        await self.fs.handle_setstat(
            self.target, self.ident, self.path, size, uid, gid, mode, atime, mtime
        )

    async def close(self) -> None:
        if self.closed:
            return
        self.fs.forget(self)
        try:
            if self.temp:
                await self._finish_writer()
            else:
                await self.flush()
        except BaseException:
            await self.abort()
            raise
        self.closed = True
        if not self.temp:
            return
        data = bytes(self._pending)
        self._pending = bytearray()

        def opt(v: int | None, fmt: bytes = b"%d") -> bytes:
            return b"" if v is None else fmt % v

        final = self.final
        code, body = await self.fs.helper.call(
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

    async def abort(self) -> None:
        """Give up: stop the stream, remove the temporary file (a new file never appears)."""
        self.closed = True
        self.fs.forget(self)
        self._pending = bytearray()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.write_eof()
            await writer.stop(self.fs.helper)
        if self.temp:
            try:
                await self.fs.helper.call("q_discard", self.target, timeout=30.0)
            except FSError as exc:
                log.debug("cannot remove %r: %s", self.target, exc)


class ArchiveWriteFile(WriteFile):
    """A whole-file upload through the archive API (an image without a shell, login root).

    The content collects in a spooled temporary buffer (memory up to 8 MiB, then a private
    temporary file of the gateway) and is sent as one tar member on close; an interrupted
    upload therefore never reaches the container.
    """

    def __init__(
        self,
        fs: ContainerFS,
        path: bytes,
        final: Where,
        *,
        mode: int,
        readable: bool,
        append: bool,
    ) -> None:
        super().__init__(
            fs, path, final, final.real, b"", temp=True, excl=False, append=append,
            readable=readable, create_mode=mode,
        )  # fmt: skip
        self._spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_MEMORY, prefix="sshgw-upload-"
        )
        self._create = mode

    async def write(self, offset: int, data: bytes) -> int:
        if self.closed:
            raise FSError(errno.EBADF, self.path)
        if self.append:
            offset = self._size
        self._spill(offset, offset + len(data))
        self._spool.seek(offset)
        self._spool.write(data)
        self._size = max(self._size, offset + len(data))
        self._mtime = None
        self.nbytes += len(data)
        return len(data)

    def _spill(self, start: int, end: int) -> None:
        """After a gap or past the memory budget, the content lives in the temporary file.

        In memory a write at a large offset would allocate the whole gap; on disk the gap is a
        hole (no memory, no disk).
        """
        if start > self._size or end > SPOOL_MEMORY:
            self._spool.rollover()

    async def read(self, offset: int, size: int) -> bytes:
        if not self.readable:
            raise FSError(errno.EBADF, self.path, "the file is not open for reading")
        self._spool.seek(offset)
        return self._spool.read(max(0, min(size, MAX_READ)))

    async def flush(self) -> None:
        return None

    async def fstat(self) -> Stat:
        now = int(time.time())
        mtime = self._mtime if self._mtime is not None else now
        mode = self._mode if self._mode is not None else self._create
        return Stat(mode=0o100000 | mode, uid=0, gid=0, size=self._size, atime=mtime,
                    mtime=mtime, nlink=1)  # fmt: skip

    async def setstat(
        self,
        *,
        size: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mode: int | None = None,
        atime: int | None = None,
        mtime: int | None = None,
    ) -> None:
        if uid is not None or gid is not None:
            raise FSError(
                errno.EOPNOTSUPP, self.path, "changing the owner needs a shell in the container"
            )
        if size is not None:
            self._spill(size, size)
            self._spool.truncate(size)
            self._size = size
        if mode is not None:
            self._mode = mode & 0o7777
        if mtime is not None:
            self._mtime = mtime

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fs.forget(self)
        archive = self.fs.archive
        assert archive is not None
        mode = self._mode if self._mode is not None else self._create
        mtime = self._mtime if self._mtime is not None else int(time.time())
        try:
            await archive.put_file(self.final.real, self._spool, self._size, mode, mtime)
        finally:
            self._spool.close()

    async def abort(self) -> None:
        self.closed = True
        self.fs.forget(self)
        self._spool.close()
