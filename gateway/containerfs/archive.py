"""File access through Docker's archive API, for images without a shell.

The archive API runs as root inside the container and ignores the container user's permissions,
so :class:`~gateway.containerfs.fs.ContainerFS` uses it only when the image has no ``sh`` *and*
the session's login is root (what it may do then equals what the API does). It offers what the
API can: stat (``HEAD``, lstat semantics; symlinks are resolved by the engine), listings and file
reads (``GET`` streams a tar, parsed here as hostile input), writes of whole files, directories
and symlinks (``PUT`` of a tar we build). Removing, renaming and changing attributes of existing
files are not possible without a process in the container and are refused with a clear message.

Requests ask for ``Accept-Encoding: identity``: by default dockerd compresses on the fly (FACTS).
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import posixpath
import stat as statmod
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp

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
from gateway.engines.docker import DockerEngine

log = logging.getLogger(__name__)

NO_SHELL = "not possible without a shell in the container"
# A listing streams the whole tree below the directory; stop at some point.
LIST_BYTES_LIMIT = 256 << 20
LIST_ENTRIES_LIMIT = 100_000
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
_IDENTITY = {"Accept-Encoding": "identity"}

# Go's fs.FileMode bits.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20


def go_mode_to_posix(mode: int) -> int:
    perm = mode & 0o777
    if mode & _GO_SETUID:
        perm |= statmod.S_ISUID
    if mode & _GO_SETGID:
        perm |= statmod.S_ISGID
    if mode & _GO_STICKY:
        perm |= statmod.S_ISVTX
    if mode & _GO_DIR:
        kind = statmod.S_IFDIR
    elif mode & _GO_SYMLINK:
        kind = statmod.S_IFLNK
    elif mode & _GO_PIPE:
        kind = statmod.S_IFIFO
    elif mode & _GO_SOCKET:
        kind = statmod.S_IFSOCK
    elif mode & _GO_DEVICE:
        kind = statmod.S_IFCHR if mode & _GO_CHARDEV else statmod.S_IFBLK
    else:
        kind = statmod.S_IFREG
    return kind | perm


def _parse_time(text: str) -> int:
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        zone = "+00:00" if text.endswith("Z") else ""
        if not zone and ("+" in frac or "-" in frac):
            for sign in "+-":
                if sign in frac:
                    frac, _, z = frac.partition(sign)
                    zone = sign + z
        return int(datetime.fromisoformat(head + (zone or "+00:00")).timestamp())
    except ValueError:
        return 0


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

    def __init__(self, resp: aiohttp.ClientResponse, cm: Any) -> None:
        self._resp = resp
        self._cm = cm
        self.stderr = bytearray()
        self.pid: int | None = None
        self._eof = False

    async def read(self) -> bytes | None:
        if self._eof:
            return None
        try:
            chunk = await self._resp.content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError):
            raise ContainerGone("the archive stream from the engine broke") from None
        if not chunk:
            self._eof = True
            return None
        return chunk

    async def wait(self, timeout: float = 30.0) -> int:
        return 0

    async def stop(self, helper: object) -> None:
        await self.close()

    async def close(self) -> None:
        # Close the connection itself: a half-read body must not go back to the pool.
        if not self._eof:
            self._resp.close()
        try:
            await self._cm.__aexit__(None, None, None)
        except Exception as exc:
            log.debug("closing an archive stream: %r", exc)


class ArchiveBackend:
    def __init__(self, engine: DockerEngine, container_id: str) -> None:
        self.engine = engine
        self.container_id = container_id

    def _client(self) -> aiodocker.Docker:
        return self.engine._client()

    # Metadata ------------------------------------------------------------------------------

    async def head(self, path: bytes) -> dict[str, Any]:
        """The engine's lstat of ``path`` (name, size, mode, mtime, linkTarget)."""
        docker = self._client()
        try:
            # Not through aiodocker's query helper: it cannot read the empty body of a HEAD error.
            await docker._check_version()
            url = docker._canonicalize_url(f"containers/{self.container_id}/archive")
            async with docker.session.head(
                url, params={"path": path.decode("utf-8", "surrogateescape")}
            ) as resp:
                status = resp.status
                header = resp.headers.get("X-Docker-Container-Path-Stat", "")
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _engine_silent(exc) from None
        if status == 404:
            raise FSError(errno.ENOENT, path)
        if status != 200:
            raise FSError(errno.EIO, path, f"the engine answered HTTP {status}")
        try:
            data = json.loads(base64.b64decode(header))
            if not isinstance(data, dict):
                raise ValueError
            return data
        except ValueError:
            raise FSError(errno.EIO, path, "unexpected answer from the engine") from None

    async def stat(self, path: bytes, follow: bool) -> Stat:
        data = await self.head(path)
        mode = go_mode_to_posix(int(data.get("mode", 0)))
        if follow and statmod.S_ISLNK(mode):
            target = str(data.get("linkTarget") or "")
            if not target.startswith("/"):
                raise FSError(errno.ENOENT, path, "dangling symbolic link")
            data = await self.head(target.encode("utf-8", "surrogateescape"))
            mode = go_mode_to_posix(int(data.get("mode", 0)))
        mtime = _parse_time(str(data.get("mtime", "")))
        return Stat(mode=mode, uid=0, gid=0, size=int(data.get("size", 0)), atime=mtime,
                    mtime=mtime, nlink=1)  # fmt: skip

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
        target = str(data.get("linkTarget") or "")
        if target.startswith("/"):
            return posixpath.normpath(target.encode("utf-8", "surrogateescape"))
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
        try:
            async with self._client()._query(
                f"containers/{self.container_id}/archive",
                method="PUT",
                params={"path": folder.decode("utf-8", "surrogateescape")},
                data=body,
                headers={"Content-Type": "application/x-tar", **_IDENTITY},
                timeout=_STREAM_TIMEOUT,
            ) as resp:
                await resp.read()
        except aiodocker.DockerError as exc:
            code = (
                errno.ENOENT
                if exc.status == 404
                else errno.EACCES
                if exc.status == 403
                else errno.EIO
            )
            raise FSError(code, shown, None if code != errno.EIO else str(exc.message)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _engine_silent(exc) from None

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
        cm = self.backend._client()._query(
            f"containers/{self.backend.container_id}/archive",
            method="GET",
            params={"path": self.path.decode("utf-8", "surrogateescape")},
            headers=_IDENTITY,
            timeout=_STREAM_TIMEOUT,
        )
        try:
            resp = await cm.__aenter__()
        except aiodocker.DockerError as exc:
            code = errno.ENOENT if exc.status == 404 else errno.EIO
            raise FSError(code, self.path) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _engine_silent(exc) from None
        self._stream = ArchiveStream(resp, cm)
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.close()


def no_shell(what: str) -> Unsupported:
    return Unsupported(f"{what}: {NO_SHELL}")


def _engine_silent(exc: BaseException) -> ContainerGone:
    """The engine did not answer: the detail goes to the log, the user gets one plain line."""
    log.warning("archive API: the engine did not answer: %r", exc)
    return ContainerGone("the container engine did not answer; try again later")
