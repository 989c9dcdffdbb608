"""The archive backend: file access through the engine's archive API, for images without a shell.

The archive API runs as root inside the container and ignores the container user's permissions,
so :class:`~gateway.containerfs.fs.ContainerFS` uses it only when the image has no ``sh`` *and*
the session's login is root (what it may do then equals what the API does), and never with path
rules (:func:`~gateway.containerfs.backend.archive_refusal`). It offers what the API can: stat
(lstat semantics; symlinks are resolved by the engine), listings and file reads (a tar stream,
parsed here as hostile input), writes of whole files, directories and symlinks (a tar we build).
Removing, renaming and changing attributes of existing files are not possible without a process
in the container and are refused with a clear message.

The engine speaks HTTP (:meth:`~gateway.engines.base.Engine.archive_stat`, ``archive_get``,
``archive_put``); its errors are turned into :class:`~gateway.containerfs.errors.FSError` here.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import stat as statmod
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from gateway.containerfs.backend import Attrs, Forget, OpenFlags, VFSStat, Where
from gateway.containerfs.errors import ContainerGone, FSError, Unsupported, show_path
from gateway.containerfs.files import MAX_READ, DataStream, WriteFile
from gateway.containerfs.helper import HelperInfo
from gateway.containerfs.shell import Stat
from gateway.containerfs.tar import (
    DIRECTORY,
    END,
    END_OF_ARCHIVE,
    REGULAR,
    SYMLINK,
    TarError,
    TarMember,
    TarReader,
    member_path,
    padding,
    tar_header,
)
from gateway.engines.base import ArchivePathError, ArchiveReader, Engine, PathStat
from gateway.errors import EngineUnavailable

log = logging.getLogger(__name__)

NO_SHELL = "not possible without a shell in the container"
# A listing streams the whole tree below the directory; stop at some point.
LIST_BYTES_LIMIT = 256 << 20
LIST_ENTRIES_LIMIT = 100_000
# An upload is held in memory up to this size, then in a temporary file.
SPOOL_MEMORY = 8 << 20
_UMASK = 0o022


def no_shell(what: str) -> Unsupported:
    return Unsupported(f"{what}: {NO_SHELL}")


@contextmanager
def _engine_errors(path: bytes) -> Iterator[None]:
    """The engine's errors as file errors naming ``path``."""
    try:
        yield
    except ArchivePathError as exc:
        raise FSError(exc.code, path, exc.detail) from None
    except EngineUnavailable as exc:
        # The detail goes to the log, the user gets one plain line.
        log.warning("archive API: the engine did not answer: %s", exc.user_message)
        raise ContainerGone("the container engine did not answer; try again later") from None


def _member_stat(m: TarMember) -> Stat:
    kind = {
        DIRECTORY: statmod.S_IFDIR,
        SYMLINK: statmod.S_IFLNK,
        b"3": statmod.S_IFCHR,
        b"4": statmod.S_IFBLK,
        b"6": statmod.S_IFIFO,
    }.get(m.type, statmod.S_IFREG)
    return Stat(
        mode=kind | (m.mode & 0o7777),
        uid=m.uid,
        gid=m.gid,
        size=m.size,
        atime=m.mtime,
        mtime=m.mtime,
        nlink=1,
    )


class ArchiveSource:
    """A file's bytes from the engine's tar stream (a DataStream)."""

    def __init__(self, reader: ArchiveReader) -> None:
        self._reader = reader

    def __repr__(self) -> str:
        return f"<ArchiveSource {self._reader!r}>"

    async def read(self) -> bytes | None:
        try:
            return await self._reader.read()
        except EngineUnavailable as exc:
            raise ContainerGone(exc.user_message) from None

    async def check_end(self) -> None:
        """Nothing to ask: the response ended cleanly, and the tar reader checks the content."""

    async def close(self) -> None:
        await self._reader.close()

    async def stop(self) -> None:
        # No process to stop: the engine ends its side when the connection closes.
        await self._reader.close()


class ArchiveBackend:
    """File operations through the engine's archive API (root, no path rules)."""

    def __init__(self, engine: Engine, container_id: str) -> None:
        self.engine = engine
        self.container_id = container_id

    def __repr__(self) -> str:
        return f"<ArchiveBackend {self.container_id[:12]}>"

    @property
    def umask(self) -> int:
        return _UMASK

    def has_tool(self, name: str) -> bool:
        return False

    async def start(self) -> HelperInfo:
        """The start directory: /root when it is a directory, else /."""
        try:
            if (await self._stat(b"/root", True)).is_dir:
                return HelperInfo(home=b"/root", umask=_UMASK, tools=frozenset())
        except FSError:
            pass
        return HelperInfo(home=b"/", umask=_UMASK, tools=frozenset())

    async def close(self) -> None:
        return None

    # Metadata ------------------------------------------------------------------------------

    async def _head(self, path: bytes) -> PathStat:
        """The engine's lstat of ``path``."""
        with _engine_errors(path):
            return await self.engine.archive_stat(self.container_id, path)

    async def _stat(self, path: bytes, follow: bool) -> Stat:
        data = await self._head(path)
        if follow and statmod.S_ISLNK(data.mode):
            if not data.link_target.startswith(b"/"):
                raise FSError(errno.ENOENT, path, "dangling symbolic link")
            data = await self._head(data.link_target)
        return Stat(mode=data.mode, uid=0, gid=0, size=data.size, atime=data.mtime,
                    mtime=data.mtime, nlink=1)  # fmt: skip

    async def resolve(self, path: bytes, follow: bool, shown: bytes = b"") -> bytes:
        """The path with the last component's link resolved by the engine (when following)."""
        norm = posixpath.normpath(path)
        if not follow:
            return norm
        try:
            data = await self._head(norm)
        except FSError as exc:
            if exc.code == errno.ENOENT:
                return norm
            raise
        if data.link_target.startswith(b"/"):
            return posixpath.normpath(data.link_target)
        return norm

    async def stat(self, w: Where, shown: bytes, follow: bool) -> Stat:
        try:
            return await self._stat(w.real, follow)
        except FSError as exc:
            raise FSError(exc.code, shown, exc.reason) from None

    async def listdir(self, w: Where, at: bytes, shown: bytes) -> list[tuple[bytes, Stat]]:
        path = w.real
        st = await self._stat(path, follow=True)
        if not st.is_dir:
            raise FSError(errno.ENOTDIR, path)
        real = await self.resolve(path, True)
        out: list[tuple[bytes, Stat]] = []
        seen = 0
        # "DIR/." asks for the directory's content: members are "./", "./NAME", "./NAME/..."
        stream = await self._get(real.rstrip(b"/") + b"/.")
        try:
            reader = TarReader()
            ended = False
            while not ended:
                chunk = await stream.read()
                if chunk is None:
                    reader.feed_eof()
                else:
                    seen += len(chunk)
                    if seen > LIST_BYTES_LIMIT or len(out) > LIST_ENTRIES_LIMIT:
                        raise Unsupported(
                            "this directory is too large to list without a shell in the container"
                        )
                    reader.feed(chunk)
                try:
                    while (ev := reader.next_event()) is not None:
                        if isinstance(ev, TarMember):
                            name = member_path(ev.name)
                            if b"/" not in name:
                                out.append((name, _member_stat(ev)))
                        elif ev is END:
                            ended = True
                except TarError as exc:
                    raise FSError(
                        errno.EIO, path, f"bad tar stream from the engine: {exc}"
                    ) from None
                if chunk is None:
                    break
        finally:
            await stream.close()
        if not any(n == b"." for n, _ in out):
            out.insert(0, (b".", st))
        return out

    async def readlink(self, w: Where, shown: bytes) -> bytes:
        path = w.real
        st = await self._stat(path, follow=False)
        if not st.is_symlink:
            raise FSError(errno.EINVAL, path)
        stream = await self._get(path)
        try:
            reader = TarReader()
            while True:
                chunk = await stream.read()
                if chunk is None:
                    reader.feed_eof()
                else:
                    reader.feed(chunk)
                try:
                    ev = reader.next_event()
                except TarError as exc:
                    raise FSError(
                        errno.EIO, path, f"bad tar stream from the engine: {exc}"
                    ) from None
                if isinstance(ev, TarMember):
                    if not ev.is_symlink:
                        raise FSError(errno.EIO, path, "unexpected member in the tar stream")
                    return ev.linkname
                if chunk is None and ev is None:
                    raise FSError(errno.EIO, path, "the engine sent no link")
        finally:
            await stream.close()

    async def _new(self, real: bytes, shown: bytes) -> None:
        """The archive API overwrites: refuse when something exists there already."""
        try:
            await self._stat(real, False)
        except FSError as exc:
            if exc.code == errno.ENOENT:
                return
            raise
        raise FSError(errno.EEXIST, shown)

    async def mkdir(self, w: Where, perms: int, shown: bytes) -> None:
        await self._new(w.real, shown)
        await self._put_member(w.real, DIRECTORY, perms)

    async def symlink(self, target: bytes, w: Where, shown: bytes) -> None:
        await self._new(w.real, shown)
        await self._put_member(w.real, SYMLINK, 0o777, target)

    async def rmdir(self, w: Where, shown: bytes) -> None:
        raise no_shell("removing a directory")

    async def remove(self, w: Where, shown: bytes) -> None:
        raise no_shell("removing a file")

    async def rename(self, src: Where, dst: Where, overwrite: bool, old: bytes, new: bytes) -> None:
        raise no_shell("renaming")

    async def link(self, src: Where, dst: Where, shown: bytes) -> None:
        raise no_shell("a hard link")

    async def setstat(self, w: Where, shown: bytes, follow: bool, attrs: Attrs) -> None:
        raise no_shell("changing attributes of a file")

    async def statvfs(self, w: Where, shown: bytes) -> VFSStat:
        raise no_shell("file system statistics")

    async def id_map(self, path: bytes) -> dict[int, str]:
        return {}

    async def handle_stat(self, target: bytes, ident: bytes, shown: bytes) -> Stat:
        return await self.stat(Where.of(target, 0), shown, True)

    # Content ------------------------------------------------------------------------------

    async def _get(self, path: bytes) -> ArchiveSource:
        with _engine_errors(path):
            return ArchiveSource(await self.engine.archive_get(self.container_id, path))

    async def open_read(
        self, w: Where, shown: bytes, inline: int
    ) -> tuple[bytes, bytes, bytes | None]:
        real = w.real
        st = await self.stat(Where.of(real, 0), shown, True)
        if st.is_dir:
            raise FSError(errno.EISDIR, shown)
        if not st.is_file:
            raise FSError(errno.EINVAL, shown, "not a regular file")
        return await self.resolve(real, True), b"", None

    async def read_source(
        self, target: bytes, ident: bytes, offset: int
    ) -> tuple[DataStream, int, bytes | None]:
        # The archive API cannot seek: the stream starts at 0 and the reader skips.
        return await self._get(target), 0, member_path(target.rpartition(b"/")[2])

    async def open_write(
        self, w: Where, shown: bytes, flags: OpenFlags, forget: Forget
    ) -> WriteFile:
        real = await self.resolve(w.real, True)
        try:
            st: Stat | None = await self._stat(real, True)
        except FSError as exc:
            if exc.code != errno.ENOENT:
                raise
            st = None
        if st is not None:
            if flags.exclusive:
                raise FSError(errno.EEXIST, shown)
            if st.is_dir:
                raise FSError(errno.EISDIR, shown)
            if not flags.truncate:
                raise no_shell("changing an existing file in place")
            perms = st.mode & 0o7777
        else:
            if not flags.create:
                raise FSError(errno.ENOENT, shown)
            perms = (0o666 if flags.mode is None else flags.mode) & 0o7777 & ~self.umask
        return ArchiveWriteFile(
            self, forget, shown, Where.of(real, 0), mode=perms, readable=flags.readable,
            append=flags.append,
        )  # fmt: skip

    async def _put(self, folder: bytes, body: AsyncIterator[bytes], shown: bytes) -> None:
        with _engine_errors(shown):
            await self.engine.archive_put(self.container_id, folder, body)

    async def _put_member(
        self, path: bytes, member_type: bytes, mode: int, linkname: bytes = b""
    ) -> None:
        folder, _, name = path.rstrip(b"/").rpartition(b"/")

        async def body() -> AsyncIterator[bytes]:
            yield tar_header(
                name, type=member_type, mode=mode, linkname=linkname, mtime=int(time.time())
            )
            yield END_OF_ARCHIVE

        await self._put(folder or b"/", body(), path)

    async def put_file(
        self, path: bytes, spool: tempfile.SpooledTemporaryFile[bytes], size: int, mode: int,
        mtime: int,
    ) -> None:  # fmt: skip
        folder, _, name = path.rstrip(b"/").rpartition(b"/")

        async def body() -> AsyncIterator[bytes]:
            yield tar_header(name, type=REGULAR, size=size, mode=mode, mtime=mtime)
            spool.seek(0)
            left = size
            while left > 0:
                chunk = spool.read(min(left, 1 << 18))
                if not chunk:
                    raise FSError(errno.EIO, path, "the upload buffer ended early")
                left -= len(chunk)
                yield chunk
            yield padding(size) + END_OF_ARCHIVE

        await self._put(folder or b"/", body(), path)


class ArchiveWriteFile(WriteFile):
    """A whole-file upload through the archive API (an image without a shell, login root).

    The content collects in a spooled temporary buffer (memory up to 8 MiB, then a private
    temporary file of the gateway) and is sent as one tar member on close; an interrupted
    upload therefore never reaches the container.
    """

    def __init__(
        self,
        archive: ArchiveBackend,
        forget: Forget,
        path: bytes,
        final: Where,
        *,
        mode: int,
        readable: bool,
        append: bool,
    ) -> None:
        super().__init__(forget, path, final, append=append, readable=readable)
        self.archive = archive
        self._spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_MEMORY, prefix="sshgw-upload-"
        )
        self._size = 0
        self._mode = mode
        self._mtime: int | None = None

    def __repr__(self) -> str:
        state = "CLOSED" if self.closed else f"SPOOLED {self._size} bytes"
        return f"<ArchiveWriteFile {show_path(self.path)!r} [{state}, {self.nbytes} written]>"

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
        mtime = self._mtime if self._mtime is not None else int(time.time())
        return Stat(mode=0o100000 | self._mode, uid=0, gid=0, size=self._size, atime=mtime,
                    mtime=mtime, nlink=1)  # fmt: skip

    async def set_attrs(self, attrs: Attrs) -> None:
        size, uid, gid, mode, _atime, mtime = attrs.astuple()
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

    async def _put(self) -> None:
        mtime = self._mtime if self._mtime is not None else int(time.time())
        await self.archive.put_file(self.final.real, self._spool, self._size, self._mode, mtime)

    async def publish(self) -> None:
        """Upload what is spooled so far (the close uploads the whole file again)."""
        if not self.closed:
            await self._put()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._forget(self)
        try:
            await self._put()
        finally:
            self._spool.close()

    async def abort(self) -> None:
        self.closed = True
        self._forget(self)
        self._spool.close()
