"""SFTP through the gateway with OpenSSH's ``sftp`` (batch mode) and paramiko, on busybox and Debian.

Nothing is installed in the containers: every file operation runs there as exec'd sh/tar/dd.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Gateway, no_traceback, unique
from tests.support import openssh
from tests.support.openssh import CONNECT_TIMEOUT

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

FILE_RIGHTS = "sftp-read,sftp-write"


# --- helpers shared with test_scp.py --------------------------------------------------------


def client_opts(gateway: Gateway, user: str) -> list[str]:
    """Options for sftp and scp: batch, the user's own key only, no config, trust the gateway."""
    return [*openssh.client_opts(gateway.keys[user]), *CONNECT_TIMEOUT]


def files_user(
    gateway: Gateway,
    container: str,
    rights: str = FILE_RIGHTS,
    logins: str = "app",
    paths: tuple[str, ...] = (),
) -> str:
    user = unique("f")
    gateway.add_user(user)
    args = ["grant", "add", "--user", user, "--target", container, "--rights", rights]
    args += ["--logins", logins]
    for p in paths:
        args += ["--path", p]
    gateway.cli(*args)
    return user


def sftp(
    gateway: Gateway,
    user: str,
    container: str,
    commands: str | bytes,
    cwd: Path,
    login: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    target = f"{user}+{container}" + (f"+{login}" if login else "")
    data = commands.encode() if isinstance(commands, str) else commands
    return subprocess.run(
        [
            "sftp",
            *client_opts(gateway, user),
            "-P",
            str(gateway.port),
            "-b",
            "-",
            f"{target}@127.0.0.1",
        ],
        input=data,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def in_container(container: str, script: str, user: str = "root") -> str:
    """Run a shell script in the container; its output with undecodable bytes escaped."""
    res = subprocess.run(
        ["docker", "exec", "-u", user, container, "sh", "-c", script],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode("utf-8", "backslashreplace")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def container_sha256(container: str, path: str) -> str:
    return in_container(container, f"sha256sum '{path}'").split()[0]


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


@pytest.fixture(params=["busybox", "debian"])
def image(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_image"))


# --- sftp ----------------------------------------------------------------------------------


def test_sftp_session(
    gateway: Gateway, make_container: MakeContainer, image: str, tmp_path: Path
) -> None:
    c = make_container(image)
    in_container(c, "mkdir -p /srv/www && chown 1000:1000 /srv/www")
    user = files_user(gateway, c)
    src = random_file(tmp_path / "one.bin", 1024 * 1024)
    (tmp_path / "sp ace ü").write_bytes(b"spaces and utf-8\n")
    (tmp_path / b"latin1-\xe9".decode("utf-8", "surrogateescape")).write_bytes(b"latin-1\n")
    os.utime(src, (1_500_000_000, 1_600_000_000))
    (tmp_path / "back").mkdir()
    res = sftp(
        gateway,
        user,
        c,
        b"pwd\n"
        b"cd /srv/www\n"
        b"put one.bin\n"
        b'put "sp ace \xc3\xbc"\n'
        b"put latin1-\xe9\n"
        b"put -p one.bin kept.bin\n"
        b"mkdir sub\n"
        b"rename one.bin sub/moved.bin\n"
        b"ln -s sub/moved.bin link\n"
        b"chmod 640 kept.bin\n"
        b"ls -l\n"
        b"ls -l sub\n"
        b"get sub/moved.bin back/moved.bin\n"
        b"get -p kept.bin back/kept.bin\n"
        b'get "sp ace \xc3\xbc" back/\n'
        b"get link back/via-link.bin\n"
        b"df -h /\n"
        b"rm link\n"
        b"rm sub/moved.bin\n"
        b"rmdir sub\n",
        tmp_path,
    )
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, res.stderr
    no_traceback(res.stderr)
    assert "Remote working directory: /home/app" in out
    for line in out.splitlines():
        if line.endswith(" kept.bin") and not line.startswith("sftp>"):
            # owner names come from the container's /etc/passwd; mode and mtime as set
            assert line.startswith("-rw-r-----"), line
            assert " app " in line and str(1024 * 1024) in line
    assert "lrwxrwxrwx" in out
    digest = sha256_file(src)
    assert sha256_file(tmp_path / "back" / "moved.bin") == digest
    assert sha256_file(tmp_path / "back" / "via-link.bin") == digest
    assert sha256_file(tmp_path / "back" / "kept.bin") == digest
    assert (tmp_path / "back" / "kept.bin").stat().st_mtime == 1_600_000_000
    assert (tmp_path / "back" / "sp ace ü").read_bytes() == b"spaces and utf-8\n"
    listing = in_container(c, "ls -ln /srv/www; stat -c '%Y %a %u' /srv/www/kept.bin")
    assert "latin1-\\xe9" in listing or "latin1-?" in listing
    assert listing.splitlines()[-1] == "1600000000 640 1000"
    assert in_container(c, "ls -A /srv/www | grep -c sshgw || true").strip() == "0"


def test_sftp_resume_and_chown(
    gateway: Gateway, make_container: MakeContainer, image: str, tmp_path: Path
) -> None:
    c = make_container(image)
    user = files_user(gateway, c, logins="root")
    src = random_file(tmp_path / "big.bin", 3 * 1024 * 1024)
    data = src.read_bytes()
    (tmp_path / "part.bin").write_bytes(data[: 1024 * 1024 + 17])
    # a partial upload in the container, a partial download here: resume both
    docker_cp = subprocess.run(
        ["docker", "exec", "-i", c, "sh", "-c", "cat > /tmp/big.bin"],
        input=data[:777_777],
        capture_output=True,
        check=False,
    )
    assert docker_cp.returncode == 0
    in_container(c, "cat /tmp/big.bin > /tmp/full.bin")
    res = sftp(
        gateway,
        user,
        c,
        "reput big.bin /tmp/big.bin\n"
        "put big.bin /tmp/full.bin\n"
        "reget /tmp/full.bin part.bin\n"
        "chown 1000 /tmp/full.bin\n"
        "chgrp 1000 /tmp/full.bin\n"
        "ls -ln /tmp/full.bin\n",
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert container_sha256(c, "/tmp/big.bin") == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "part.bin").read_bytes() == data
    assert in_container(c, "stat -c '%u %g' /tmp/full.bin").strip() == "1000 1000"


def test_sftp_errors_as_app(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    c = make_container(busybox_image)
    in_container(c, "echo secret > /root/secret; chmod 600 /root/secret")
    user = files_user(gateway, c)
    (tmp_path / "x").write_bytes(b"x")
    cases = {
        # OpenSSH's sftp globs first; an unreadable path is "not found" to it (as with sshd)
        "get /root/secret": "not found",
        "get -p /root/secret x": "not found",
        "ls /root": "Permission denied",
        "get /nonexistent": "not found",
        "put x /root/x": "Permission denied",
        "mkdir /etc/new": "Permission denied",
        "rm /etc/passwd": "Permission denied",
        "rmdir /tmp": "Permission denied",
    }
    for command, message in cases.items():
        res = sftp(gateway, user, c, command + "\n", tmp_path, timeout=60)
        assert res.returncode != 0, command
        assert message in res.stderr.decode(), (command, res.stderr)
        no_traceback(res.stderr)
    assert not (tmp_path / "secret").exists()


def test_read_only_grant(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    c = make_container(busybox_image)
    in_container(c, "echo data > /tmp/data")
    user = files_user(gateway, c, rights="sftp-read")
    res = sftp(gateway, user, c, "ls -l /tmp\nget /tmp/data\n", tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "data").read_bytes() == b"data\n"
    for command in (
        "put data /tmp/new",
        "mkdir /tmp/d",
        "rm /tmp/data",
        "rename /tmp/data /tmp/other",
        "chmod 777 /tmp/data",
        "ln -s /tmp/data /tmp/l",
    ):
        res = sftp(gateway, user, c, command + "\n", tmp_path, timeout=60)
        assert res.returncode != 0, command
        assert "Permission denied" in res.stderr.decode(), (command, res.stderr)
    assert in_container(c, "ls /tmp").split() == ["data"]


def test_path_prefix_grant(
    gateway: Gateway, make_container: MakeContainer, debian_image: str, tmp_path: Path
) -> None:
    c = make_container(debian_image)
    in_container(
        c,
        "mkdir -p /srv/app /srv/other && echo in > /srv/app/in && echo out > /srv/other/out"
        " && ln -s /srv/other /srv/app/escape && chown -R 1000:1000 /srv",
    )
    user = files_user(gateway, c, paths=("/srv/app",))
    (tmp_path / "up").write_bytes(b"up")
    res = sftp(gateway, user, c, "pwd\nget in\nput up\nls -l\n", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Remote working directory: /srv/app" in res.stdout.decode()
    assert (tmp_path / "in").read_bytes() == b"in\n"
    assert in_container(c, "cat /srv/app/up") == "up"
    for command, message in (
        # OpenSSH's sftp globs first: a refused path is "not found" to its get
        ("get /srv/other/out", "not found"),
        ("get /srv/app/../other/out", "not found"),
        ("get /srv/app/escape/out", "not found"),
        ("get /etc/passwd", "not found"),
        ("ls /srv", "not found"),
        ("ls /srv/app/escape/", "not found"),
        ("put up /srv/other/up", "Permission denied"),
        ("put up /srv/app/escape/up", "Permission denied"),
    ):
        res = sftp(gateway, user, c, command + "\n", tmp_path, timeout=60)
        assert res.returncode != 0, command
        assert message in res.stderr.decode(), (command, res.stderr)
    with paramiko_sftp(gateway, user, c) as s:
        for path in ("/srv/other/out", "/srv/app/../other/out", "/srv/app/escape/out"):
            with pytest.raises(PermissionError, match="outside the paths"):
                s.stat(path)
        assert s.lstat("/srv/app/escape").st_size is not None  # the link itself is inside
    assert not (tmp_path / "out").exists() and not (tmp_path / "passwd").exists()


def test_200mb_put_and_get(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    c = make_container(busybox_image)
    user = files_user(gateway, c)
    src = random_file(tmp_path / "big.bin", 200 * 1024 * 1024)
    digest = sha256_file(src)
    res = sftp(gateway, user, c, "put big.bin /tmp/big.bin\nget /tmp/big.bin back.bin\n", tmp_path)
    assert res.returncode == 0, res.stderr
    assert container_sha256(c, "/tmp/big.bin") == digest
    assert sha256_file(tmp_path / "back.bin") == digest


def test_container_without_tar(
    gateway: Gateway, make_container: MakeContainer, debian_image: str, tmp_path: Path
) -> None:
    c = make_container(debian_image)
    in_container(c, "rm -f /usr/bin/tar /bin/tar")
    user = files_user(gateway, c)
    src = random_file(tmp_path / "f.bin", 2 * 1024 * 1024 + 3)
    res = sftp(gateway, user, c, "put f.bin /tmp/f.bin\nget /tmp/f.bin back.bin\n", tmp_path)
    assert res.returncode == 0, res.stderr
    assert sha256_file(tmp_path / "back.bin") == sha256_file(src)
    assert in_container(c, "stat -c %U /tmp/f.bin").strip() == "app"


# --- paramiko: random access ---------------------------------------------------------------


@contextmanager
def paramiko_sftp(gateway: Gateway, user: str, container: str) -> Iterator[Any]:
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(str(gateway.keys[user]))
    transport = paramiko.Transport(("127.0.0.1", gateway.port))
    try:
        transport.connect(username=f"{user}+{container}", pkey=key)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        yield client
        client.close()
    finally:
        transport.close()


def test_paramiko_random_access(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    c = make_container(image)
    user = files_user(gateway, c)
    with paramiko_sftp(gateway, user, c) as s:
        with s.open("/tmp/r.bin", "w") as f:
            f.write(b"0123456789" * 1000)
        with s.open("/tmp/r.bin", "r+") as f:
            f.seek(5)
            f.write(b"XYZ")
            f.seek(9990)
            f.write(b"END")
            f.seek(3)
            assert f.read(6) == b"34XYZ8"
            f.seek(12000)
            f.write(b"far")
        with s.open("/tmp/r.bin", "a") as f:
            f.write(b"+append")
        data = s.open("/tmp/r.bin").read()
        assert len(data) == 12000 + 3 + 7
        assert data[:10] == b"01234XYZ89" and data[9988:9995] == b"89END34"
        assert data[10000:12000] == b"\0" * 2000 and data.endswith(b"far+append")
        s.truncate("/tmp/r.bin", 100)
        assert s.stat("/tmp/r.bin").st_size == 100
        with pytest.raises(OSError):
            s.open("/tmp/r.bin", "x")
        s.utime("/tmp/r.bin", (1_000_000, 2_000_000))
        st = s.stat("/tmp/r.bin")
        assert (st.st_atime, st.st_mtime, st.st_uid) == (1_000_000, 2_000_000, 1000)
        s.symlink("/tmp/r.bin", "/tmp/r.lnk")
        assert s.readlink("/tmp/r.lnk") == "/tmp/r.bin"
        s.posix_rename("/tmp/r.bin", "/tmp/r2.bin")
        with pytest.raises(FileNotFoundError):
            s.stat("/tmp/r.bin")
        with pytest.raises(PermissionError):
            s.open("/root/nope", "w")
        with pytest.raises(PermissionError):
            s.chown("/tmp/r2.bin", 0, 0)
        assert s.normalize(".") == "/home/app"
        big = os.urandom(5 * 1024 * 1024)
        with s.open("/tmp/big", "w") as f:
            f.write(big)
        with s.open("/tmp/big", "r") as f:
            for offset in (4_000_000, 10, 2_500_000, 5 * 1024 * 1024 - 5):
                f.seek(offset)
                assert f.read(70_000) == big[offset : offset + 70_000]
    assert in_container(c, "ls -A /tmp | grep -c sshgw || true").strip() == "0"


def test_new_file_found_by_path_before_its_close(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    """A new file lives under a temporary name until CLOSE, but sshfs sends CLOSE from FUSE's
    asynchronous release: a program's open() right after close() overtook it and found
    nothing (ENOENT). An OPEN, RENAME or REMOVE by path of a file the session is still
    creating now finds it, as with sftp-server, whose files exist from OPEN on."""
    c = make_container(image)
    user = files_user(gateway, c)
    with paramiko_sftp(gateway, user, c) as s:

        def writing(path: str, data: bytes) -> Any:
            """A new file, open, with ``data`` sent to the gateway (no CLOSE yet)."""
            w = s.open(path, "w")
            w.write(data)
            w.flush()
            return w

        w = writing("/tmp/early.txt", b"abc")
        with s.open("/tmp/early.txt", "r") as r:  # before the writer's CLOSE
            assert r.read() == b"abc"
        w.write(b"def")
        w.close()
        with s.open("/tmp/early.txt", "r") as r:
            assert r.read() == b"abcdef"
        w = writing("/tmp/moving", b"x")
        s.posix_rename("/tmp/moving", "/tmp/moved")
        w.close()
        with s.open("/tmp/moved", "r") as r:
            assert r.read() == b"x"
        w = writing("/tmp/gone", b"y")
        s.remove("/tmp/gone")
        w.close()
        with pytest.raises(FileNotFoundError):
            s.stat("/tmp/gone")
        with pytest.raises(FileNotFoundError):
            s.stat("/tmp/moving")
    assert in_container(c, "ls -A /tmp | grep -c sshgw || true").strip() == "0"
    assert in_container(c, "stat -c '%a %U' /tmp/early.txt /tmp/moved").split("\n")[:2] == [
        "644 app",
        "644 app",
    ]


def test_container_without_shell(
    gateway: Gateway, make_container: MakeContainer, noshell_image: str, tmp_path: Path
) -> None:
    c = make_container(noshell_image)
    src = random_file(tmp_path / "f.bin", 3 * 1024 * 1024)
    root_user = files_user(gateway, c, logins="root")
    res = sftp(
        gateway,
        root_user,
        c,
        "mkdir /tmp/d\nput f.bin /tmp/d/f.bin\nls -l /tmp/d\nget /tmp/d/f.bin back.bin\n",
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert sha256_file(tmp_path / "back.bin") == sha256_file(src)
    assert "f.bin" in res.stdout.decode()
    res = sftp(gateway, root_user, c, "rm /tmp/d/f.bin\n", tmp_path, timeout=60)
    assert res.returncode != 0
    no_traceback(res.stderr)
    # other logins: the archive API would ignore the container's permissions, so refuse
    app_user = files_user(gateway, c, logins="app")
    res = sftp(gateway, app_user, c, "ls /\n", tmp_path, timeout=60)
    assert res.returncode != 0
    assert "/bin/sh" in res.stderr.decode(), res.stderr
    no_traceback(res.stderr)
