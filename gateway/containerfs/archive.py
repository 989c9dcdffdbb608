"""File access through Docker's archive API, for images without a shell.

The archive API runs as root inside the container and ignores the container user's permissions,
so :class:`~gateway.containerfs.fs.ContainerFS` uses it only when the image has no ``sh`` *and*
the session's login is root (what it may do then equals what the API does). It offers what the
API can: stat (``HEAD``, lstat semantics; symlinks are resolved by the engine), listings and file
reads (``GET`` streams a tar, parsed here as hostile input), writes of whole files, directories
and symlinks (``PUT`` of a tar we build). Removing, renaming and changing attributes of existing
files are not possible without a process in the container and are refused with a clear message.

The HTTP calls are the engine's (:meth:`~gateway.engines.base.Engine.archive_stat`,
``archive_get``, ``archive_put``); their errors become :class:`FSError` here.
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

from gateway.containerfs.errors import ContainerGone, FSError, Unsupported
from gateway.containerfs.shell import Stat
from gateway.containerfs.tar import (
    DIRECTORY,
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


@contextmanager
def _engine_errors(path: bytes) -> Iterator[None]:
    """The engine's errors as file errors naming ``path``."""
    try:
        yield
    except ArchivePathError as exc:
        raise FSError(exc.code, path, exc.detail) from None
    except EngineUnavailable as exc:
        raise _engine_silent(exc) from None


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


class ArchiveStream:
    """A file's bytes from a ``GET archive`` tar stream (the same interface as a OneShot)."""

    def __init__(self, reader: ArchiveReader) -> None:
        self._reader = reader
        self.stderr = bytearray()
        self.pid: int | None = None

    async def read(self) -> bytes | None:
        try:
            return await self._reader.read()
        except EngineUnavailable as exc:
            raise ContainerGone(exc.user_message) from None

    async def wait(self, timeout: float = 30.0) -> int:
        return 0

    async def stop(self, helper: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._reader.close()


class ArchiveBackend:
    def __init__(self, engine: Engine, container_id: str) -> None:
        self.engine = engine
        self.container_id = container_id

    # Metadata ------------------------------------------------------------------------------

    async def head(self, path: bytes) -> PathStat:
        """The engine's lstat of ``path`` (name, size, mode, mtime, link target)."""
        with _engine_errors(path):
            return await self.engine.archive_stat(self.container_id, path)

    async def stat(self, path: bytes, follow: bool) -> Stat:
        data = await self.head(path)
        if follow and statmod.S_ISLNK(data.mode):
            if not data.link_target.startswith(b"/"):
                raise FSError(errno.ENOENT, path, "dangling symbolic link")
            data = await self.head(data.link_target)
        return Stat(mode=data.mode, uid=0, gid=0, size=data.size, atime=data.mtime,
                    mtime=data.mtime, nlink=1)  # fmt: skip

    async def resolve(self, path: bytes, follow: bool) -> bytes:
        """The path with the last component's link resolved by the engine (when following)."""
        norm = posixpath.normpath(path)
        if not follow:
            return norm
        try:
            data = await self.head(norm)
        except FSError as exc:
            if exc.code == errno.ENOENT:
                return norm
            raise
        if data.link_target.startswith(b"/"):
            return posixpath.normpath(data.link_target)
        return norm

    async def readlink(self, path: bytes) -> bytes:
        st = await self.stat(path, follow=False)
        if not st.is_symlink:
            raise FSError(errno.EINVAL, path)
        async with self._get(path) as stream:
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

    async def listdir(self, path: bytes) -> list[tuple[bytes, Stat]]:
        st = await self.stat(path, follow=True)
        if not st.is_dir:
            raise FSError(errno.ENOTDIR, path)
        real = await self.resolve(path, True)
        out: list[tuple[bytes, Stat]] = []
        seen = 0
        # "DIR/." asks for the directory's content: members are "./", "./NAME", "./NAME/..."
        async with self._get(real.rstrip(b"/") + b"/.") as stream:
            reader = TarReader()
            while not reader.done:
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
                except TarError as exc:
                    raise FSError(
                        errno.EIO, path, f"bad tar stream from the engine: {exc}"
                    ) from None
                if chunk is None:
                    break
        if not any(n == b"." for n, _ in out):
            out.insert(0, (b".", st))
        return out

    # Content ------------------------------------------------------------------------------

    def _get(self, path: bytes) -> _GetContext:
        return _GetContext(self, path)

    async def open_stream(self, path: bytes) -> ArchiveStream:
        ctx = _GetContext(self, path)
        return await ctx.__aenter__()

    async def put(self, folder: bytes, body: AsyncIterator[bytes], shown: bytes) -> None:
        with _engine_errors(shown):
            await self.engine.archive_put(self.container_id, folder, body)

    async def put_member(
        self, path: bytes, member_type: bytes, mode: int, linkname: bytes = b""
    ) -> None:
        folder, _, name = path.rstrip(b"/").rpartition(b"/")

        async def body() -> AsyncIterator[bytes]:
            yield tar_header(
                name, type=member_type, mode=mode, linkname=linkname, mtime=int(time.time())
            )
            yield END_OF_ARCHIVE

        await self.put(folder or b"/", body(), path)

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

        await self.put(folder or b"/", body(), path)


class _GetContext:
    def __init__(self, backend: ArchiveBackend, path: bytes) -> None:
        self.backend = backend
        self.path = path
        self._stream: ArchiveStream | None = None

    async def __aenter__(self) -> ArchiveStream:
        with _engine_errors(self.path):
            reader = await self.backend.engine.archive_get(self.backend.container_id, self.path)
        self._stream = ArchiveStream(reader)
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.close()


def no_shell(what: str) -> Unsupported:
    return Unsupported(f"{what}: {NO_SHELL}")


def _engine_silent(exc: EngineUnavailable) -> ContainerGone:
    """The engine did not answer: the detail goes to the log, the user gets one plain line."""
    log.warning("archive API: the engine did not answer: %s", exc.user_message)
    return ContainerGone("the container engine did not answer; try again later")
