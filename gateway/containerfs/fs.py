"""A container's file system, seen through processes exec'd inside it as the session's login.

Every operation runs in the container with the login's own uid, so the container's permissions
decide (a non-root login cannot read /root/secret). Metadata goes through one long-lived helper
shell per session (:class:`~gateway.containerfs.helper.ShellHelper`); file content through the
helper for small files and dedicated ``tar``/``dd`` processes for large ones
(:mod:`gateway.containerfs.files`).

Paths are bytes. Relative paths are taken from the session's start directory (the login's home).
With path prefixes (a grant's ``paths``), every path is first resolved inside the container
(``..`` and symlinks, physically) and checked with :func:`gateway.policy.path_allowed`;
operations on a link itself (lstat, remove, rename, ...) resolve only its parent directory.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import re
import stat as statmod
from dataclasses import dataclass

from gateway.containerfs.archive import ArchiveBackend, no_shell
from gateway.containerfs.errors import FSError, NoShell
from gateway.containerfs.files import SMALL_READ, ArchiveWriteFile, ReadFile, WriteFile
from gateway.containerfs.helper import LIST_LIMIT, HelperInfo, OneShot, ShellHelper
from gateway.containerfs.shell import Stat, classify, parse_id_map, parse_listing, parse_stat
from gateway.containerfs.tar import DIRECTORY, SYMLINK
from gateway.engines.base import Container, Engine
from gateway.policy import normalize_prefix, path_allowed

log = logging.getLogger(__name__)

OUTSIDE = "outside the paths this grant allows"
# Open files per session, and file content held in memory for small reads across them.
MAX_OPEN_FILES = 128
INLINE_BUDGET = 16 << 20


def _text(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


_IDENT = re.compile(rb"\d{1,20}:\d{1,20}")


def attr_args(
    size: int | None,
    uid: int | None,
    gid: int | None,
    mode: int | None,
    atime: int | None,
    mtime: int | None,
) -> tuple[bytes, ...]:
    """Attribute arguments of the helper's setstat requests (empty: leave unchanged)."""

    def opt(v: int | None, fmt: bytes = b"%d") -> bytes:
        return b"" if v is None else fmt % v

    return (
        opt(size),
        opt(uid),
        opt(gid),
        opt(None if mode is None else mode & 0o7777, b"%o"),
        opt(atime),
        opt(mtime),
    )


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
        self.helper = ShellHelper(engine, container.id, login)
        self._cwd: bytes | None = None
        self._names: tuple[dict[int, str], dict[int, str]] | None = None
        self._open: set[ReadFile | WriteFile] = set()
        # Set when the image has no shell and the login is root: Docker's archive API instead.
        self.archive: ArchiveBackend | None = None

    # Session ---------------------------------------------------------------------------------

    async def start(self) -> HelperInfo:
        if self.archive is not None:
            return HelperInfo(home=self.cwd, umask=0o022, tools=frozenset())
        try:
            info = await self.helper.start()
        except NoShell:
            if self.paths or self.write_paths:
                raise NoShell(
                    "this grant has path rules, and this image has no /bin/sh to enforce them"
                    " inside the container: file transfer refused"
                ) from None
            if not self._root_login():
                raise NoShell(
                    "this image has no /bin/sh: without one, only the root login can transfer"
                    " files (through Docker's archive API, which ignores the container's"
                    " permissions)"
                ) from None
            self.archive = ArchiveBackend(self.engine, self.container.id)
            info = HelperInfo(home=b"/root", umask=0o022, tools=frozenset())
            try:
                if not (await self.archive.stat(b"/root", True)).is_dir:
                    info = HelperInfo(home=b"/", umask=0o022, tools=frozenset())
            except FSError:
                info = HelperInfo(home=b"/", umask=0o022, tools=frozenset())
        if self._cwd is None:
            self._cwd = await self._start_dir(info.home)
        return info

    def _root_login(self) -> bool:
        name = self.login.split(":", 1)[0]
        return name in ("root", "0")

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
        info = self.helper.info
        return info.umask if info is not None else 0o022

    def has_tool(self, name: str) -> bool:
        info = self.helper.info
        return info is not None and name in info.tools

    async def close(self) -> None:
        """Abort open files (temporary files are removed) and stop the helper."""
        for f in list(self._open):
            try:
                await f.abort()
            except FSError as exc:
                log.debug("abort %r: %s", f.path, exc)
        self._open.clear()
        await self.helper.close()

    async def oneshot(self, line: bytes) -> OneShot:
        return await OneShot.start(self.engine, self.container.id, self.login, line)

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
        p = self.abspath(path)
        if self.archive is not None:
            return await self.archive.resolve(p, follow)
        code, body = await self.helper.call("q_real", p, 1 if follow else 0)
        if code != 0:
            raise FSError(classify(body), path)
        return body

    async def _checked(self, path: bytes, follow: bool, write: bool = False) -> bytes:
        """The path to operate on; with path rules, resolved and checked."""
        return (await self._where(path, follow, write)).real

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
            return await self._checked(path, True)
        return await self.resolve(path, True)

    # Metadata --------------------------------------------------------------------------------

    async def raw_stat(self, real: bytes, shown: bytes, follow: bool = True) -> Stat:
        return await self._stat_at(Where.of(real, 0), shown, follow)

    async def _stat_at(self, w: Where, shown: bytes, follow: bool) -> Stat:
        if self.archive is not None:
            try:
                return await self.archive.stat(w.real, follow)
            except FSError as exc:
                raise FSError(exc.code, shown, exc.reason) from None
        # A resolved path is physical: its last component is no link, so lstat is stat.
        code, body = await self.helper.call(
            "q_st", w.dir, w.name, w.verify, 1 if follow and not w.verify else 0
        )
        if code != 0:
            raise FSError(classify(body), shown)
        return parse_stat(body)

    async def stat(self, path: bytes, follow: bool = True) -> Stat:
        return await self._stat_at(await self._where(path, follow), path, follow)

    async def listdir(self, path: bytes) -> list[tuple[bytes, Stat]]:
        w = await self._where(path, True)
        real = w.real
        if self.archive is not None:
            entries = await self.archive.listdir(real)
        else:
            d = real if w.verify else self.abspath(path)
            code, body = await self.helper.call(
                "q_list", d, w.verify, limit=LIST_LIMIT, timeout=600.0
            )
            if code != 0:
                raise FSError(classify(body), path)
            entries = parse_listing(body)
        if self.paths:
            parent = posixpath.dirname(real.rstrip(b"/")) or b"/"
            if not self.allowed(parent):
                entries = [e for e in entries if e[0] != b".."]
        return entries

    async def mkdir(self, path: bytes, mode: int | None) -> None:
        w = await self._where(path, False, write=True)
        perms = (0o777 if mode is None else mode) & 0o7777 & ~self.umask
        if self.archive is not None:
            await self._archive_new(w.real, path)
            await self.archive.put_member(w.real, DIRECTORY, perms)
            return
        await self._simple("q_mkdir", path, w.dir, w.name, b"%o" % perms, w.verify)

    async def _archive_new(self, real: bytes, shown: bytes) -> None:
        """The archive API overwrites: refuse when something exists there already."""
        assert self.archive is not None
        try:
            await self.archive.stat(real, False)
        except FSError as exc:
            if exc.code == errno.ENOENT:
                return
            raise
        raise FSError(errno.EEXIST, shown)

    async def rmdir(self, path: bytes) -> None:
        if self.archive is not None:
            raise no_shell("removing a directory")
        w = await self._where(path, False, write=True)
        await self._simple("q_rmdir", path, w.dir, w.name, w.verify)

    async def remove(self, path: bytes) -> None:
        if self.archive is not None:
            raise no_shell("removing a file")
        w = await self._where(path, False, write=True)
        await self._simple("q_rm", path, w.dir, w.name, w.verify)

    async def rename(self, old: bytes, new: bytes, overwrite: bool) -> None:
        if self.archive is not None:
            raise no_shell("renaming")
        src = await self._where(old, False, write=True)
        dst = await self._where(new, False, write=True)
        code, body = await self.helper.call(
            "q_mv", src.dir, src.name, dst.dir, dst.name, 0 if overwrite else 1,
            src.verify | dst.verify,
        )  # fmt: skip
        if code != 0:
            err = classify(body)
            raise FSError(err, new if err == errno.EEXIST else old)

    async def symlink(self, target: bytes, linkpath: bytes) -> None:
        if b"\0" in target:
            raise FSError(errno.EINVAL, linkpath, "invalid link target")
        w = await self._where(linkpath, False, write=True)
        if self.archive is not None:
            await self._archive_new(w.real, linkpath)
            await self.archive.put_member(w.real, SYMLINK, 0o777, target)
            return
        await self._simple("q_symlink", linkpath, target, w.dir, w.name, w.verify)

    async def link(self, old: bytes, new: bytes) -> None:
        if self.archive is not None:
            raise no_shell("a hard link")
        src = await self._where(old, False, write=True)
        dst = await self._where(new, False, write=True)
        await self._simple(
            "q_link", new, src.dir, src.name, dst.dir, dst.name, src.verify | dst.verify
        )

    async def readlink(self, path: bytes) -> bytes:
        w = await self._where(path, False)
        if self.archive is not None:
            return await self.archive.readlink(w.real)
        code, body = await self.helper.call("q_readlink", w.dir, w.name, w.verify)
        if code != 0:
            raise FSError(classify(body), path)
        return body[:-1] if body.endswith(b"\n") else body

    async def setstat(
        self,
        path: bytes,
        *,
        follow: bool = True,
        size: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mode: int | None = None,
        atime: int | None = None,
        mtime: int | None = None,
    ) -> None:
        if size is not None and size < 0:
            raise FSError(errno.EINVAL, path)
        w = await self._where(path, follow, write=True)
        if self.archive is not None:
            raise no_shell("changing attributes of a file")
        code, body = await self.helper.call(
            "q_setstat", w.dir, w.name, w.verify, 1 if follow else 0,
            *attr_args(size, uid, gid, mode, atime, mtime),
        )  # fmt: skip
        if code != 0:
            raise FSError(classify(body), path)

    async def handle_stat(self, target: bytes, ident: bytes, shown: bytes) -> Stat:
        """fstat of an open handle: the object it opened, or an error."""
        if self.archive is not None:
            return await self.raw_stat(target, shown, True)
        code, body = await self.helper.call("q_fstat", target, ident)
        if code != 0:
            raise FSError(classify(body), shown)
        return parse_stat(body)

    async def handle_setstat(
        self,
        target: bytes,
        ident: bytes,
        shown: bytes,
        size: int | None,
        uid: int | None,
        gid: int | None,
        mode: int | None,
        atime: int | None,
        mtime: int | None,
    ) -> None:
        """fsetstat of an open handle: the object it opened, or an error."""
        if size is not None and size < 0:
            raise FSError(errno.EINVAL, shown)
        if self.archive is not None:
            raise no_shell("changing attributes of a file")
        code, body = await self.helper.call(
            "q_fsetstat", target, ident, *attr_args(size, uid, gid, mode, atime, mtime)
        )
        if code != 0:
            raise FSError(classify(body), shown)

    async def statvfs(self, path: bytes) -> VFSStat:
        w = await self._where(path, True)
        if self.archive is not None:
            raise no_shell("file system statistics")
        code, body = await self.helper.call("q_statvfs", w.dir, w.name, w.verify)
        if code != 0:
            raise FSError(classify(body), path)
        try:
            f = body.split()
            return VFSStat(
                bsize=int(f[0]),
                frsize=int(f[1]),
                blocks=int(f[2]),
                bfree=int(f[3]),
                bavail=int(f[4]),
                files=int(f[5]),
                ffree=int(f[6]),
                fsid=int(f[7], 16),
                namemax=int(f[8]),
            )
        except (IndexError, ValueError):
            raise FSError(errno.EIO, path, "unexpected answer from the container") from None

    async def _simple(self, func: str, shown: bytes, *args: bytes | int) -> None:
        code, body = await self.helper.call(func, *args)
        if code != 0:
            raise FSError(classify(body), shown)

    # Names of users and groups (for listings) ----------------------------------------------

    async def names(self) -> tuple[dict[int, str], dict[int, str]]:
        """uid -> name and gid -> name from the container's /etc/passwd and /etc/group."""
        if self._names is None:
            users = await self._id_map(b"/etc/passwd")
            groups = await self._id_map(b"/etc/group")
            self._names = (users, groups)
        return self._names

    async def _id_map(self, path: bytes) -> dict[int, str]:
        if self.archive is not None:
            return {}
        try:
            code, body = await self.helper.call("q_cat", path, 1 << 20, limit=(1 << 20) + 1024)
        except FSError:
            return {}
        return parse_id_map(body) if code == 0 else {}

    # Files -----------------------------------------------------------------------------------

    def _check_open_limit(self, path: bytes) -> None:
        if len(self._open) >= self.max_open:
            raise FSError(errno.EMFILE, path, f"too many open files (at most {self.max_open})")

    def _inline_held(self) -> int:
        return sum(f.held for f in self._open if isinstance(f, ReadFile))

    async def open_read(self, path: bytes) -> ReadFile:
        self._check_open_limit(path)
        w = await self._where(path, True)
        real = w.real
        if self.archive is not None:
            st = await self.raw_stat(real, path, True)
            if st.is_dir:
                raise FSError(errno.EISDIR, path)
            if not st.is_file:
                raise FSError(errno.EINVAL, path, "not a regular file")
            f = ReadFile(self, path, await self.archive.resolve(real, True), b"", None)
            self._open.add(f)
            return f
        # Small files come whole with the open, within a memory budget for the session.
        inline = SMALL_READ + 1 if self._inline_held() + SMALL_READ <= INLINE_BUDGET else 0
        code, body = await self.helper.call(
            "q_open_r", w.dir, w.name, inline, w.verify, limit=SMALL_READ + 4096
        )
        if code != 0:
            if code == 2:
                raise FSError(errno.EIO, path, "read failed")
            err = classify(body)
            text = body.strip().splitlines()
            detail = "not a regular file" if text and text[-1] == b"Not a regular file" else None
            raise FSError(err, path, detail)
        ident, _, body = body.partition(b"\n")
        if not _IDENT.fullmatch(ident):
            raise FSError(errno.EIO, path, "unexpected answer from the container")
        # A small file arrived whole; a larger one is streamed from the start on demand.
        content = body if inline and len(body) <= SMALL_READ else None
        f = ReadFile(self, path, real, ident, content)
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
        if self.archive is not None:
            return await self._archive_open_write(
                path, real, create, truncate, exclusive, append, readable, mode
            )
        tmp = b".sshgw-" + os.urandom(6).hex().encode() + b".tmp"
        flags = (
            (b"c" if create else b"") + (b"e" if exclusive else b"") + (b"t" if truncate else b"")
        )
        code, body = await self.helper.call("q_open_w", w.dir, w.name, tmp, flags, w.verify)
        if code != 0:
            raise FSError(classify(body), path)
        kind, _, rest = body.strip().partition(b" ")
        ident, _, st_text = rest.partition(b" ")
        if kind not in (b"E", b"N") or not _IDENT.fullmatch(ident):
            raise FSError(errno.EIO, path, "unexpected answer from the container")
        if kind == b"E":
            st = parse_stat(st_text)
            if statmod.S_ISDIR(st.mode):
                raise FSError(errno.EISDIR, path)
            f = WriteFile(
                self,
                path,
                w,
                w.real,
                ident,
                temp=False,
                excl=False,
                append=append,
                readable=readable,
                create_mode=None,
            )
        else:
            create_mode: int | None = None
            if mode is not None:
                want = mode & 0o7777 & ~self.umask
                if want != 0o666 & ~self.umask:
                    create_mode = want
            f = WriteFile(
                self,
                path,
                w,
                w.join(tmp),
                ident,
                temp=True,
                excl=exclusive,
                append=append,
                readable=readable,
                create_mode=create_mode,
            )
        self._open.add(f)
        return f

    async def _archive_open_write(
        self,
        path: bytes,
        real: bytes,
        create: bool,
        truncate: bool,
        exclusive: bool,
        append: bool,
        readable: bool,
        mode: int | None,
    ) -> WriteFile:
        assert self.archive is not None
        real = await self.archive.resolve(real, True)
        try:
            st: Stat | None = await self.archive.stat(real, True)
        except FSError as exc:
            if exc.code != errno.ENOENT:
                raise
            st = None
        if st is not None:
            if exclusive:
                raise FSError(errno.EEXIST, path)
            if st.is_dir:
                raise FSError(errno.EISDIR, path)
            if not truncate:
                raise no_shell("changing an existing file in place")
            perms = st.mode & 0o7777
        else:
            if not create:
                raise FSError(errno.ENOENT, path)
            perms = (0o666 if mode is None else mode) & 0o7777 & ~self.umask
        f = ArchiveWriteFile(
            self, path, Where.of(real, 0), mode=perms, readable=readable, append=append
        )
        self._open.add(f)
        return f

    def forget(self, f: ReadFile | WriteFile) -> None:
        self._open.discard(f)
