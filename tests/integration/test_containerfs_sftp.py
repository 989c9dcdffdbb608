"""The SFTP server over containerfs, served by a bare asyncssh harness (no gateway, no database).

What needs the server's insides: interrupted uploads (no file under the final name, no temporary,
no process left), the per-operation hook, refusals of a read-only session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sftp_harness import SSH_OPTS, SFTPHarness

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def in_container(container: str, script: str) -> str:
    res = subprocess.run(
        ["docker", "exec", container, "sh", "-c", script],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.decode("utf-8", "backslashreplace")


def temp_files(container: str, folder: str) -> list[str]:
    return in_container(container, f"ls -A {folder} | grep '^\\.sshgw-' || true").split()


def processes(container: str) -> str:
    return subprocess.run(
        ["docker", "top", container, "-o", "pid,args"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


@pytest.fixture(params=["busybox", "debian"])
def image(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_image"))


@pytest.mark.parametrize("client", ["sftp", "scp", "scp-O"])
def test_interrupted_upload_leaves_nothing(
    make_container: MakeContainer, image: str, tmp_path: Path, client: str
) -> None:
    c = make_container(image)
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.write(os.urandom(32 * 1024 * 1024))
    with SFTPHarness(c, login="app", workdir=tmp_path) as h:
        # about 2 MB/s, so the upload is certainly running when the client dies
        base = ["-P", str(h.port), "-l", "16000"]
        if client == "sftp":
            argv = ["sftp", *SSH_OPTS, *base, "-b", "-", "t@127.0.0.1"]
            stdin: int | None = subprocess.PIPE
        else:
            argv = ["scp", *SSH_OPTS, *base, *(["-O"] if client == "scp-O" else [])]
            argv += ["big.bin", "t@127.0.0.1:/tmp/big.bin"]
            stdin = subprocess.DEVNULL
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if proc.stdin is not None:
                proc.stdin.write(b"put big.bin /tmp/big.bin\n")
                proc.stdin.close()

            def growing() -> bool:
                sizes = in_container(c, "stat -c %s /tmp/.sshgw-* 2>/dev/null || true").split()
                return any(int(s) > 1_000_000 for s in sizes)

            assert wait_for(growing), "the upload did not start"
            assert in_container(c, "ls /tmp/big.bin 2>/dev/null || true") == ""
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert h.idle(), "the session did not end"
        assert in_container(c, "ls /tmp/big.bin 2>/dev/null || true") == ""
        assert temp_files(c, "/tmp") == []
        assert wait_for(lambda: "dd " not in processes(c) and "sh -c" not in processes(c))
        writes = [o for o in h.ops if o.op == "write"]
        assert writes and writes[-1].result == "aborted"


def test_operations_are_reported(make_container: MakeContainer, image: str, tmp_path: Path) -> None:
    c = make_container(image)
    (tmp_path / "up.bin").write_bytes(b"u" * 100_000)
    with SFTPHarness(c, login="app", workdir=tmp_path) as h:
        res = h.sftp(
            "put up.bin /tmp/up.bin\nget /tmp/up.bin down.bin\nmkdir /tmp/d\nrmdir /tmp/d\n"
            "-get /root/nothing\n-mkdir /etc/nope\n"
        )
        assert res.returncode == 0, res.stderr
        assert h.idle()
    ops = [(o.op, o.path, o.nbytes, o.result) for o in h.ops]
    assert ("write", "/tmp/up.bin", 100_000, "ok") in ops
    assert ("read", "/tmp/up.bin", 100_000, "ok") in ops
    assert ("mkdir", "/tmp/d", 0, "ok") in ops
    assert ("rmdir", "/tmp/d", 0, "ok") in ops
    assert ("mkdir", "/etc/nope", 0, "denied") in ops
    assert any(
        op in ("stat", "lstat") and path == "/root/nothing" and res != "ok"
        for op, path, _, res in ops
    )
    assert all(o.seconds >= 0 for o in h.ops)


def test_read_only_session_refuses_every_change(make_container: MakeContainer, image: str) -> None:
    c = make_container(image)
    in_container(c, "echo data > /tmp/data && chmod 666 /tmp/data && mkdir /tmp/dir")
    with SFTPHarness(c, login="root", writable=False) as h:
        client = h.paramiko()
        try:
            assert client.open("/tmp/data").read() == b"data\n"
            assert "data" in client.listdir("/tmp")
            refused: list[Callable[[], object]] = [
                lambda: client.open("/tmp/data", "r+"),
                lambda: client.open("/tmp/data", "a"),
                lambda: client.open("/tmp/new", "w"),
                lambda: client.remove("/tmp/data"),
                lambda: client.rename("/tmp/data", "/tmp/other"),
                lambda: client.posix_rename("/tmp/data", "/tmp/other"),
                lambda: client.mkdir("/tmp/new"),
                lambda: client.rmdir("/tmp/dir"),
                lambda: client.chmod("/tmp/data", 0o600),
                lambda: client.utime("/tmp/data", (1, 1)),
                lambda: client.truncate("/tmp/data", 0),
                lambda: client.symlink("/tmp/data", "/tmp/link"),
            ]
            for op in refused:
                with pytest.raises(PermissionError, match="read-only"):
                    op()
        finally:
            client.close()
            client.get_channel().get_transport().close()
        assert h.idle()
    assert in_container(c, "ls /tmp; cat /tmp/data; stat -c %a /tmp/data").split() == [
        "data",
        "dir",
        "data",
        "666",
    ]
    assert {o.result for o in h.ops if o.op not in ("open", "read", "list", "stat", "lstat")} == {
        "denied"
    }


def test_scp_exit_status_and_no_stray_processes(
    make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    c = make_container(busybox_image)
    (tmp_path / "f").write_bytes(b"f")
    with SFTPHarness(c, login="app", workdir=tmp_path) as h:
        for legacy in (False, True):
            ok = h.scp("f", ":/tmp/f", legacy=legacy)
            assert ok.returncode == 0, ok.stderr
            bad = h.scp("f", ":/root/f", legacy=legacy)
            assert bad.returncode != 0 and b"Permission denied" in bad.stderr, bad.stderr
        assert h.idle()
    assert wait_for(lambda: "sh -c" not in processes(c)), processes(c)
