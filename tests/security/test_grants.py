"""Attacks on how grants combine: a write grant's --path and --logins must hold.

Before the fix the write decision came from any grant with sftp-write, its paths from the read
decision, and with no login in the name it picked its own login: "read anywhere" + "write only
under /srv/up" wrote everywhere, and `sftp-write --logins root` made an `app` session writable.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, unique
from tests.e2e.test_sftp import in_container
from tests.security.test_file_channel import exists, sftp_client

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def grant(
    gateway: Gateway, user: str, container: str, rights: str, logins: str | None, *paths: str
) -> None:
    args = ["grant", "add", "--user", user, "--target", container, "--rights", rights]
    if logins is not None:  # none: the image's own user
        args += ["--logins", logins]
    for p in paths:
        args += ["--path", p]
    gateway.cli(*args)


@pytest.fixture
def box(make_container: MakeContainer, busybox_image: str) -> str:
    c = make_container(busybox_image)
    in_container(c, "mkdir -p /srv/up /srv/other && chown app /srv/up /srv/other")
    return c


async def test_read_anywhere_write_only_under_the_write_grants_path(
    gateway: Gateway, box: str
) -> None:
    user = unique("gw")
    gateway.add_user(user)
    grant(gateway, user, box, "sftp-read", "app")
    grant(gateway, user, box, "sftp-write", "app", "/srv/up")
    async with sftp_client(gateway, user, box) as sftp:
        async with sftp.open("/srv/up/ok", "w") as f:
            await f.write("in")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            async with sftp.open("/srv/other/escaped", "w") as f:
                await f.write("out")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.mkdir("/tmp/escaped-dir")
        assert (await sftp.stat("/etc/passwd")).size  # reading stays unrestricted
    assert exists(box, "/srv/up/ok")
    assert not exists(box, "/srv/other/escaped") and not exists(box, "/tmp/escaped-dir")


async def test_a_write_grant_for_root_does_not_make_an_app_session_writable(
    gateway: Gateway, box: str
) -> None:
    user = unique("gl")
    gateway.add_user(user)
    grant(gateway, user, box, "sftp-read", "app")
    grant(gateway, user, box, "sftp-write", "root")
    for login in (None, "app"):  # the grant's default login, and asked for by name
        async with sftp_client(gateway, user, box, login) as sftp:
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                async with sftp.open("/srv/up/by-app", "w") as f:
                    await f.write("x")
    assert not exists(box, "/srv/up/by-app")
    # Mirror image: with a read grant for root too, a root session may write.
    grant(gateway, user, box, "sftp-read", "root")
    async with (
        sftp_client(gateway, user, box, "root") as sftp,
        sftp.open("/srv/up/by-root", "w") as f,
    ):
        await f.write("x")
    assert exists(box, "/srv/up/by-root")


async def test_a_write_grant_for_app_does_not_make_an_image_user_session_writable(
    gateway: Gateway, box: str
) -> None:
    # Read as the image's user (root here), write only as app: the root session must stay
    # read-only (before, the write decision picked app's grant and wrote as root).
    user = unique("gi")
    gateway.add_user(user)
    grant(gateway, user, box, "sftp-read", None)
    grant(gateway, user, box, "sftp-write", "app")
    async with sftp_client(gateway, user, box) as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            async with sftp.open("/etc/by-image-user", "w") as f:
                await f.write("x")
    assert not exists(box, "/etc/by-image-user")
    # Mirror image: a write grant for the image's user does make it writable.
    grant(gateway, user, box, "sftp-write", None)
    async with (
        sftp_client(gateway, user, box) as sftp,
        sftp.open("/etc/by-image-user", "w") as f,
    ):
        await f.write("x")
    assert exists(box, "/etc/by-image-user")
