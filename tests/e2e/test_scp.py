"""scp through the gateway: OpenSSH 9's default (SFTP underneath) and legacy ``scp -O``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.helpers import Gateway, no_traceback
from tests.e2e.test_sftp import (
    client_opts,
    container_sha256,
    files_user,
    in_container,
    random_file,
    sha256_file,
)

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

ODD_NAMES = ["sp ace", "new\nline", "ütf-8 ☃", "quote'\"", "-dash", "star*?"]
LATIN1 = b"latin1-\xe9\xff".decode("utf-8", "surrogateescape")


def scp(
    gateway: Gateway,
    user: str,
    container: str,
    *args: str,
    legacy: bool,
    cwd: Path,
    timeout: float = 600,
) -> subprocess.CompletedProcess[bytes]:
    """``scp``; an argument ``:PATH`` is the container's PATH."""
    remote = f"{user}+{container}@127.0.0.1"
    argv = ["scp", *client_opts(gateway, user), "-P", str(gateway.port)]
    if legacy:
        argv.append("-O")
    argv += [remote + a if a.startswith(":") else a for a in args]
    return subprocess.run(
        argv, capture_output=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL, check=False
    )


def make_tree(root: Path, names: list[str], files: int = 1000) -> Path:
    """``files`` small files spread over nested directories, plus odd names and an empty dir."""
    root.mkdir()
    for i in range(files):
        d = root / f"d{i % 10}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(b"file %d\n" % i * (i % 5 + 1))
    for name in names:
        (root / name).write_bytes(name.encode("utf-8", "surrogateescape"))
    (root / "empty").mkdir()
    deep = root / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "deep.bin").write_bytes(os.urandom(100_000))
    os.utime(deep / "deep.bin", (1_400_000_000, 1_500_000_000))
    return root


def tree_digest(root: Path) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.join(rel, d)] = (-1, b"")
        for f in filenames:
            p = Path(dirpath) / f
            out[os.path.join(rel, f)] = (p.stat().st_size, p.read_bytes())
    return out


@pytest.mark.parametrize(
    "which,legacy,files",
    [
        ("busybox", False, 1000),
        ("debian", True, 1000),
        ("busybox", True, 100),
        ("debian", False, 100),
    ],
    ids=["busybox-sftp-mode", "debian-legacy-O", "busybox-legacy-O", "debian-sftp-mode"],
)
def test_scp_files_and_trees(
    gateway: Gateway,
    make_container: MakeContainer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    which: str,
    legacy: bool,
    files: int,
) -> None:
    c = make_container(request.getfixturevalue(f"{which}_image"))
    in_container(c, "mkdir -p /srv/up && chown 1000:1000 /srv/up")
    user = files_user(gateway, c)
    one = random_file(tmp_path / "one.bin", 1024 * 1024)
    os.chmod(one, 0o640)
    os.utime(one, (1_300_000_000, 1_400_000_000))
    # the legacy protocol cannot carry a newline in a name (with any server)
    names = [n for n in [*ODD_NAMES, LATIN1] if not (legacy and "\n" in n)]
    tree = make_tree(tmp_path / "tree", names, files)

    res = scp(gateway, user, c, "-p", "one.bin", ":/srv/up/", legacy=legacy, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert container_sha256(c, "/srv/up/one.bin") == sha256_file(one)
    assert in_container(c, "stat -c '%a %Y %U' /srv/up/one.bin").split() == [
        "640",
        "1400000000",
        "app",
    ]

    res = scp(gateway, user, c, "-r", "-p", "tree", ":/srv/up/", legacy=legacy, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    count = "find /srv/up/tree -type f -print0 | tr -d -c '\\000' | wc -c"
    assert in_container(c, count).strip() == str(files + len(names) + 1)

    (tmp_path / "back").mkdir()
    res = scp(gateway, user, c, ":/srv/up/one.bin", "back/", legacy=legacy, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sha256_file(tmp_path / "back" / "one.bin") == sha256_file(one)

    res = scp(gateway, user, c, "-r", "-p", ":/srv/up/tree", "back/", legacy=legacy, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    no_traceback(res.stderr)
    assert tree_digest(tmp_path / "back" / "tree") == tree_digest(tree)
    deep = tmp_path / "back" / "tree" / "a" / "b" / "c" / "d" / "deep.bin"
    assert deep.stat().st_mtime == 1_500_000_000
    # nothing half-written or temporary was left in the container
    assert in_container(c, "find /srv/up -name '.sshgw-*' | wc -l").strip() == "0"


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_failures_have_status_and_message(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    tmp_path: Path,
    legacy: bool,
) -> None:
    c = make_container(busybox_image)
    in_container(c, "echo secret > /root/secret; chmod 600 /root/secret")
    user = files_user(gateway, c)
    (tmp_path / "x").write_bytes(b"x")
    cases = [
        ((":/nonexistent", "x.back"), ("No such file", "No matches found")),
        # the client globs first: an unreadable file may look missing (as with sshd)
        ((":/root/secret", "s.back"), ("Permission denied", "No matches found", "No such file")),
        (("x", ":/root/x"), ("Permission denied",)),
        (("x", ":/nonexistent/dir/x"), ("No such file", "not found", "Failure")),
    ]
    for args, messages in cases:
        res = scp(gateway, user, c, *args, legacy=legacy, cwd=tmp_path, timeout=120)
        err = res.stderr.decode(errors="replace")
        assert res.returncode != 0, (args, err)
        assert any(m in err for m in messages), (args, err)
        no_traceback(res.stderr)
    assert not (tmp_path / "s.back").exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_read_only_grant(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    tmp_path: Path,
    legacy: bool,
) -> None:
    c = make_container(busybox_image)
    in_container(c, "echo data > /tmp/data")
    user = files_user(gateway, c, rights="sftp-read")
    res = scp(gateway, user, c, ":/tmp/data", "data", legacy=legacy, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "data").read_bytes() == b"data\n"
    res = scp(gateway, user, c, "data", ":/tmp/new", legacy=legacy, cwd=tmp_path)
    assert res.returncode != 0
    assert "Permission denied" in res.stderr.decode(), res.stderr
    assert in_container(c, "ls /tmp").split() == ["data"]


def test_scp_legacy_200mb_download(
    gateway: Gateway, make_container: MakeContainer, debian_image: str, tmp_path: Path
) -> None:
    c = make_container(debian_image)
    in_container(c, "head -c 209715200 /dev/urandom > /tmp/big.bin")
    user = files_user(gateway, c)
    res = scp(gateway, user, c, ":/tmp/big.bin", "big.bin", legacy=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sha256_file(tmp_path / "big.bin") == container_sha256(c, "/tmp/big.bin")
