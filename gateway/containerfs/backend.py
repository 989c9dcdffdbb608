"""The one file-system interface :class:`~gateway.containerfs.fs.ContainerFS` delegates to.

Two backends implement :class:`Backend`: the shell helper
(:class:`~gateway.containerfs.shellfs.ShellBackend`, processes exec'd as the session's login,
the normal case) and Docker's archive API (:class:`~gateway.containerfs.archive.ArchiveBackend`,
for root in images without a shell). :func:`archive_refusal` decides once, at the start of a
session, whether the archive backend may stand in. ``ContainerFS`` keeps what is common: path
rules, the start directory, open-file limits; a backend acts on a :class:`Where` it was given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

from gateway.containerfs.errors import NoShell

if TYPE_CHECKING:
    from gateway.containerfs.files import DataStream, OpenFile, WriteFile
    from gateway.containerfs.helper import HelperInfo
    from gateway.containerfs.shell import Stat


@dataclass(frozen=True, slots=True)
class Where:
    """A directory and a name in it; ``verify`` when both were resolved physically."""

    dir: bytes
    name: bytes
    verify: int

    @classmethod
    def of(cls, path: bytes, verify: int) -> Where:
        head, _, name = path.rstrip(b"/").rpartition(b"/")
        if not name:
            return cls(b"/", b".", verify)
        return cls(head or b"/", name, verify)

    @property
    def real(self) -> bytes:
        return self.join(self.name) if self.name != b"." else self.dir

    def join(self, name: bytes) -> bytes:
        return (self.dir.rstrip(b"/") or b"") + b"/" + name


@dataclass(frozen=True, slots=True)
class VFSStat:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    fsid: int
    namemax: int


_Opt = int | None


# The keyword form of an :class:`Attrs` (``setstat(path, mode=0o600)``); absent: unchanged.
class AttrChanges(TypedDict, total=False):
    size: _Opt
    uid: _Opt
    gid: _Opt
    mode: _Opt
    atime: _Opt
    mtime: _Opt


@dataclass(frozen=True, slots=True)
class Attrs:
    """Attribute changes of a setstat (None: leave unchanged)."""

    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    atime: int | None = None
    mtime: int | None = None

    def astuple(self) -> tuple[int | None, ...]:
        """(size, uid, gid, mode, atime, mtime)."""
        return (self.size, self.uid, self.gid, self.mode, self.atime, self.mtime)

    def args(self) -> tuple[bytes, ...]:
        """The attribute arguments of the helper's setstat requests (empty: unchanged)."""

        def opt(v: int | None, fmt: bytes = b"%d") -> bytes:
            return b"" if v is None else fmt % v

        return (
            opt(self.size),
            opt(self.uid),
            opt(self.gid),
            opt(None if self.mode is None else self.mode & 0o7777, b"%o"),
            opt(self.atime),
            opt(self.mtime),
        )


@dataclass(frozen=True, slots=True)
class OpenFlags:
    """How a file is opened for writing (SFTP's pflags, decoded)."""

    create: bool
    truncate: bool
    exclusive: bool
    append: bool
    readable: bool
    mode: int | None


def is_root_login(login: str) -> bool:
    """``root`` or uid 0, with or without a group (``root:grp``, ``0:0``)."""
    return login.split(":", 1)[0] in ("root", "0")


def archive_refusal(login: str, has_rules: bool) -> NoShell | None:
    """Why an image without a shell cannot be served through the archive API, or None.

    The archive API runs as root and ignores the container's permissions, so it may stand in
    only for a root login; and it cannot check a path where it acts, so never with path rules.
    """
    if has_rules:
        return NoShell(
            "this grant has path rules, and this image has no /bin/sh to enforce them"
            " inside the container: file transfer refused"
        )
    if not is_root_login(login):
        return NoShell(
            "this image has no /bin/sh: without one, only the root login can transfer"
            " files (through Docker's archive API, which ignores the container's"
            " permissions)"
        )
    return None


class Backend(Protocol):
    """File operations in one container as one login, on places already checked.

    Errors are :class:`~gateway.containerfs.errors.FSError` naming ``shown`` (the client's
    path) where one is given.
    """

    @property
    def umask(self) -> int: ...

    def has_tool(self, name: str) -> bool: ...

    async def start(self) -> HelperInfo: ...

    async def close(self) -> None: ...

    async def resolve(self, path: bytes, follow: bool, shown: bytes) -> bytes: ...

    async def stat(self, w: Where, shown: bytes, follow: bool) -> Stat: ...

    async def listdir(self, w: Where, at: bytes, shown: bytes) -> list[tuple[bytes, Stat]]: ...

    async def mkdir(self, w: Where, perms: int, shown: bytes) -> None: ...

    async def rmdir(self, w: Where, shown: bytes) -> None: ...

    async def remove(self, w: Where, shown: bytes) -> None: ...

    async def rename(
        self, src: Where, dst: Where, overwrite: bool, old: bytes, new: bytes
    ) -> None: ...

    async def symlink(self, target: bytes, w: Where, shown: bytes) -> None: ...

    async def link(self, src: Where, dst: Where, shown: bytes) -> None: ...

    async def readlink(self, w: Where, shown: bytes) -> bytes: ...

    async def setstat(self, w: Where, shown: bytes, follow: bool, attrs: Attrs) -> None: ...

    async def statvfs(self, w: Where, shown: bytes) -> VFSStat: ...

    async def id_map(self, path: bytes) -> dict[int, str]: ...

    async def handle_stat(self, target: bytes, ident: bytes, shown: bytes) -> Stat: ...

    async def open_read(
        self, w: Where, shown: bytes, inline: int
    ) -> tuple[bytes, bytes, bytes | None]:
        """(target, identity, content when it came whole) of a file opened for reading."""
        ...

    async def read_source(
        self, target: bytes, ident: bytes, offset: int
    ) -> tuple[DataStream, int, bytes | None]:
        """A stream of an open file's bytes from about ``offset``: (stream, where it starts,
        the tar member name when it is a tar stream)."""
        ...

    async def open_write(
        self, w: Where, shown: bytes, flags: OpenFlags, forget: Forget
    ) -> WriteFile: ...


class Forget(Protocol):
    """Called by an open file when it is closed or given up (the session's bookkeeping)."""

    def __call__(self, f: OpenFile, /) -> None: ...
