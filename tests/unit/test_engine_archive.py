"""Pure pieces of the Docker engine: the archive API's Go file modes, times and path-stat
header; the exec stream's repr."""

from __future__ import annotations

import base64
import json
import stat as statmod

import pytest

from gateway.engines.archive import go_mode_to_posix, parse_time, stat_from_header
from gateway.engines.docker import DockerExecStream

# Go's fs.FileMode: the type and special bits sit at the top of a uint32.
DIR, SYMLINK, DEVICE, PIPE, SOCKET = 0x80000000, 0x08000000, 0x04000000, 0x02000000, 0x01000000
SETUID, SETGID, CHARDEV, STICKY = 0x00800000, 0x00400000, 0x00200000, 0x00100000


@pytest.mark.parametrize(
    ("go", "posix"),
    [
        (0o644, statmod.S_IFREG | 0o644),
        (DIR | 0o755, statmod.S_IFDIR | 0o755),
        (SYMLINK | 0o777, statmod.S_IFLNK | 0o777),
        (PIPE | 0o600, statmod.S_IFIFO | 0o600),
        (SOCKET | 0o755, statmod.S_IFSOCK | 0o755),
        (DEVICE | CHARDEV | 0o666, statmod.S_IFCHR | 0o666),
        (DEVICE | 0o660, statmod.S_IFBLK | 0o660),
        (SETUID | 0o755, statmod.S_IFREG | statmod.S_ISUID | 0o755),
        (SETGID | DIR | 0o775, statmod.S_IFDIR | statmod.S_ISGID | 0o775),
        (STICKY | DIR | 0o777, statmod.S_IFDIR | statmod.S_ISVTX | 0o777),
        (SETUID | SETGID | STICKY | 0o700, statmod.S_IFREG | 0o7700),
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
                "mode": SYMLINK | 0o777,
                "mtime": "2024-05-06T07:08:09Z",
                "linkTarget": "/srv/ütf",
            }
        )
    )
    assert st.name == "link" and st.size == 9 and st.mtime == 1714979289
    assert st.mode == statmod.S_IFLNK | 0o777
    assert st.link_target == "/srv/ütf".encode()


def test_stat_from_header_without_link() -> None:
    st = stat_from_header(_header({"name": "d", "size": 4096, "mode": DIR | 0o700}))
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


class _Quiet:
    def write_eof(self) -> None:
        return None

    def close(self) -> None:
        return None


async def test_exec_stream_repr_shows_its_state() -> None:
    st = DockerExecStream(None, "ab" * 32, _Quiet(), tty=False)  # type: ignore[arg-type]
    assert repr(st) == "<DockerExecStream abababababab [OPEN]>"
    st.write_eof()
    assert repr(st) == "<DockerExecStream abababababab [INPUT CLOSED]>"
    await st.close()
    assert repr(st) == "<DockerExecStream abababababab [CLOSED]>"
    st.exit_code = 3
    assert repr(st) == "<DockerExecStream abababababab [EXITED 3]>"
    tty = DockerExecStream(None, "cd" * 32, _Quiet(), tty=True)  # type: ignore[arg-type]
    assert repr(tty) == "<DockerExecStream cdcdcdcdcdcd [OPEN, TTY]>"


def test_a_freshly_killed_containers_task_counts_as_gone() -> None:
    from gateway.engines.base import container_gone_text

    # containerd's answer for an exec into a container killed a moment ago
    assert container_gone_text("task c4a97079fc61 not found: not found")
    assert container_gone_text("container 3f2a is not running")
    assert not container_gone_text("sh: /tmp/x: not found")
