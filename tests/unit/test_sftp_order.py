"""gateway.sftp.order: which requests of one SFTP session may run at the same time."""

from __future__ import annotations

import struct

import pytest
from asyncssh.constants import (
    FXF_CREAT,
    FXF_READ,
    FXF_WRITE,
    FXP_CLOSE,
    FXP_EXTENDED,
    FXP_FSTAT,
    FXP_MKDIR,
    FXP_OPEN,
    FXP_READ,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_SETSTAT,
    FXP_STAT,
    FXP_WRITE,
)

from gateway.sftp.order import BARRIER, Claim, Order, claim_of, conflicts, normalizer


def s(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


HANDLES = {b"h1": b"/tmp/a", b"h2": b"/tmp/b"}
norm = normalizer(lambda: b"/home/app")


def claim(pkttype: int, body: bytes) -> Claim:
    return claim_of(pkttype, body, HANDLES.get, norm)


def test_paths_are_made_absolute_and_normal() -> None:
    assert norm(b"x") == b"/home/app/x"
    assert norm(b"") == b"/home/app"
    assert norm(b"/tmp/../etc//passwd") == b"/etc/passwd"
    assert norm(b"//tmp/x/") == b"/tmp/x"
    assert norm(b"a\0b") is None
    assert normalizer(lambda: None)(b"relative") is None
    assert normalizer(lambda: None)(b"/abs") == b"/abs"


def test_claims_name_paths_and_handles() -> None:
    assert claim(FXP_STAT, s(b"x")).reads == {b"/home/app/x"}
    assert claim(FXP_SETSTAT, s(b"/tmp/x") + u32(0)).writes == {b"/tmp/x"}
    rename = claim(FXP_RENAME, s(b"/a") + s(b"/b"))
    assert rename.writes == {b"/a", b"/b"}
    opened_r = claim(FXP_OPEN, s(b"/f") + u32(FXF_READ) + u32(0))
    opened_w = claim(FXP_OPEN, s(b"/f") + u32(FXF_WRITE | FXF_CREAT) + u32(0))
    assert opened_r.reads == {b"/f"} and not opened_r.writes
    assert opened_w.writes == {b"/f"}
    write = claim(FXP_WRITE, s(b"h1") + u64(0) + s(b"data"))
    assert write.handles == {b"h1"} and write.writes == {b"/tmp/a"}
    fstat = claim(FXP_FSTAT, s(b"h2"))
    assert fstat.handles == {b"h2"} and fstat.reads == {b"/tmp/b"}
    unknown_handle = claim(FXP_CLOSE, s(b"nope"))
    assert unknown_handle.handles == {b"nope"} and not unknown_handle.writes


def test_a_read_costs_what_it_asks_for_up_to_a_cap() -> None:
    body = s(b"h1") + u64(0) + u32(65536)
    assert claim(FXP_READ, body).cost == len(body) + 65536
    huge = s(b"h1") + u64(0) + u32(0xFFFFFFFF)
    assert claim(FXP_READ, huge).cost == len(huge) + (4 << 20)


@pytest.mark.parametrize(
    ("pkttype", "body"),
    [
        (FXP_EXTENDED, s(b"limits@openssh.com")),  # not named: a barrier
        (FXP_EXTENDED, s(b"something-new@example.com") + s(b"/x")),
        (FXP_STAT, b"\x00\x00"),  # malformed
        (FXP_STAT, u32(100) + b"short"),  # a string longer than the packet
        (FXP_STAT, s(b"a\0b")),
        (99, b""),  # unknown request type
    ],
)
def test_what_cannot_be_named_is_a_barrier(pkttype: int, body: bytes) -> None:
    assert claim(pkttype, body).barrier


def test_relative_paths_before_the_start_directory_is_known_are_barriers() -> None:
    early = claim_of(FXP_STAT, s(b"x"), HANDLES.get, normalizer(lambda: None))
    assert early.barrier


def test_extensions_named() -> None:
    rename = claim(FXP_EXTENDED, s(b"posix-rename@openssh.com") + s(b"/a") + s(b"/b"))
    assert rename.writes == {b"/a", b"/b"} and not rename.barrier
    statvfs = claim(FXP_EXTENDED, s(b"statvfs@openssh.com") + s(b"/"))
    assert statvfs.reads == {b"/"} and not statvfs.writes
    fsync = claim(FXP_EXTENDED, s(b"fsync@openssh.com") + s(b"h1"))
    assert fsync.handles == {b"h1"} and fsync.writes == {b"/tmp/a"}


def test_conflicts() -> None:
    stat_a = claim(FXP_STAT, s(b"/d/a"))
    stat_b = claim(FXP_STAT, s(b"/d/b"))
    set_a = claim(FXP_SETSTAT, s(b"/d/a") + u32(0))
    rm_d = claim(FXP_REMOVE, s(b"/d"))
    mk_db = claim(FXP_MKDIR, s(b"/d/b") + u32(0))
    mk_dbb = claim(FXP_MKDIR, s(b"/d/bb") + u32(0))
    write_h1 = claim(FXP_WRITE, s(b"h1") + u64(0) + s(b"x"))
    close_h1 = claim(FXP_CLOSE, s(b"h1"))
    stat_tmp_a = claim(FXP_STAT, s(b"/tmp/a"))
    assert not conflicts(stat_a, stat_b)  # two reads
    assert not conflicts(stat_a, stat_a)  # reads of one path
    assert conflicts(set_a, stat_a) and conflicts(stat_a, set_a)
    assert not conflicts(set_a, stat_b)
    assert conflicts(rm_d, stat_a)  # a path and what lies under it
    assert conflicts(mk_db, stat_b)
    assert not conflicts(mk_db, mk_dbb)  # /d/b is not above /d/bb
    assert conflicts(write_h1, close_h1)  # one handle: in order
    assert conflicts(stat_tmp_a, close_h1)  # the handle's own path
    assert not conflicts(stat_b, close_h1)
    assert conflicts(BARRIER, stat_b) and conflicts(stat_b, BARRIER)
    root = claim(FXP_SETSTAT, s(b"/") + u32(0))
    assert conflicts(root, stat_b)


def test_order_waits_for_every_earlier_conflict_and_bounds_what_is_in_flight() -> None:
    order = Order(max_requests=3, max_cost=100)
    a = order.admit(Claim(writes=frozenset({b"/x"}), cost=10))
    b = order.admit(Claim(reads=frozenset({b"/y"}), cost=10))
    c = order.admit(Claim(reads=frozenset({b"/x", b"/y"}), cost=10))
    assert a.after == [] and b.after == [] and c.after == [a]
    assert not order.has_room(1)  # three in flight
    order.finish(a)
    assert order.has_room(70) and not order.has_room(81)
    d = order.admit(Claim(barrier=True, cost=5))
    assert d.after == [b, c]
    order.finish(b)
    order.finish(c)
    order.finish(d)
    assert len(order) == 0
    assert order.has_room(10**9)  # alone, a request always fits
