"""Docker's archive API, the parts that are pure decoding: the path-stat header and the stream.

``HEAD /containers/{id}/archive`` answers with ``X-Docker-Container-Path-Stat``: base64 JSON
(name, size, Go ``fs.FileMode``, RFC 3339 mtime, linkTarget) with lstat semantics (FACTS).
``GET`` streams a tar; :class:`DockerArchiveStream` hands its bytes on as they arrive.
"""

from __future__ import annotations

import base64
import json
import logging
import stat as statmod
from datetime import datetime
from typing import Any

import aiohttp

from gateway.engines.base import PathStat
from gateway.errors import EngineUnavailable

log = logging.getLogger(__name__)

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
    """A Go ``fs.FileMode`` as a POSIX ``st_mode`` (file type and permission bits)."""
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


def parse_time(text: str) -> int:
    """Seconds since the epoch of an RFC 3339 time as Go writes it (0 when unreadable)."""
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


def stat_from_header(header: str) -> PathStat:
    """The value of ``X-Docker-Container-Path-Stat``; ValueError when it is not one."""
    try:
        data = json.loads(base64.b64decode(header))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return PathStat(
            name=str(data.get("name", "")),
            size=int(data.get("size", 0)),
            mode=go_mode_to_posix(int(data.get("mode", 0))),
            mtime=parse_time(str(data.get("mtime", ""))),
            link_target=str(data.get("linkTarget") or "").encode("utf-8", "surrogateescape"),
        )
    except (TypeError, UnicodeError) as exc:
        raise ValueError(str(exc)) from None


class DockerArchiveStream:
    """The body of a ``GET archive`` response, chunk by chunk (an ArchiveReader)."""

    def __init__(self, resp: aiohttp.ClientResponse, cm: Any) -> None:
        self._resp = resp
        self._cm = cm
        self._eof = False
        self._closed = False

    def __repr__(self) -> str:
        state = "CLOSED" if self._closed else "ENDED" if self._eof else "STREAMING"
        return f"<{type(self).__name__} [{state}]>"

    async def read(self) -> bytes | None:
        """The next chunk as it arrived; None at the end."""
        if self._eof:
            return None
        try:
            chunk = await self._resp.content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError):
            raise EngineUnavailable("the archive stream from the engine broke") from None
        if not chunk:
            self._eof = True
            return None
        return chunk

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Close the connection itself: a half-read body must not go back to the pool.
        if not self._eof:
            self._resp.close()
        try:
            await self._cm.__aexit__(None, None, None)
        except Exception as exc:
            log.debug("closing an archive stream: %r", exc)
