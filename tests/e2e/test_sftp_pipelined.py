"""A client that keeps several SFTP requests in flight (rclone, lftp, sshfs do).

Requests that cannot see each other's effects run at the same time, each on one of the session's
helper shells (gateway.sftp.order, containerfs.helper.HelperPool); requests on one path, one
handle, or a path and what lies under it keep the order they came in.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.helpers import Gateway
from tests.e2e.test_sftp import files_user, in_container
from tests.e2e.test_sftp_clients import RawSFTP, raw_sftp, s, u32

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

FXP_OPENDIR, FXP_READDIR, FXP_REMOVE, FXP_MKDIR, FXP_RMDIR = 11, 12, 13, 14, 15
FXP_REALPATH, FXP_STAT, FXP_RENAME, FXP_SETSTAT = 16, 17, 18, 9
FXP_STATUS, FXP_HANDLE, FXP_NAME, FXP_ATTRS = 101, 102, 104, 105
FX_OK, FX_NO_SUCH_FILE = 0, 2
ATTR_PERMISSIONS = 0x04
NO_ATTRS = u32(0)


def mode_of(attrs_body: bytes) -> int:
    """The permissions of an ATTRS answer that carries size, ids and permissions."""
    flags = int.from_bytes(attrs_body[:4], "big")
    at = 4
    if flags & 0x01:
        at += 8
    if flags & 0x02:
        at += 8
    assert flags & ATTR_PERMISSIONS, flags
    return int.from_bytes(attrs_body[at : at + 4], "big")


def status(answer: tuple[int, bytes]) -> int:
    rtype, body = answer
    assert rtype == FXP_STATUS, answer
    return int.from_bytes(body[:4], "big")


async def realpath(c: RawSFTP, path: bytes) -> bytes:
    rtype, body = await c.request(FXP_REALPATH, s(path))
    assert rtype == FXP_NAME, (rtype, body)
    return body[8 : 8 + int.from_bytes(body[4:8], "big")]


async def test_pipelined_requests_on_one_path_keep_their_order(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """Sent at once without waiting: each request sees what the ones before it did."""
    box = make_container(busybox_image)
    in_container(box, "mkdir -p /tmp/p && echo hello > /tmp/p/a && chown -R app /tmp/p")
    user = files_user(gateway, box)
    async with raw_sftp(gateway, user, box) as c:
        home = await realpath(c, b".")
        steps = [
            (FXP_MKDIR, s(b"/tmp/p/d") + NO_ATTRS),
            (FXP_STAT, s(b"/tmp/p/d/")),
            (FXP_RENAME, s(b"/tmp/p/a") + s(b"/tmp/p/b")),
            (FXP_STAT, s(b"/tmp/p/b")),
            (FXP_STAT, s(b"/tmp/p/a")),
            (FXP_SETSTAT, s(b"/tmp/p/b") + u32(ATTR_PERMISSIONS) + u32(0o600)),
            (FXP_STAT, s(b"/tmp/p/../p/b")),
            (FXP_REMOVE, s(b"/tmp/p/b")),
            (FXP_STAT, s(b"/tmp/p/b")),
            (FXP_RMDIR, s(b"/tmp/p/d")),
            (FXP_STAT, s(b"/tmp/p/d")),
            (FXP_MKDIR, s(b"rel") + NO_ATTRS),  # relative to the start directory ...
            (FXP_STAT, s(home + b"/rel")),  # ... seen by its absolute name
            (FXP_RMDIR, s(home + b"/rel")),
            (FXP_STAT, s(b"rel")),
        ]
        ids = [c.send(kind, body) for kind, body in steps]
        got = {rid: (rtype, body) for rid, rtype, body in await c.answers(len(ids))}
    a = [got[rid] for rid in ids]
    assert status(a[0]) == FX_OK
    assert a[1][0] == FXP_ATTRS
    assert status(a[2]) == FX_OK
    assert a[3][0] == FXP_ATTRS
    assert status(a[4]) == FX_NO_SUCH_FILE
    assert status(a[5]) == FX_OK
    assert a[6][0] == FXP_ATTRS and mode_of(a[6][1]) & 0o777 == 0o600
    assert status(a[7]) == FX_OK
    assert status(a[8]) == FX_NO_SUCH_FILE
    assert status(a[9]) == FX_OK
    assert status(a[10]) == FX_NO_SUCH_FILE
    assert status(a[11]) == FX_OK
    assert a[12][0] == FXP_ATTRS
    assert status(a[13]) == FX_OK
    assert status(a[14]) == FX_NO_SUCH_FILE


async def test_a_quick_request_is_not_held_behind_a_slow_one(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """A stat sent after the first READDIR of a directory of 20 000 entries (one long listing
    in the container) is answered first: the two touch different paths. Requests were
    answered strictly one after the other before."""
    box = make_container(busybox_image)
    in_container(box, "mkdir /tmp/many && cd /tmp/many && seq 20000 | xargs touch")
    user = files_user(gateway, box)
    async with raw_sftp(gateway, user, box) as c:
        # Two stats at once first: the session's second helper shell is then running.
        warm = [c.send(FXP_STAT, s(b"/etc/passwd")) for _ in range(2)]
        assert {rid for rid, rtype, _ in await c.answers(2) if rtype == FXP_ATTRS} == set(warm)
        rtype, body = await c.request(FXP_OPENDIR, s(b"/tmp/many"))
        assert rtype == FXP_HANDLE, (rtype, body)
        handle = body[4 : 4 + int.from_bytes(body[:4], "big")]
        listing = c.send(FXP_READDIR, s(handle))
        quick = c.send(FXP_STAT, s(b"/etc/passwd"))
        order = [(rid, rtype) for rid, rtype, _ in await c.answers(2)]
    assert order == [(quick, FXP_ATTRS), (listing, FXP_NAME)], order
