"""Everyday SFTP clients against the gateway: rclone, sshfs, lftp, PuTTY (pscp, psftp), curl.

Each runs the real binary from Debian's packages (``scripts/test.sh`` installs them; a missing
binary skips its test and says which) against one container per image, made once for the
module. OpenSSH's ``sftp``/``scp`` and paramiko are in test_sftp.py and test_scp.py; their
refusals are here with every other client's: each client against a read-only grant and a
--path rule, on both images (the ``*_refusals`` tests, sharing ``refusal``).

Regressions kept here (issue 11): rclone's uploads failed with "Unexpected data at end of
packet" (its last, short WRITE carries the rest of its 32 KiB buffer after the data) and sshfs
could not create a file (ENOENT: it stats the path between OPEN and CLOSE, while the new file
still has its temporary name); see gateway/sftp/compat.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import NamedTuple

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, no_traceback, unique
from tests.e2e.test_scp import scp
from tests.e2e.test_sftp import in_container, paramiko_sftp, random_file, sftp
from tests.security.test_file_channel import sftp_client
from tests.support.containers import docker_run_argv, owned_labels
from tests.support.process import HOST

pytestmark = pytest.mark.docker

RIGHTS = "sftp-read,sftp-write,exec"  # exec: rclone runs md5sum/sha1sum for remote hashes
NAMES = ("plain.txt", "sp ace ü ñ.txt", "日本語.bin")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/test.sh installs it from Debian)")
    return path


def run(
    argv: Sequence[str], timeout: float = 120, cwd: Path | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(
        list(argv),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    no_traceback(res.stdout, res.stderr)
    return res


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote_sha256(container: str, path: str) -> str:
    return in_container(container, f"sha256sum '{path}'").split()[0]


@pytest.fixture(scope="module", params=["busybox", "debian"])
def box(request: pytest.FixtureRequest, docker_host: str) -> Iterator[str]:
    """One container per image for the whole module; /srv/www is the login app's."""
    image = str(request.getfixturevalue(f"{request.param}_image"))
    name = f"sshgw-t-{uuid.uuid4().hex[:10]}"
    res = subprocess.run(
        docker_run_argv(image, name, owned_labels()), capture_output=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr.decode()
    try:
        in_container(name, "mkdir -p /srv/www /srv/ok && chown 1000:1000 /srv/www /srv/ok")
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


def make_user(
    gateway: Gateway, container: str, rights: str = RIGHTS, paths: Sequence[str] = ()
) -> str:
    user = unique("c")
    gateway.add_user(user)
    args = ["grant", "add", "--user", user, "--target", container, "--rights", rights]
    args += ["--logins", "app"]
    for p in paths:
        args += ["--path", p]
    gateway.cli(*args)
    return user


def fresh_dir(container: str, parent: str = "/srv/www") -> str:
    d = f"{parent}/{uuid.uuid4().hex[:8]}"
    in_container(container, f"mkdir {d}", user="app")
    return d


# The refusal tests (issue 11): each client against a read-only grant and a --path rule. A
# refusal is clean when the client reports it, nothing changes in the container, allowed reads
# work for the same user and the gateway goes on serving (an allowed operation after it works).


@pytest.fixture(scope="module")
def refusal_users(gateway: Gateway, box: str) -> tuple[str, str]:
    """Shared by the refusal tests of one box: a read-only user and a --path limited one."""
    read_only = make_user(gateway, box, rights="sftp-read")
    return read_only, make_user(gateway, box, paths=("/srv/ok",))


class Refusal(NamedTuple):
    box: str
    read_only: str  # sftp-read only
    limited: str  # sftp-read,sftp-write with --path /srv/ok
    www: str  # a fresh directory outside /srv/ok, holding a file "existing" ("old")
    ok: str  # and one inside it


@pytest.fixture
def refusal(box: str, refusal_users: tuple[str, str]) -> Refusal:
    www, ok = fresh_dir(box), fresh_dir(box, "/srv/ok")
    in_container(box, f"echo old > {www}/existing && echo old > {ok}/existing", user="app")
    return Refusal(box, *refusal_users, www, ok)


def untouched(container: str, d: str) -> None:
    """Nothing in ``d`` was created, removed, renamed or changed: ``existing`` alone, as made."""
    out = in_container(container, f"ls -A {d}; cat {d}/existing; stat -c %a {d}/existing")
    assert out == "existing\nold\n644\n", out


def denied(res: subprocess.CompletedProcess[bytes], message: str = "permission denied") -> None:
    """The client failed and said why (``message``, any case, on stdout or stderr)."""
    out = (res.stdout + res.stderr).decode(errors="replace")
    assert res.returncode != 0 and message.lower() in out.lower(), (res.returncode, out)


# --- rclone (Go pkg/sftp) ------------------------------------------------------------------


def rclone(
    gateway: Gateway, user: str, container: str, *args: str, tmp: Path
) -> subprocess.CompletedProcess[bytes]:
    remote = (
        f":sftp,host={HOST},port={gateway.port},user={user}+{container},"
        f"key_file={gateway.keys[user]}"
    )
    argv = [need("rclone"), "--config", str(tmp / "rclone.conf"), "--retries", "1"]
    argv += ["--low-level-retries", "1", "--contimeout", "30s"]
    return run([*argv, *[a.replace("REMOTE:", remote + ":") for a in args]], cwd=tmp)


def test_rclone_copy_sync_check(gateway: Gateway, box: str, tmp_path: Path) -> None:
    """Regression: every rclone upload whose size is not a multiple of 32 KiB failed."""
    user = make_user(gateway, box)
    dest = fresh_dir(box)
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    random_file(src / "100k.bin", 100_000)  # 3 x 32 KiB + a short write
    for i, name in enumerate(NAMES):
        (src / "sub dir" / name).write_bytes(f"{name} {i}\n".encode() * 50)
    res = rclone(gateway, user, box, "copy", str(src), f"REMOTE:{dest}", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    for p in src.rglob("*"):
        if p.is_file():
            rel = p.relative_to(src).as_posix()
            assert remote_sha256(box, f"{dest}/{rel}") == sha256(p.read_bytes()), rel
    # check compares sizes and the md5 the container computes (md5sum through exec)
    res = rclone(gateway, user, box, "check", str(src), f"REMOTE:{dest}", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert b"0 differences found" in res.stderr
    assert b"could not be checked" not in res.stderr, res.stderr.decode()
    # (rclone 1.60 detects the hash command lazily and md5sum of a tree can race it: name it)
    res = rclone(
        gateway,
        user,
        box,
        "md5sum",
        "--sftp-md5sum-command",
        "md5sum",
        f"REMOTE:{dest}",
        tmp=tmp_path,
    )
    assert res.returncode == 0, res.stderr.decode()
    want = hashlib.md5((src / "100k.bin").read_bytes()).hexdigest()
    assert f"{want}  100k.bin".encode() in res.stdout
    # sync deletes what is gone here and replaces what changed
    (src / "sub dir" / NAMES[1]).unlink()
    (src / "100k.bin").write_bytes(b"changed\n")
    res = rclone(gateway, user, box, "sync", str(src), f"REMOTE:{dest}", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    exists = f"cd '{dest}/sub dir' && test ! -e '{NAMES[1]}' && test -e '{NAMES[2]}' && echo ok"
    assert in_container(box, exists) == "ok\n"  # (busybox ls shows non-ASCII names as ?)
    assert in_container(box, f"cat '{dest}/100k.bin'") == "changed\n"
    # and back
    res = rclone(gateway, user, box, "copy", f"REMOTE:{dest}", str(tmp_path / "back"), tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "back" / "sub dir" / NAMES[2]).read_bytes() == (
        src / "sub dir" / NAMES[2]
    ).read_bytes()


def test_rclone_refusals(gateway: Gateway, box: str, tmp_path: Path) -> None:
    """Without exec rclone still copies (no remote hashes); a read-only grant and a --path
    rule refuse cleanly: an error from rclone, no file in the container."""
    src = tmp_path / "src"
    src.mkdir()
    random_file(src / "f.bin", 40_000)
    no_exec = make_user(gateway, box, rights="sftp-read,sftp-write")
    dest = fresh_dir(box)
    res = rclone(gateway, no_exec, box, "copy", str(src), f"REMOTE:{dest}", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert remote_sha256(box, f"{dest}/f.bin") == sha256((src / "f.bin").read_bytes())

    read_only = make_user(gateway, box, rights="sftp-read")
    dest = fresh_dir(box)
    res = rclone(gateway, read_only, box, "copy", str(src), f"REMOTE:{dest}", tmp=tmp_path)
    assert res.returncode != 0
    assert b"permission denied" in res.stderr.lower(), res.stderr.decode()
    assert in_container(box, f"ls -A {dest}") == ""
    res = rclone(gateway, read_only, box, "lsf", f"REMOTE:{dest}", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()

    limited = make_user(gateway, box, paths=("/srv/ok",))
    res = rclone(gateway, limited, box, "copy", str(src), "REMOTE:/srv/www/out", tmp=tmp_path)
    assert res.returncode != 0
    assert b"permission denied" in res.stderr.lower(), res.stderr.decode()
    assert "out" not in in_container(box, "ls -A /srv/www")
    res = rclone(gateway, limited, box, "copy", str(src), "REMOTE:/srv/ok/in", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert remote_sha256(box, "/srv/ok/in/f.bin") == sha256((src / "f.bin").read_bytes())


# --- sshfs (FUSE) --------------------------------------------------------------------------


def fuse_usable() -> str | None:
    """Why FUSE mounts cannot work here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine (FUSE mounts impossible)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "no fusermount (package fuse3)"
    return None


def settled(container: str, path: str) -> None:
    """Wait until a new file written through sshfs is in place, for a check from inside the
    container (not through the mount).

    sshfs closes a file (SFTP CLOSE) from FUSE's release, which the kernel sends after
    close(2) has returned, and a new file gets its final name at that CLOSE. Through the mount
    nothing needs to wait: an OPEN by path of the file first puts it in place
    (gateway/sftp/compat.py), so the test opens new files right after writing them.
    """
    script = f"for i in $(seq 50); do [ -e '{path}' ] && exit 0; sleep 0.1; done; exit 1"
    in_container(container, script)


def sshfs_mount(
    gateway: Gateway, user: str, container: str, remote: str, mnt: Path
) -> subprocess.CompletedProcess[bytes]:
    """Mount the container's ``remote`` on ``mnt`` (skips without sshfs or FUSE)."""
    sshfs = need("sshfs")
    why = fuse_usable()
    if why:
        pytest.skip(why)
    mnt.mkdir()
    opts = [
        f"port={gateway.port}",
        f"IdentityFile={gateway.keys[user]}",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "ConnectTimeout=30",
    ]
    where = f"{user}+{container}@{HOST}:{remote}"
    return run([sshfs, "-F", "/dev/null", "-o", ",".join(opts), where, str(mnt)], timeout=60)


@contextmanager
def mounted(gateway: Gateway, user: str, container: str, remote: str, mnt: Path) -> Iterator[Path]:
    res = sshfs_mount(gateway, user, container, remote, mnt)
    assert res.returncode == 0, res.stderr.decode()
    try:
        yield mnt
    finally:
        unmount(mnt)


def unmount(mnt: Path) -> None:
    run([shutil.which("fusermount3") or "fusermount", "-u", str(mnt)], timeout=30)


def test_sshfs(gateway: Gateway, box: str, tmp_path: Path) -> None:
    """Regressions: creating a file failed with ENOENT (the mount listed fine); reading a
    new file right after writing it could fail with ENOENT (the OPEN overtook the CLOSE)."""
    user = make_user(gateway, box)
    dest = fresh_dir(box)
    in_container(box, f"echo old > {dest}/existing", user="app")
    with mounted(gateway, user, box, dest, tmp_path / "mnt") as mnt:
        assert (mnt / "existing").read_bytes() == b"old\n"
        (mnt / "new.txt").write_bytes(b"hello\n")  # create + write
        assert (mnt / "new.txt").read_bytes() == b"hello\n"
        fd = os.open(mnt / "timed", os.O_CREAT | os.O_WRONLY, 0o644)  # like cp -p:
        try:
            os.write(fd, b"t")
            os.utime(mnt / "timed", (1_500_000_000, 1_600_000_000))  # times by path, still open
        finally:
            os.close(fd)
        settled(box, f"{dest}/timed")
        assert in_container(box, f"stat -c %Y {dest}/timed").strip() == "1600000000"
        (mnt / "timed").unlink()
        data = bytearray(os.urandom(200_000))
        (mnt / "big.bin").write_bytes(data)
        with (mnt / "big.bin").open("r+b") as f:  # in-place random writes
            for off in (150_000, 7, 65_536):
                f.seek(off)
                f.write(b"XYZ")
                data[off : off + 3] = b"XYZ"
        assert remote_sha256(box, f"{dest}/big.bin") == sha256(bytes(data))
        (mnt / "new.txt").rename(mnt / "renamed ü.txt")
        os.truncate(mnt / "big.bin", 1000)
        assert (mnt / "big.bin").stat().st_size == 1000
        os.chmod(mnt / "renamed ü.txt", 0o600)
        assert (mnt / "renamed ü.txt").stat().st_mode & 0o777 == 0o600
        os.symlink("renamed ü.txt", mnt / "link")
        assert os.readlink(mnt / "link") == "renamed ü.txt"
        assert (mnt / "link").read_bytes() == b"hello\n"
        (mnt / "d").mkdir()
        (mnt / "d").rmdir()
        assert os.statvfs(mnt).f_blocks > 0
        df = run(["df", "-P", str(mnt)])
        assert df.returncode == 0 and user.encode() in df.stdout, df.stdout
        assert sorted(os.listdir(mnt)) == sorted(["existing", "big.bin", "renamed ü.txt", "link"])
    out = in_container(box, f"cd {dest} && stat -c '%s %a' existing big.bin 'renamed ü.txt'")
    assert out.splitlines() == ["4 644", "1000 644", "6 600"]
    assert in_container(box, f"readlink {dest}/link").strip() == "renamed ü.txt"
    assert sha256(bytes(data[:1000])) == remote_sha256(box, f"{dest}/big.bin")


def test_sshfs_refusals(gateway: Gateway, refusal: Refusal, tmp_path: Path) -> None:
    """Read-only: every change fails with EACCES, reading goes on; a --path rule refuses to
    mount a directory outside it (inside a mount of /srv/ok no path outside can be named: the
    kernel resolves .. and symlinks on this side)."""
    box, read_only, limited, www, ok = refusal
    with mounted(gateway, read_only, box, www, tmp_path / "ro") as mnt:
        changes = (
            lambda: (mnt / "new").write_bytes(b"x"),
            lambda: (mnt / "existing").write_bytes(b"x"),
            lambda: (mnt / "d").mkdir(),
            lambda: (mnt / "existing").unlink(),
            lambda: (mnt / "existing").rename(mnt / "moved"),
            lambda: (mnt / "existing").chmod(0o600),
            lambda: (mnt / "link").symlink_to("existing"),
        )
        for i, change in enumerate(changes):
            with pytest.raises(PermissionError):
                change()
                pytest.fail(f"change {i} was not refused")
        assert (mnt / "existing").read_bytes() == b"old\n"
    res = sshfs_mount(gateway, limited, box, www, tmp_path / "out")
    if res.returncode == 0:  # (a gateway bug: leave no mount behind)
        unmount(tmp_path / "out")
    denied(res)
    with mounted(gateway, limited, box, ok, tmp_path / "in") as mnt:
        (mnt / "new").write_bytes(b"new\n")
        assert (mnt / "new").read_bytes() == b"new\n"
    untouched(box, www)


# --- lftp ----------------------------------------------------------------------------------


def lftp(
    gateway: Gateway, user: str, container: str, commands: str, tmp: Path
) -> subprocess.CompletedProcess[bytes]:
    """``lftp -c`` with ``commands`` after an open of the container (one SFTP session)."""
    ssh = (
        f"ssh -a -x -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        f"-o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=30 -i {gateway.keys[user]}"
    )
    script = (
        f"set sftp:auto-confirm yes; set sftp:connect-program '{ssh}'; set net:max-retries 1; "
        f"open -u {user}+{container}, -p {gateway.port} sftp://{HOST}; {commands}"
    )
    return run([need("lftp"), "-c", script], cwd=tmp)


def test_lftp_mirror(gateway: Gateway, box: str, tmp_path: Path) -> None:
    user = make_user(gateway, box)
    dest = fresh_dir(box)
    up = tmp_path / "up"
    (up / "sub").mkdir(parents=True)
    random_file(up / "sub" / "a.bin", 70_000)
    (up / NAMES[1]).write_bytes(b"spaces\n")
    res = lftp(gateway, user, box, f"mirror -R {up} {dest}/up; mirror {dest}/up down", tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert remote_sha256(box, f"{dest}/up/sub/a.bin") == sha256((up / "sub" / "a.bin").read_bytes())
    assert in_container(box, f"cat '{dest}/up/{NAMES[1]}'") == "spaces\n"
    assert (tmp_path / "down" / "sub" / "a.bin").read_bytes() == (up / "sub" / "a.bin").read_bytes()
    assert (tmp_path / "down" / NAMES[1]).read_bytes() == b"spaces\n"


def lftp_errors(res: subprocess.CompletedProcess[bytes]) -> list[tuple[str, str]]:
    """(command, message) of each error lftp printed; the session itself ended well."""
    assert res.returncode == 0, res.stderr.decode()
    # "mkdir: Access failed: /srv/www/x/d: Permission denied (...)"
    fields = [ln.split(": ", 3) for ln in res.stderr.decode().splitlines()]
    return [(f[0], f[-1]) for f in fields]


def test_lftp_refusals(gateway: Gateway, refusal: Refusal, tmp_path: Path) -> None:
    """In one session each: the refused commands fail one by one, the mirrors after them work."""
    box, read_only, limited, www, ok = refusal
    up = tmp_path / "up"
    up.mkdir()
    (up / "f.txt").write_bytes(b"up\n")
    changes = f"rm {www}/existing; mv {www}/existing {www}/moved; mkdir {www}/d; "
    changes += f"chmod 600 {www}/existing"
    res = lftp(
        gateway, read_only, box, f"mirror -R {up} {www}; {changes}; mirror {www} down", tmp_path
    )
    denied = "Permission denied (read-only access: no sftp-write right)"
    cmds = ["mirror", "rm", "mv", "mkdir", "chmod"]
    assert lftp_errors(res) == [(c, denied) for c in cmds], res.stderr.decode()
    assert (tmp_path / "down" / "existing").read_bytes() == b"old\n"
    mirrors = f"mirror -R {up} {www}; mirror {www} out; mirror -R {up} {ok}; mirror {ok} in"
    res = lftp(gateway, limited, box, mirrors, tmp_path)
    outside = "outside the paths this grant allows"
    assert lftp_errors(res) == [("mirror", outside)] * 2, res.stderr.decode()
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "in" / "f.txt").read_bytes() == b"up\n"
    untouched(box, www)


# --- PuTTY (pscp -sftp, psftp) -------------------------------------------------------------


def putty_args(gateway: Gateway, user: str, tmp: Path) -> list[str]:
    ppk = tmp / "key.ppk"
    res = run([need("puttygen"), str(gateway.keys[user]), "-O", "private", "-o", str(ppk)])
    assert res.returncode == 0, res.stderr.decode()
    scan = run(["ssh-keyscan", "-p", str(gateway.port), HOST], timeout=60)
    prints = run(["ssh-keygen", "-lf", "-"], input=scan.stdout)
    args = ["-batch", "-P", str(gateway.port), "-i", str(ppk)]
    for line in prints.stdout.decode().splitlines():
        args += ["-hostkey", line.split()[1]]
    return args


def test_putty_pscp_psftp(gateway: Gateway, box: str, tmp_path: Path) -> None:
    pscp, psftp = need("pscp"), need("psftp")
    user = make_user(gateway, box)
    dest = fresh_dir(box)
    args = putty_args(gateway, user, tmp_path)
    data = random_file(tmp_path / "p.bin", 100_000).read_bytes()
    where = f"{user}+{box}@{HOST}"
    res = run([pscp, "-sftp", *args, str(tmp_path / "p.bin"), f"{where}:{dest}/p.bin"])
    assert res.returncode == 0, res.stderr.decode()
    res = run([pscp, "-sftp", *args, f"{where}:{dest}/p.bin", str(tmp_path / "p2.bin")])
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "p2.bin").read_bytes() == data
    batch = tmp_path / "batch"
    batch.write_text(
        f"cd {dest}\nput p.bin q.bin\nmkdir sub\nmv q.bin sub/q.bin\nls sub\n"
        "get sub/q.bin q2.bin\nchmod 600 sub/q.bin\nrm p.bin\n"
    )
    res = run([psftp, *args, "-b", str(batch), where], cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "q2.bin").read_bytes() == data
    assert in_container(box, f"stat -c '%a %s' {dest}/sub/q.bin").strip() == "600 100000"
    assert in_container(box, f"ls -A {dest}").split() == ["sub"]


def test_putty_refusals(gateway: Gateway, refusal: Refusal, tmp_path: Path) -> None:
    """pscp fails at once; psftp (-be: the batch goes on) says so for each change, then gets."""
    box, read_only, limited, www, ok = refusal
    pscp, psftp = need("pscp"), need("psftp")
    (tmp_path / "f.txt").write_bytes(b"up\n")
    args = putty_args(gateway, read_only, tmp_path)
    where = f"{read_only}+{box}@{HOST}"
    denied(run([pscp, "-sftp", *args, "f.txt", f"{where}:{www}/new"], cwd=tmp_path))
    batch = tmp_path / "batch"
    changes = ["mkdir d", "rm existing", "mv existing moved", "chmod 600 existing", "put f.txt"]
    batch.write_text(f"cd {www}\n" + "".join(f"{c}\n" for c in changes) + "get existing got\n")
    res = run([psftp, *args, "-be", "-b", str(batch), where], cwd=tmp_path)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    refused = [ln for ln in res.stdout.decode().splitlines() if ln.endswith(": permission denied")]
    assert len(refused) == len(changes), res.stdout.decode()
    assert (tmp_path / "got").read_bytes() == b"old\n"
    args = putty_args(gateway, limited, tmp_path)
    where = f"{limited}+{box}@{HOST}"
    denied(run([pscp, "-sftp", *args, "f.txt", f"{where}:{www}/new"], cwd=tmp_path))
    denied(run([pscp, "-sftp", *args, f"{where}:{www}/existing", "out"], cwd=tmp_path))
    assert not (tmp_path / "out").exists()
    res = run([pscp, "-sftp", *args, "f.txt", f"{where}:{ok}/new"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert in_container(box, f"cat {ok}/new") == "up\n"
    untouched(box, www)


# --- curl (libssh2) ------------------------------------------------------------------------


def curl_args(gateway: Gateway, user: str, container: str) -> list[str]:
    key = gateway.keys[user]
    args = [need("curl"), "-sS", "--insecure", "-u", f"{user}+{container}:", "--key", str(key)]
    return [*args, "--pubkey", f"{key}.pub", "--connect-timeout", "30"]


def test_curl_sftp(gateway: Gateway, box: str, tmp_path: Path) -> None:
    user = make_user(gateway, box)
    dest = fresh_dir(box)
    data = random_file(tmp_path / "c.bin", 100_000).read_bytes()
    base = curl_args(gateway, user, box)
    url = f"sftp://{HOST}:{gateway.port}{dest}"
    res = run([*base, "-T", str(tmp_path / "c.bin"), f"{url}/c.bin"])
    assert res.returncode == 0, res.stderr.decode()
    res = run([*base, "-o", str(tmp_path / "back.bin"), f"{url}/c.bin"])
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "back.bin").read_bytes() == data
    res = run([*base, f"{url}/"])  # a directory listing
    assert res.returncode == 0 and b"c.bin" in res.stdout, res.stderr.decode()
    res = run([*base, "-o", str(tmp_path / "x"), f"{url}/missing"])
    assert res.returncode != 0
    assert not (tmp_path / "x").exists() or (tmp_path / "x").stat().st_size == 0


def test_curl_refusals(gateway: Gateway, refusal: Refusal, tmp_path: Path) -> None:
    """Uploads, and the changes curl -Q makes before a transfer, each refused alone."""
    box, read_only, limited, www, ok = refusal
    (tmp_path / "f.txt").write_bytes(b"up\n")
    url = f"sftp://{HOST}:{gateway.port}"
    curl = curl_args(gateway, read_only, box)
    denied(run([*curl, "-T", "f.txt", f"{url}{www}/new"], cwd=tmp_path))
    for quote in (
        f"mkdir {www}/d",
        f"rm {www}/existing",
        f"rename {www}/existing {www}/moved",
        f"chmod 600 {www}/existing",
        f"ln {www}/existing {www}/link",  # (libssh2 makes it a symlink)
    ):
        denied(run([*curl, "-Q", quote, f"{url}{www}/"], cwd=tmp_path))
    res = run([*curl, "-o", "got", f"{url}{www}/existing"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "got").read_bytes() == b"old\n"
    curl = curl_args(gateway, limited, box)
    denied(run([*curl, "-T", "f.txt", f"{url}{www}/new"], cwd=tmp_path))
    denied(run([*curl, "-o", "out", f"{url}{www}/existing"], cwd=tmp_path))
    assert not (tmp_path / "out").exists()
    res = run([*curl, "-T", "f.txt", f"{url}{ok}/new"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert in_container(box, f"cat {ok}/new") == "up\n"
    untouched(box, www)


# --- OpenSSH sftp and scp, paramiko, asyncssh: the same refusals on both images -------------


def test_openssh_sftp_refusals(gateway: Gateway, refusal: Refusal, tmp_path: Path) -> None:
    """One batch session per user: each refused command ('-': the batch goes on) says so, the
    commands after them work."""
    box, read_only, limited, www, ok = refusal
    (tmp_path / "f.txt").write_bytes(b"up\n")
    changes = ["put f.txt", "mkdir d", "rm existing", "rename existing moved"]
    changes += ["chmod 600 existing", "ln -s existing link"]
    batch = f"cd {www}\n" + "".join(f"-{c}\n" for c in changes) + "get existing got\n"
    res = sftp(gateway, read_only, box, batch, tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr.count(b"Permission denied") == len(changes), res.stderr.decode()
    assert (tmp_path / "got").read_bytes() == b"old\n"
    batch = f"-put f.txt {www}/new\n-get {www}/existing out\nput f.txt {ok}/new\nget {ok}/new in\n"
    res = sftp(gateway, limited, box, batch, tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    # (sftp globs before a get: a refused path is "not found" to it, as with sshd)
    assert b"Permission denied" in res.stderr and b"not found" in res.stderr, res.stderr.decode()
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "in").read_bytes() == b"up\n"
    untouched(box, www)


def test_scp_refusals(gateway: Gateway, refusal: Refusal, tmp_path: Path) -> None:
    """Both modes: OpenSSH 9's default (SFTP underneath) and legacy ``scp -O``."""
    box, read_only, limited, www, ok = refusal
    (tmp_path / "f.txt").write_bytes(b"up\n")
    # legacy: the gateway's own messages; a refused download is "missing" in both modes
    for legacy, outside, hidden in (
        (False, "Permission denied", "No such file or directory"),
        (True, "outside the paths this grant allows", "No matches found"),
    ):
        copy = partial(scp, gateway, legacy=legacy, cwd=tmp_path, timeout=120)
        name = "legacy" if legacy else "sftp"
        denied(copy(read_only, box, "f.txt", f":{www}/new"))
        res = copy(read_only, box, f":{www}/existing", f"got-{name}")
        assert res.returncode == 0, res.stderr.decode()
        assert (tmp_path / f"got-{name}").read_bytes() == b"old\n"
        denied(copy(limited, box, "f.txt", f":{www}/new"), outside)
        denied(copy(limited, box, f":{www}/existing", f"out-{name}"), hidden)
        assert not (tmp_path / f"out-{name}").exists()
        res = copy(limited, box, "f.txt", f":{ok}/new-{name}")
        assert res.returncode == 0, res.stderr.decode()
    assert in_container(box, f"cd {ok} && cat new-sftp new-legacy") == "up\nup\n"
    untouched(box, www)


def test_paramiko_refusals(refusal: Refusal, gateway: Gateway) -> None:
    box, read_only, limited, www, ok = refusal
    with paramiko_sftp(gateway, read_only, box) as s:
        for name, args in api_changes(www):
            with pytest.raises(PermissionError):
                getattr(s, name)(*args)
                pytest.fail(f"{name}{args} was not refused")
        assert s.open(f"{www}/existing").read() == b"old\n"
    with paramiko_sftp(gateway, limited, box) as s:
        with pytest.raises(PermissionError):
            s.open(f"{www}/new", "w")
        with pytest.raises(PermissionError):
            s.stat(f"{www}/existing")
        with s.open(f"{ok}/new", "w") as f:
            f.write(b"new\n")
        assert s.open(f"{ok}/new").read() == b"new\n"
    untouched(box, www)


async def test_asyncssh_refusals(refusal: Refusal, gateway: Gateway) -> None:
    box, read_only, limited, www, ok = refusal
    async with sftp_client(gateway, read_only, box) as s:
        for name, args in api_changes(www):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await getattr(s, name)(*args)
                pytest.fail(f"{name}{args} was not refused")
        async with s.open(f"{www}/existing", "rb") as f:
            assert await f.read() == b"old\n"
    async with sftp_client(gateway, limited, box) as s:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await s.open(f"{www}/new", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await s.stat(f"{www}/existing")
        async with s.open(f"{ok}/new", "wb") as f:
            await f.write(b"new\n")
        async with s.open(f"{ok}/new", "rb") as f:
            assert await f.read() == b"new\n"
    untouched(box, www)


def api_changes(www: str) -> list[tuple[str, tuple[object, ...]]]:
    """Changes in ``www`` as (method, arguments): the same for paramiko's and asyncssh's
    SFTP clients."""
    return [
        ("open", (f"{www}/new", "w")),
        ("open", (f"{www}/existing", "r+")),
        ("mkdir", (f"{www}/d",)),
        ("remove", (f"{www}/existing",)),
        ("rename", (f"{www}/existing", f"{www}/moved")),
        ("chmod", (f"{www}/existing", 0o600)),
        ("utime", (f"{www}/existing", (1, 1))),
        ("symlink", ("existing", f"{www}/link")),
    ]


# --- the protocol edges those clients hit, byte by byte ------------------------------------

FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_WRITE, FXP_LSTAT = 1, 2, 3, 4, 6, 7
FXP_STATUS, FXP_HANDLE, FXP_ATTRS = 101, 102, 105
FX_OK, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_BAD_MESSAGE = 0, 2, 3, 5
WRITE_CREAT_TRUNC = 0x02 | 0x08 | 0x10


def s(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


class RawSFTP:
    """The sftp subsystem spoken by hand: requests as bytes, answers as (type, body)."""

    def __init__(self, stdin: asyncssh.SSHWriter[bytes], stdout: asyncssh.SSHReader[bytes]):
        self.stdin, self.stdout, self.next_id = stdin, stdout, 1

    async def packet(self, ptype: int, body: bytes) -> tuple[int, bytes]:
        payload = bytes([ptype]) + body
        self.stdin.write(u32(len(payload)) + payload)
        size = int.from_bytes(await self.stdout.readexactly(4), "big")
        reply = await self.stdout.readexactly(size)
        return reply[0], reply[1:]

    def send(self, ptype: int, body: bytes) -> int:
        """Send a request without waiting for its answer; its request id."""
        rid, self.next_id = self.next_id, self.next_id + 1
        payload = bytes([ptype]) + u32(rid) + body
        self.stdin.write(u32(len(payload)) + payload)
        return rid

    async def answers(self, count: int) -> list[tuple[int, int, bytes]]:
        """The next ``count`` answers as they come: (request id, type, body)."""
        got = []
        for _ in range(count):
            size = int.from_bytes(await self.stdout.readexactly(4), "big")
            reply = await self.stdout.readexactly(size)
            got.append((int.from_bytes(reply[1:5], "big"), reply[0], reply[5:]))
        return got

    async def request(self, ptype: int, body: bytes) -> tuple[int, bytes]:
        rid, self.next_id = self.next_id, self.next_id + 1
        rtype, rest = await self.packet(ptype, u32(rid) + body)
        assert rest[:4] == u32(rid)
        return rtype, rest[4:]

    @staticmethod
    def status(rtype: int, body: bytes) -> int:
        assert rtype == FXP_STATUS, (rtype, body)
        return int.from_bytes(body[:4], "big")


@asynccontextmanager
async def raw_sftp(gateway: Gateway, user: str, container: str) -> AsyncIterator[RawSFTP]:
    async with asyncssh.connect(
        HOST,
        gateway.port,
        username=f"{user}+{container}",
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    ) as conn:
        stdin, stdout, _ = await conn.open_session(subsystem="sftp", encoding=None)
        raw = RawSFTP(stdin, stdout)
        rtype, _ = await raw.packet(FXP_INIT, u32(3))
        assert rtype == FXP_VERSION
        yield raw


async def test_lenient_where_sftp_server_is(gateway: Gateway, box: str) -> None:
    """Trailing bytes, undefined v3 attribute flags and a stat between OPEN and CLOSE are
    accepted like OpenSSH's sftp-server does; a request too short still gets a clean
    BAD_MESSAGE and the session goes on; rights and --path rules refuse as before."""
    user = make_user(gateway, box)
    dest = fresh_dir(box)
    path = f"{dest}/raw.txt".encode()
    junk = b"\xff" * 100
    async with raw_sftp(gateway, user, box) as c:
        # permissions + an undefined flag (0x40) with no field of its own
        rtype, body = await c.request(
            FXP_OPEN, s(path) + u32(WRITE_CREAT_TRUNC) + u32(0x44) + u32(0o640)
        )
        assert rtype == FXP_HANDLE, body
        handle = body[4:]
        rtype, body = await c.request(FXP_LSTAT, s(path) + junk)
        assert rtype == FXP_ATTRS, body  # the new file is there, as with sftp-server
        rtype, body = await c.request(
            FXP_WRITE, s(handle) + (0).to_bytes(8, "big") + s(b"hello\n") + junk
        )
        assert c.status(rtype, body) == FX_OK
        short = s(handle) + (6).to_bytes(8, "big") + u32(1000) + b"only this"
        rtype, body = await c.request(FXP_WRITE, short)
        assert c.status(rtype, body) == FX_BAD_MESSAGE
        rtype, body = await c.request(FXP_CLOSE, s(handle) + junk)
        assert c.status(rtype, body) == FX_OK
        rtype, body = await c.request(FXP_LSTAT, s(f"{dest}/missing".encode()) + junk)
        assert c.status(rtype, body) == FX_NO_SUCH_FILE
    assert in_container(box, f"cat {dest}/raw.txt; stat -c %a {dest}/raw.txt") == "hello\n640\n"

    read_only = make_user(gateway, box, rights="sftp-read")
    limited = make_user(gateway, box, paths=("/srv/ok",))
    for who, target in ((read_only, path + b"2"), (limited, path + b"3")):
        async with raw_sftp(gateway, who, box) as c:
            rtype, body = await c.request(
                FXP_OPEN, s(target) + u32(WRITE_CREAT_TRUNC) + u32(0x40) + junk
            )
            assert c.status(rtype, body) == FX_PERMISSION_DENIED, who
            rtype, body = await c.request(FXP_LSTAT, s(target) + junk)
            assert c.status(rtype, body) in (FX_NO_SUCH_FILE, FX_PERMISSION_DENIED)
    assert in_container(box, f"ls -A {dest}") == "raw.txt\n"
