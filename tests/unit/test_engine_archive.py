"""The pure pieces of the Docker archive API: Go file modes, times and the path-stat header."""

from __future__ import annotations

import base64
import json
import stat as statmod

import pytest

from gateway.engines.archive import go_mode_to_posix, parse_time, stat_from_header

GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHARDEV = 1 << 21
GO_STICKY = 1 << 20


@pytest.mark.parametrize(
    ("go", "posix"),
    [
        (0o644, statmod.S_IFREG | 0o644),
        (GO_DIR | 0o755, statmod.S_IFDIR | 0o755),
        (GO_SYMLINK | 0o777, statmod.S_IFLNK | 0o777),
        (GO_PIPE | 0o600, statmod.S_IFIFO | 0o600),
        (GO_SOCKET | 0o755, statmod.S_IFSOCK | 0o755),
        (GO_DEVICE | GO_CHARDEV | 0o666, statmod.S_IFCHR | 0o666),
        (GO_DEVICE | 0o660, statmod.S_IFBLK | 0o660),
        (GO_SETUID | 0o755, statmod.S_IFREG | statmod.S_ISUID | 0o755),
        (GO_SETGID | GO_DIR | 0o775, statmod.S_IFDIR | statmod.S_ISGID | 0o775),
        (GO_STICKY | GO_DIR | 0o777, statmod.S_IFDIR | statmod.S_ISVTX | 0o777),
        (GO_SETUID | GO_SETGID | GO_STICKY | 0o700, statmod.S_IFREG | 0o7700),
    ],
)
def test_go_mode_to_posix(go: int, posix: int) -> None:
    assert go_mode_to_posix(go) == posix


def test_go_mode_keeps_only_permission_bits_from_the_low_bits() -> None:
    # Go keeps the permission bits in the low 9 bits only; anything else there is not POSIX's.
    assert go_mode_to_posix(0o7777) == statmod.S_IFREG | 0o777


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2024-05-06T07:08:09Z", 1714979289),
        ("2024-05-06T07:08:09.123456789Z", 1714979289),
        ("2024-05-06T09:08:09.5+02:00", 1714979289),
        ("2024-05-06T03:08:09.5-04:00", 1714979289),
        ("", 0),
        ("not a time", 0),
    ],
)
def test_parse_time(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds


def _header(data: object) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_stat_from_header() -> None:
    st = stat_from_header(
        _header(
            {
                "name": "link",
                "size": 9,
                "mode": GO_SYMLINK | 0o777,
                "mtime": "2024-05-06T07:08:09Z",
                "linkTarget": "/srv/ütf",
            }
        )
    )
    assert st.name == "link" and st.size == 9 and st.mtime == 1714979289
    assert st.mode == statmod.S_IFLNK | 0o777
    assert st.link_target == "/srv/ütf".encode()


def test_stat_from_header_without_link() -> None:
    st = stat_from_header(_header({"name": "d", "size": 4096, "mode": GO_DIR | 0o700}))
    assert st.mode == statmod.S_IFDIR | 0o700 and st.link_target == b"" and st.mtime == 0


@pytest.mark.parametrize(
    "header",
    [
        "",
        "%%%not base64",
        base64.b64encode(b"not json").decode(),
        _header(["a", "list"]),
        _header({"mode": "rwx"}),
        _header({"size": {"a": 1}}),
    ],
)
def test_stat_from_header_refuses_what_is_not_one(header: str) -> None:
    with pytest.raises(ValueError):
        stat_from_header(header)
