"""Between containerfs and SFTP (gateway.sftp.mapping): attributes, errors, operation results."""

from __future__ import annotations

import errno
import stat

import pytest
from asyncssh import (
    SFTPAttrs,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPNoSuchFile,
    SFTPPermissionDenied,
)
from asyncssh.constants import (
    FILEXFER_TYPE_DIRECTORY,
    FILEXFER_TYPE_REGULAR,
    FILEXFER_TYPE_SPECIAL,
    FILEXFER_TYPE_SYMLINK,
)

from gateway.containerfs import FSError, Stat
from gateway.errors import EngineUnavailable
from gateway.sftp.mapping import attrs_from_stat, op_result, setstat_changes, sftp_error


@pytest.mark.parametrize(
    ("mode", "ftype"),
    [
        (stat.S_IFREG | 0o644, FILEXFER_TYPE_REGULAR),
        (stat.S_IFDIR | 0o755, FILEXFER_TYPE_DIRECTORY),
        (stat.S_IFLNK | 0o777, FILEXFER_TYPE_SYMLINK),
        (0o644, FILEXFER_TYPE_SPECIAL),  # no type bits: never passed off as a regular file
    ],
)
def test_attrs_carry_the_type_and_every_field(mode: int, ftype: int) -> None:
    a = attrs_from_stat(Stat(mode, 1000, 1001, 42, 1_700_000_000, 1_700_000_100, 2))
    assert a.type == ftype and a.permissions == mode
    assert (a.uid, a.gid, a.size, a.atime, a.mtime, a.nlink) == (
        1000,
        1001,
        42,
        1_700_000_000,
        1_700_000_100,
        2,
    )


def test_setstat_changes_keep_only_permission_bits() -> None:
    changes = setstat_changes(SFTPAttrs(permissions=stat.S_IFREG | 0o4755, size=3))
    assert changes == {
        "size": 3,
        "uid": None,
        "gid": None,
        "mode": 0o4755,
        "atime": None,
        "mtime": None,
    }
    assert setstat_changes(SFTPAttrs())["mode"] is None


@pytest.mark.parametrize(
    ("code", "cls", "result"),
    [
        (errno.ENOENT, SFTPNoSuchFile, "no_such_file"),
        (errno.EACCES, SFTPPermissionDenied, "denied"),
        (errno.EEXIST, SFTPFileAlreadyExists, "exists"),
        (errno.EIO, SFTPFailure, "failure"),  # unmapped errno
    ],
)
def test_an_errno_becomes_a_status_and_a_result(code: int, cls: type, result: str) -> None:
    exc = FSError(code, b"/srv/x")
    err = sftp_error(exc)
    assert type(err) is cls and "/srv/x" in err.reason
    assert op_result(exc) == result


def test_other_errors_are_a_failure_with_their_public_message() -> None:
    exc = EngineUnavailable("dockerd said no")
    err = sftp_error(exc)
    assert type(err) is SFTPFailure and err.reason == exc.public_message
    assert op_result(exc) == "failure"
    assert op_result(SFTPPermissionDenied("x")) == "denied"
    assert op_result(SFTPNoSuchFile("x")) == "no_such_file"
