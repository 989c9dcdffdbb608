"""Between containerfs and SFTP: file attributes, errors and the result words of a file operation.

A :class:`~gateway.containerfs.Stat` becomes :class:`asyncssh.SFTPAttrs`; SFTP attributes to
set become :meth:`~gateway.containerfs.ContainerFS.setstat` changes; a
:class:`~gateway.containerfs.FSError` (an errno from inside the container) becomes the SFTP status
the client sees and the ``result`` of its :class:`~gateway.sftp.FileOp`.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat as statmod
from collections.abc import Callable

from asyncssh import (
    SFTPAttrs,
    SFTPDirNotEmpty,
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPFileIsADirectory,
    SFTPInvalidFilename,
    SFTPInvalidHandle,
    SFTPInvalidParameter,
    SFTPLinkLoop,
    SFTPNoSpaceOnFilesystem,
    SFTPNoSuchFile,
    SFTPNotADirectory,
    SFTPOpUnsupported,
    SFTPPermissionDenied,
    SFTPQuotaExceeded,
    SFTPVFSAttrs,
    SFTPWriteProtect,
)
from asyncssh.constants import (
    FILEXFER_TYPE_BLOCK_DEVICE,
    FILEXFER_TYPE_CHAR_DEVICE,
    FILEXFER_TYPE_DIRECTORY,
    FILEXFER_TYPE_FIFO,
    FILEXFER_TYPE_REGULAR,
    FILEXFER_TYPE_SOCKET,
    FILEXFER_TYPE_SPECIAL,
    FILEXFER_TYPE_SYMLINK,
)

from gateway.containerfs import FSError, Stat
from gateway.containerfs.backend import AttrChanges, VFSStat
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

_ERRORS: dict[int, Callable[[str], SFTPError]] = {
    errno.ENOENT: SFTPNoSuchFile,
    errno.EACCES: SFTPPermissionDenied,
    errno.EPERM: SFTPPermissionDenied,
    errno.EEXIST: SFTPFileAlreadyExists,
    errno.ENOTEMPTY: SFTPDirNotEmpty,
    errno.ENOTDIR: SFTPNotADirectory,
    errno.EISDIR: SFTPFileIsADirectory,
    errno.EROFS: SFTPWriteProtect,
    errno.ENOSPC: SFTPNoSpaceOnFilesystem,
    errno.EDQUOT: SFTPQuotaExceeded,
    errno.ELOOP: SFTPLinkLoop,
    errno.ENAMETOOLONG: SFTPInvalidFilename,
    errno.EINVAL: SFTPInvalidParameter,
    errno.EOPNOTSUPP: SFTPOpUnsupported,
    errno.EBADF: SFTPInvalidHandle,
}

_RESULTS: dict[int, str] = {
    errno.ENOENT: "no_such_file",
    errno.EACCES: "denied",
    errno.EPERM: "denied",
    errno.EEXIST: "exists",
    errno.ENOTEMPTY: "not_empty",
    errno.EOPNOTSUPP: "unsupported",
}


def sftp_error(exc: GatewayError) -> SFTPError:
    if exc.public_message != exc.user_message:
        log.warning("file operation: %s", exc.user_message)
    if isinstance(exc, FSError):
        return _ERRORS.get(exc.code, SFTPFailure)(exc.public_message)
    return SFTPFailure(exc.public_message)


def op_result(exc: BaseException) -> str:
    if isinstance(exc, FSError):
        return _RESULTS.get(exc.code, "failure")
    if isinstance(exc, SFTPPermissionDenied):
        return "denied"
    if isinstance(exc, SFTPNoSuchFile):
        return "no_such_file"
    return "failure"


def _filetype(mode: int) -> int:
    fmt = statmod.S_IFMT(mode)
    return {
        statmod.S_IFREG: FILEXFER_TYPE_REGULAR,
        statmod.S_IFDIR: FILEXFER_TYPE_DIRECTORY,
        statmod.S_IFLNK: FILEXFER_TYPE_SYMLINK,
        statmod.S_IFSOCK: FILEXFER_TYPE_SOCKET,
        statmod.S_IFCHR: FILEXFER_TYPE_CHAR_DEVICE,
        statmod.S_IFBLK: FILEXFER_TYPE_BLOCK_DEVICE,
        statmod.S_IFIFO: FILEXFER_TYPE_FIFO,
    }.get(fmt, FILEXFER_TYPE_SPECIAL)


def attrs_from_stat(st: Stat) -> SFTPAttrs:
    return SFTPAttrs(
        type=_filetype(st.mode),
        size=st.size,
        uid=st.uid,
        gid=st.gid,
        permissions=st.mode,
        atime=st.atime,
        mtime=st.mtime,
        nlink=st.nlink,
    )


def vfs_attrs(v: VFSStat, *, writable: bool) -> SFTPVFSAttrs:
    """statvfs@openssh.com's answer: the container's numbers (``favail`` is ``ffree``; the
    read-only flag says whether this session may write)."""
    flags = 0 if writable else os.ST_RDONLY
    return SFTPVFSAttrs(**dataclasses.asdict(v), favail=v.ffree, flags=flags)


def setstat_changes(attrs: SFTPAttrs) -> AttrChanges:
    return {
        "size": attrs.size,
        "uid": attrs.uid,
        "gid": attrs.gid,
        "mode": None if attrs.permissions is None else attrs.permissions & 0o7777,
        "atime": attrs.atime,
        "mtime": attrs.mtime,
    }
