"""The helper shell's protocol on the gateway's side: request quoting, response parsing. Pure.

The programs themselves are in :mod:`gateway.containerfs.scripts`. A request is one line: the
session key, a fresh nonce, then a call of one ``q_*`` function with arguments quoted by
:func:`sq`; the response is the function's output and the trailer ``\\0<nonce> <status>\\n``
(:func:`find_reply`). Output is parsed strictly (:func:`parse_stat`, :func:`parse_listing`,
:func:`parse_id_map`); tools' error texts map back to errno values (:func:`classify`).
"""

from __future__ import annotations

import errno
import os
import re
import stat as statmod
from dataclasses import dataclass
from typing import Final

from gateway.containerfs.errors import FSError


def fd_open(path: bytes, ident: bytes) -> bytes:
    """One-shot prologue: open ``path`` on fd 3 and stop unless it is still object ``ident``."""
    return (
        b"exec 3<"
        + sq(path)
        + b' || exit 1; [ "$(stat -L -c %d:%i /proc/self/fd/3 </dev/null)" = '
        + sq(ident)
        + b" ] || { echo 'Stale file handle' >&2; exit 1; }; "
    )


def sq(value: bytes | str | int) -> bytes:
    """One shell word: single-quoted, newlines spliced in as ``"$N"``."""
    if isinstance(value, int):
        return b"%d" % value
    raw = value.encode() if isinstance(value, str) else value
    if b"\0" in raw:
        raise ValueError("NUL byte in a shell argument")
    return b"'" + raw.replace(b"'", b"'\\''").replace(b"\n", b"'\"$N\"'") + b"'"


def command(func: str, *args: bytes | str | int) -> bytes:
    """The request line for ``func`` (without the nonce and the newline)."""
    return b" ".join([func.encode(), *(sq(a) for a in args)])


# Responses ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stat:
    mode: int  # st_mode, file type bits included
    uid: int
    gid: int
    size: int
    atime: int
    mtime: int
    nlink: int

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return statmod.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return statmod.S_ISLNK(self.mode)


_FIELDS = (
    rb"([0-9a-fA-F]{1,8}) (\d{1,10}) (\d{1,10}) (\d{1,20}) (-?\d{1,20}) (-?\d{1,20}) (\d{1,20})"
)
_STAT_LINE = re.compile(_FIELDS + rb"\n?")
_DOT_RECORD = re.compile(_FIELDS + rb" (\.\.?)\n")
_ENTRY_START = re.compile(rb"\n" + _FIELDS + rb" \./")


class ParseError(FSError):
    """The container answered something we cannot parse."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.EIO, b"", detail)


def _stat_from(m: re.Match[bytes]) -> Stat:
    # mode in hex, then uid gid size atime mtime nlink in decimal: Stat's field order
    return Stat(int(m[1], 16), *(int(m[i]) for i in range(2, 8)))


def parse_stat(line: bytes) -> Stat:
    m = _STAT_LINE.fullmatch(line.strip(b" "))
    if m is None:
        raise ParseError("unexpected stat output from the container")
    return _stat_from(m)


def parse_listing(body: bytes) -> list[tuple[bytes, Stat]]:
    """Parse ``stat -c "$F %n" . ..`` then ``find . ... -exec stat -c "$F %n"``.

    Names of entries are printed as ``./NAME``; a name holds no ``/``, so every record of the
    find part starts at the last newline before its ``./`` (the fields hold no newline, no
    ``/``). That makes names with newlines unambiguous without any NUL separator.
    """
    out: list[tuple[bytes, Stat]] = []
    pos = 0
    for _ in range(2):
        m = _DOT_RECORD.match(body, pos)
        if m is None:
            break
        out.append((m[8], _stat_from(m)))
        pos = m.end()
    rest = b"\n" + body[pos:]
    starts = list(_ENTRY_START.finditer(rest))
    if not starts:
        if rest.strip(b"\n"):
            raise ParseError("unexpected listing output from the container")
        return out
    if starts[0].start() != 0:
        raise ParseError("unexpected listing output from the container")
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(rest)
        name = rest[m.end() : end]
        if i + 1 == len(starts):
            if not name.endswith(b"\n"):
                raise ParseError("unexpected listing output from the container")
            name = name[:-1]
        if not name or b"/" in name:
            raise ParseError("unexpected listing output from the container")
        out.append((name, _stat_from(m)))
    return out


def parse_id_map(body: bytes) -> dict[int, str]:
    """``/etc/passwd`` or ``/etc/group`` text (from the container: hostile) to id -> name.

    Only printable names without spaces are kept; the first entry for an id wins.
    """
    out: dict[int, str] = {}
    for line in body.splitlines():
        parts = line.split(b":")
        if len(parts) < 3 or not parts[2].isdigit() or len(parts[2]) > 10:
            continue
        name = parts[0].decode("utf-8", "replace")
        if name and len(name) <= 64 and name.isprintable() and " " not in name:
            out.setdefault(int(parts[2]), name)
    return out


def find_reply(buf: bytes | bytearray, mark: bytes, start: int = 0) -> tuple[int, int, int] | None:
    """Find the trailer ``mark STATUS\n`` in ``buf`` from ``start`` on.

    Returns (body_end, status, consumed): the reply body is ``buf[:body_end]`` and
    ``buf[:consumed]`` is used up; None while the trailer is incomplete. Raises ValueError for
    a trailer whose status is not a small integer (the helper is out of step).
    """
    i = buf.find(mark, start)
    if i < 0:
        return None
    j = buf.find(b"\n", i + len(mark), i + len(mark) + 12)
    if j < 0:
        if len(buf) - (i + len(mark)) >= 12:
            raise ValueError("garbled reply trailer")
        return None
    text = bytes(buf[i + len(mark) : j])
    if not text.isdigit() or len(text) > 3:
        raise ValueError("garbled reply trailer")
    return i, int(text), j + 1


# Error messages of the container's tools, mapped back to errno. GNU libc wording first, then
# musl's (Alpine), then shells' own phrases.
def _messages() -> dict[bytes, int]:
    table: dict[bytes, int] = {}
    for code in (
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EEXIST,
        errno.ENOTEMPTY,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EINVAL,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EXDEV,
        errno.EBUSY,
        errno.ETXTBSY,
        errno.EMLINK,
        errno.EFBIG,
        errno.EIO,
        errno.ESTALE,
    ):
        table[os.strerror(code).encode()] = code
    table.update(
        {
            b"Quota exceeded": errno.EDQUOT,
            b"Symbolic link loop": errno.ELOOP,
            b"Filename too long": errno.ENAMETOOLONG,
            b"Cross-device link": errno.EXDEV,
            b"Resource busy": errno.EBUSY,
            b"Directory nonexistent": errno.ENOENT,
            b"nonexistent directory": errno.ENOENT,
            b"Not a regular file": errno.EINVAL,
            b"Stale file handle": errno.ESTALE,
            b"No such file": errno.ENOENT,
            b"no such file": errno.ENOENT,
            b"Is a directory": errno.EISDIR,
            b"Permission denied": errno.EACCES,
        }
    )
    return table


_MESSAGES: Final = _messages()


def classify(text: bytes) -> int:
    """The errno a tool's error text names (at the end of its last matching line), else EIO."""
    found = errno.EIO
    for line in text.splitlines():
        line = line.rstrip()
        for message, code in _MESSAGES.items():
            if line.endswith(message):
                found = code
                break
    return found
