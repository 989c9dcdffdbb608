"""Attacks on the file channel (SFTP/SCP): data that becomes commands, and path rules escaped
through symlinks, swapped names and open handles.

Each test here succeeded as an attack against an earlier gateway (see docs/SECURITY.md, "File
channel"). The hostile side is a user with file rights only (no shell, no exec) who can also
change the container's files between requests (here: ``docker exec`` as the same login).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, no_traceback, unique
from tests.e2e.test_sftp import files_user, in_container, sftp

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


@pytest.fixture(params=["busybox", "debian"])
def image(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_image"))


@asynccontextmanager
async def sftp_client(
    gateway: Gateway, user: str, container: str, login: str | None = None
) -> AsyncIterator[asyncssh.SFTPClient]:
    target = f"{user}+{container}" + (f"+{login}" if login else "")
    async with (
        asyncssh.connect(
            "127.0.0.1",
            gateway.port,
            username=target,
            client_keys=[str(gateway.keys[user])],
            known_hosts=None,
            agent_path=None,
        ) as conn,
        conn.start_sftp_client() as client,
    ):
        yield client


def as_app(container: str, script: str) -> str:
    return in_container(container, script, user="app")


def exists(container: str, path: str) -> bool:
    res = subprocess.run(
        ["docker", "exec", container, "sh", "-c", f"[ -e '{path}' ] || [ -L '{path}' ]"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return res.returncode == 0


def confined(gateway: Gateway, container: str) -> str:
    """A user with file rights only, as login app, confined to /srv/up."""
    in_container(
        container,
        "mkdir -p /srv/up /srv/out && chown app /srv/up /srv/out "
        "&& printf 'outside\\n' > /srv/out/secret && chown app /srv/out/secret",
    )
    return files_user(gateway, container, logins="app", paths=("/srv/up",))


# 1. File content must never reach the helper's command reader -------------------------------


def test_upload_content_is_never_run(
    gateway: Gateway, make_container: MakeContainer, image: str, tmp_path: Path
) -> None:
    """The write stops early (the disk is full): the rest of the data is not a request."""
    c = make_container(image)
    in_container(c, "mkdir -p /srv/up/adir && chown -R app /srv/up")
    user = files_user(gateway, c, logins="app")  # no shell, no exec
    payload = tmp_path / "p"
    payload.write_bytes(b"\n" * 65536 + b"id > /tmp/pwned\necho pwned > /tmp/pwned2\n")
    res = sftp(gateway, user, c, "put p /dev/full\n", tmp_path)
    no_traceback(res.stdout, res.stderr)
    assert res.returncode != 0  # the write fails, and says so
    assert not exists(c, "/tmp/pwned")
    assert not exists(c, "/tmp/pwned2")
    # The session is still usable afterwards, and the next upload is intact.
    (tmp_path / "ok").write_bytes(b"fine\n")
    res = sftp(gateway, user, c, "put ok /srv/up/ok\nget /srv/up/ok back\n", tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "back").read_bytes() == b"fine\n"


async def test_upload_content_after_failed_write_in_one_session(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    in_container(c, "mkdir -p /srv/up && chown app /srv/up")
    user = files_user(gateway, c, logins="app")
    async with sftp_client(gateway, user, c) as client:
        f = await client.open("/srv/up/f", "wb")
        # The name turns into a directory while the file is open: the final write fails.
        as_app(c, "rm -f /srv/up/.sshgw-*.tmp; mkdir /srv/up/f")
        await f.write(b"\n" * 1000 + b"id > /tmp/pwned3\n")
        with pytest.raises(asyncssh.SFTPError):
            await f.close()
        # the same session goes on working
        assert await client.exists("/srv/up")
    assert not exists(c, "/tmp/pwned3")


# 2. Path rules hold at the moment of each action ------------------------------------------


async def test_symlink_and_link_into_a_linked_directory(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    c = make_container(image)
    user = confined(gateway, c)
    as_app(c, "ln -s /srv/out /srv/up/d && printf x > /srv/up/file")
    async with sftp_client(gateway, user, c) as client:
        with pytest.raises(asyncssh.SFTPError):
            await client.symlink("anything", "/srv/up/d")
        with pytest.raises(asyncssh.SFTPError):
            await client.link("/srv/up/file", "/srv/up/d")
    assert not exists(c, "/srv/out/anything")
    assert not exists(c, "/srv/out/file")
    assert as_app(c, "ls /srv/out") == "secret\n"


async def test_rename_onto_a_link_to_a_directory(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    c = make_container(image)
    user = confined(gateway, c)
    as_app(c, "ln -s /srv/out /srv/up/d && printf x > /srv/up/a && printf y > /srv/up/b")
    async with sftp_client(gateway, user, c) as client:
        for op in (client.rename, client.posix_rename):
            with suppress(asyncssh.SFTPError):
                await op("/srv/up/a" if op == client.rename else "/srv/up/b", "/srv/up/d")
    assert as_app(c, "ls /srv/out") == "secret\n"


async def test_setstat_through_a_symlink(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    c = make_container(image)
    user = confined(gateway, c)
    as_app(c, "ln -s /srv/out/secret /srv/up/l")
    async with sftp_client(gateway, user, c) as client:
        for follow in (True, False):
            for attrs in (
                asyncssh.SFTPAttrs(size=0),
                asyncssh.SFTPAttrs(permissions=0o777),
                asyncssh.SFTPAttrs(atime=1, mtime=1),
            ):
                with suppress(asyncssh.SFTPError):
                    await client.setstat("/srv/up/l", attrs, follow_symlinks=follow)
    st = as_app(c, "stat -c '%s %a %Y' /srv/out/secret").split()
    assert st[0] == "8"  # not truncated
    assert st[1] != "777"
    assert st[2] != "1"


async def test_open_handle_keeps_its_file(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    """A handle writes, reads and changes the file it opened, never what the name became."""
    c = make_container(image)
    user = confined(gateway, c)
    as_app(c, "printf 'inside\\n' > /srv/up/f && dd if=/dev/zero of=/srv/up/big bs=1M count=2")
    async with sftp_client(gateway, user, c) as client:
        f = await client.open("/srv/up/f", "r+b")
        big = await client.open("/srv/up/big", "rb")
        # Swap both names for symlinks to a file outside the prefix.
        as_app(
            c,
            "mv /srv/up/f /srv/up/f.old && ln -s /srv/out/secret /srv/up/f "
            "&& mv /srv/up/big /srv/up/big.old && ln -s /srv/out/secret /srv/up/big",
        )
        for attempt in (
            f.write(b"PWNED", 0),
            f.setstat(asyncssh.SFTPAttrs(size=1)),
        ):
            with suppress(asyncssh.SFTPError):
                await attempt
        try:
            data = await big.read(65536, 1024 * 1024)
            assert b"outside" not in data
        except asyncssh.SFTPError:
            pass
        for h in (f, big):
            with suppress(asyncssh.SFTPError):
                await h.close()
    assert as_app(c, "cat /srv/out/secret") == "outside\n"


async def test_new_file_temporary_name_swapped(
    gateway: Gateway, make_container: MakeContainer, image: str
) -> None:
    """The upload's temporary file is replaced by a symlink to a file outside: no write there."""
    c = make_container(image)
    user = confined(gateway, c)
    async with sftp_client(gateway, user, c) as client:
        f = await client.open("/srv/up/new", "wb")
        await f.write(b"A" * 1000, 0)
        as_app(
            c,
            'for t in /srv/up/.sshgw-*.tmp; do rm -f "$t"; ln -s /srv/out/secret "$t"; done',
        )
        try:
            await f.write(b"B" * 400_000, 1000)  # large: streams through a dedicated writer
            await f.close()
        except asyncssh.SFTPError:
            pass
    assert as_app(c, "cat /srv/out/secret") == "outside\n"
    # whatever landed at the final name is not a link out
    assert not as_app(c, "[ -L /srv/up/new ] && echo link || true").strip()


async def test_outside_paths_do_not_tell_whether_they_exist(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = confined(gateway, c)
    async with sftp_client(gateway, user, c) as client:
        answers = []
        for path in ("/etc/passwd", "/etc/nonexistent", "/nonexistent/x", "/srv/up/../out/secret"):
            for op in (client.realpath, client.stat, client.lstat, client.readlink):
                try:
                    await op(path)
                    answers.append((op.__name__, "ok"))
                except asyncssh.SFTPError as exc:
                    answers.append((op.__name__, f"{exc.code}"))
        by_op: dict[str, set[str]] = {}
        for name, ans in answers:
            by_op.setdefault(name, set()).add(ans)
        for name, seen in by_op.items():
            assert seen == {str(asyncssh.FX_PERMISSION_DENIED)}, (name, answers)


async def test_archive_backend_refuses_path_rules(
    gateway: Gateway, make_container: MakeContainer, noshell_image: str
) -> None:
    c = make_container(noshell_image)
    user = unique("f")
    gateway.add_user(user)
    gateway.cli(
        "grant", "add", "--user", user, "--target", c, "--rights", "sftp-read,sftp-write",
        "--logins", "root", "--path", "/tmp",
    )  # fmt: skip
    with pytest.raises((asyncssh.Error, OSError)):
        async with sftp_client(gateway, user, c) as client:
            await client.listdir("/tmp")


# 11. Helper tools never come from a directory the login can write ---------------------------


async def test_helper_ignores_planted_tools(
    gateway: Gateway, make_container: MakeContainer, debian_image: str
) -> None:
    c = make_container(debian_image)
    in_container(
        c,
        "mkdir -p /srv/up && chown app /srv/up && mkdir -p /usr/local/bin && chown app /usr/local/bin",
    )
    # A writable directory early in the image's PATH with a planted `stat`.
    as_app(
        c, "printf '#!/bin/sh\\nid > /tmp/planted\\nexec /bin/stat \"$@\"\\n' > /usr/local/bin/stat"
    )
    as_app(c, "chmod 755 /usr/local/bin/stat")
    user = files_user(gateway, c, logins="app")
    async with sftp_client(gateway, user, c) as client:
        try:
            await client.stat("/srv/up")
            await client.listdir("/srv/up")
        except asyncssh.SFTPError:
            pass
    assert not exists(c, "/tmp/planted")
