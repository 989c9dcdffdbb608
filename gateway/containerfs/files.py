"""Open files: what both backends share, and the interface of files open for writing.

Reading (:class:`ReadFile`): a file no larger than ``SMALL_READ`` may arrive whole with the open
request. A larger one is read from one sequential stream the backend starts at the first read
(:meth:`~gateway.containerfs.backend.Backend.read_source`): a tar stream (parsed on the fly by
:mod:`gateway.containerfs.tar`, only the member asked for is accepted) or raw bytes from an
offset. Requests are answered in full (short only at the end of the file); a request ahead of the
stream by a little is served by skipping, one anywhere else restarts the stream there.

Writing (:class:`WriteFile`): each backend has its own implementation
(:class:`~gateway.containerfs.shellfs.ShellWriteFile`,
:class:`~gateway.containerfs.archive.ArchiveWriteFile`); an interrupted upload of a new file
never appears under the final name.
"""

from __future__ import annotations

import abc
import errno
from collections import deque
from typing import TYPE_CHECKING, Protocol, Unpack

from gateway.containerfs.backend import AttrChanges, Attrs
from gateway.containerfs.errors import FSError, show_path
from gateway.containerfs.shell import Stat
from gateway.containerfs.tar import END, TarError, TarMember, TarReader, member_path

if TYPE_CHECKING:
    from gateway.containerfs.backend import Backend, Forget, Where

SMALL_READ = 512 * 1024
SMALL_WRITE = 256 * 1024
MAX_READ = 4 * 1024 * 1024
SKIP_AHEAD = 1024 * 1024


class DataStream(Protocol):
    """Where a file's bytes come from: a one-shot process, or the engine's archive API."""

    async def read(self) -> bytes | None:
        """The next piece of the file's bytes; None at the end."""
        ...

    async def check_end(self) -> None:
        """After the end: an FSError when the producer failed (the bytes may be incomplete)."""
        ...

    async def close(self) -> None:
        """Disconnect (the producer has finished or will finish by itself)."""
        ...

    async def stop(self) -> None:
        """Give up half-way: stop the producer if it may still run, then disconnect."""
        ...


class OpenFile(Protocol):
    """What every open file offers, whichever backend opened it."""

    path: bytes
    nbytes: int
    closed: bool

    async def read(self, offset: int, size: int) -> bytes: ...

    async def fstat(self) -> Stat: ...

    async def close(self) -> None: ...

    async def abort(self) -> None: ...


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
        await self.shot.check_end()

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

    async def close(self) -> None:
        if self.eof:
            await self.shot.close()
        else:
            await self.shot.stop()


class Handle:
    """What every open file keeps: the path the client named (for messages), how to leave
    the session's open-file registry on close, and the bytes moved."""

    def __init__(self, forget: Forget, path: bytes) -> None:
        self._forget = forget
        self.path = path
        self.nbytes = 0
        self.closed = False


class ReadFile(Handle):
    """A file opened for reading (either backend: it gives the stream, this class the reads)."""

    def __init__(
        self,
        backend: Backend,
        forget: Forget,
        path: bytes,
        target: bytes,
        ident: bytes,
        data: bytes | None,
    ) -> None:
        super().__init__(forget, path)
        self.backend = backend
        self.target = target
        # dev:ino of the object opened: every later read acts on it or fails (never the name's
        # new object when it was swapped meanwhile).
        self.ident = ident
        self._st: Stat | None = None
        self._data = data
        self._src: _Source | None = None
        self._last: tuple[int, bytes] | None = None

    def __repr__(self) -> str:
        if self.closed:
            state = "CLOSED"
        elif self._data is not None:
            state = f"IN MEMORY, {len(self._data)} bytes"
        elif self._src is not None:
            state = f"STREAMING at {self._src.pos}"
        else:
            state = "OPEN"
        return f"<ReadFile {show_path(self.path)!r} [{state}, {self.nbytes} read]>"

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
            await old.close()
        stream, start, tar_name = await self.backend.read_source(self.target, self.ident, offset)
        self._src = _Source(stream, start, tar_name)
        if start < offset:
            # a stream that cannot seek (the archive API) starts earlier: skip to the offset
            await self._src.skip(offset - start)

    async def fstat(self) -> Stat:
        if self._st is None:
            self._st = await self.backend.handle_stat(self.target, self.ident, self.path)
        return self._st

    async def close(self) -> None:
        self.closed = True
        self._data = None
        self._forget(self)
        if self._src is not None:
            src, self._src = self._src, None
            await src.close()

    async def abort(self) -> None:
        await self.close()


class WriteFile(Handle, abc.ABC):
    """A file opened for writing (and maybe reading), by either backend.

    An abstract class rather than a Protocol so that ``isinstance`` stays cheap on the SFTP
    write path (about 0.2 µs against 24 µs for a runtime-checkable Protocol); it implements
    only the keyword form of ``setstat``. ``final`` is where the file appears on close.
    """

    def __init__(
        self, forget: Forget, path: bytes, final: Where, *, append: bool, readable: bool
    ) -> None:
        super().__init__(forget, path)
        self.final = final
        self.append = append
        self.readable = readable
        # Its content appears under ``final`` only at close (or :meth:`publish`).
        self.temp = True

    @abc.abstractmethod
    async def write(self, offset: int, data: bytes) -> int: ...

    @abc.abstractmethod
    async def read(self, offset: int, size: int) -> bytes: ...

    @abc.abstractmethod
    async def flush(self) -> None: ...

    @abc.abstractmethod
    async def fstat(self) -> Stat: ...

    async def setstat(self, **changes: Unpack[AttrChanges]) -> None:
        """fsetstat: change attributes of the open file (None or absent: leave unchanged)."""
        await self.set_attrs(Attrs(**changes))

    @abc.abstractmethod
    async def set_attrs(self, attrs: Attrs) -> None: ...

    @abc.abstractmethod
    async def publish(self) -> None:
        """Make what was written so far visible under ``final`` while the file stays open
        (a no-op for a file written in place)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish: the content appears under ``final``, or an error."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Give up: nothing of an unfinished new file appears."""
