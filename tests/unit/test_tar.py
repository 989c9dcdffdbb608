"""The tar codec: real archives from Python's tarfile in every format, hostile input, fuzzing."""

from __future__ import annotations

import contextlib
import io
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.containerfs.tar import (
    BLOCK,
    END,
    END_OF_ARCHIVE,
    SYMLINK,
    TarError,
    TarMember,
    TarReader,
    member_path,
    padding,
    tar_header,
)


def parse(data: bytes, chunk: int = 7919) -> list[TarMember | bytes | object]:
    """All events, feeding ``data`` in chunks; data pieces of one member are joined."""
    r = TarReader()
    events: list[TarMember | bytes | object] = []
    for i in range(0, len(data), chunk):
        r.feed(data[i : i + chunk])
        while (ev := r.next_event()) is not None:
            if isinstance(ev, bytes) and events and isinstance(events[-1], bytes):
                events[-1] = events[-1] + ev
            else:
                events.append(ev)
    r.feed_eof()
    while (ev := r.next_event()) is not None:
        if isinstance(ev, bytes) and events and isinstance(events[-1], bytes):
            events[-1] = events[-1] + ev
        else:
            events.append(ev)
    return events


def make_tar(fmt: int, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def info(name: str, size: int = 0, type: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = type
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


FORMATS = [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_files_dirs_links(fmt: int) -> None:
    data = bytes(range(256)) * 40 + b"tail"
    archive = make_tar(
        fmt,
        [
            (info("dir", type=tarfile.DIRTYPE, mode=0o755), None),
            (
                info("dir/file.bin", len(data), mode=0o640, uid=1000, gid=1001, mtime=1700000000),
                data,
            ),
            (info("dir/link", type=tarfile.SYMTYPE, linkname="file.bin"), None),
            (info("empty"), b""),
        ],
    )
    events = parse(archive)
    assert (
        isinstance(events[0], TarMember)
        and events[0].is_dir
        and member_path(events[0].name) == b"dir"
    )
    m = events[1]
    assert isinstance(m, TarMember)
    assert (m.name, m.size, m.mode, m.uid, m.gid, m.mtime) == (
        b"dir/file.bin",
        len(data),
        0o640,
        1000,
        1001,
        1700000000,
    )
    assert m.is_file
    assert events[2] == data
    link = events[3]
    assert isinstance(link, TarMember) and link.is_symlink and link.linkname == b"file.bin"
    assert isinstance(events[4], TarMember) and events[4].size == 0
    assert events[5] is END
    assert len(events) == 6


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_link_targets(fmt: int) -> None:
    name = "d/" + "n" * 300 + "/ä\nx"
    target = "/" + "t" * 250
    archive = make_tar(
        fmt,
        [
            (info(name, 3), b"abc"),
            (info("l", type=tarfile.SYMTYPE, linkname=target), None),
        ],
    )
    events = parse(archive)
    assert isinstance(events[0], TarMember) and events[0].name == name.encode()
    assert events[1] == b"abc"
    assert isinstance(events[2], TarMember) and events[2].linkname == target.encode()
    assert events[3] is END


def test_ustar_prefix_field() -> None:
    name = "p" * 120 + "/" + "n" * 90
    archive = make_tar(tarfile.USTAR_FORMAT, [(info(name, 1), b"x")])
    events = parse(archive)
    assert isinstance(events[0], TarMember) and events[0].name == name.encode()


def test_gnu_base256_numbers() -> None:
    archive = make_tar(tarfile.GNU_FORMAT, [(info("big-uid", 0, uid=2**40, gid=3), b"")])
    events = parse(archive)
    assert isinstance(events[0], TarMember) and events[0].uid == 2**40


def test_non_utf8_names_round_trip() -> None:
    name = b"caf\xe9 \xff\n\x01"
    archive = tar_header(name, size=2) + b"hi" + padding(2) + END_OF_ARCHIVE
    events = parse(archive)
    assert isinstance(events[0], TarMember) and events[0].name == name
    assert events[1] == b"hi"


def test_single_zero_block_at_eof_is_accepted() -> None:
    archive = tar_header(b"f", size=1) + b"x" + padding(1) + b"\0" * BLOCK
    assert parse(archive)[-1] == b"x"


def test_record_padding_after_end_is_ignored() -> None:
    archive = tar_header(b"f") + END_OF_ARCHIVE + b"\0" * 9000 + b"garbage after the end"
    assert parse(archive)[-1] is END


# Our writer, read back by Python's tarfile ---------------------------------------------------


@pytest.mark.parametrize(
    "name,size",
    [
        (b"short", 5),
        (b"a/" * 70 + b"deep", 1),
        (b"x" * 300, 0),
        (b"\xff\xfe odd\nname", 3),
    ],
)
def test_writer_is_read_by_tarfile(name: bytes, size: int) -> None:
    data = b"z" * size
    archive = (
        tar_header(name, size=size, mode=0o751, uid=7, gid=8, mtime=123456789)
        + data
        + padding(size)
        + tar_header(b"ln", type=SYMLINK, linkname=b"/" + b"t" * 200)
        + END_OF_ARCHIVE
    )
    with tarfile.open(
        fileobj=io.BytesIO(archive), encoding="utf-8", errors="surrogateescape"
    ) as tf:
        members = tf.getmembers()
        assert members[0].name.encode("utf-8", "surrogateescape") == name
        assert (members[0].size, members[0].mode, members[0].uid, members[0].mtime) == (
            size,
            0o751,
            7,
            123456789,
        )
        f = tf.extractfile(members[0])
        assert f is not None and f.read() == data
        assert members[1].linkname == "/" + "t" * 200
    # and by ourselves
    events = parse(archive)
    assert isinstance(events[0], TarMember) and events[0].name == name


def test_writer_huge_size_uses_pax() -> None:
    header = tar_header(b"huge", size=10**12)
    r = TarReader()
    r.feed(header)
    ev = r.next_event()
    assert isinstance(ev, TarMember) and ev.size == 10**12


# Hostile input -------------------------------------------------------------------------------


def _corrupt(block: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(block)
    b[offset : offset + len(value)] = value
    # fix the checksum so that only the intended defect remains
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


@pytest.mark.parametrize(
    "archive,message",
    [
        (b"\x01" * BLOCK, "checksum"),
        (tar_header(b"f", size=10) + b"short", "truncated"),
        (tar_header(b"f", size=3) + b"abc", "truncated"),
        (b"", "truncated"),
        (_corrupt(tar_header(b"f"), 124, b"9999999999\0"), "size"),
        (_corrupt(tar_header(b"f"), 124, b"\xff" * 12), "negative"),
        (_corrupt(tar_header(b"f"), 156, b"S"), "sparse"),
        (_corrupt(tar_header(b"f"), 156, b"V"), "unsupported"),
        (_corrupt(tar_header(b"d", type=b"5"), 124, b"00000000010\0"), "carries no data"),
        (_corrupt(tar_header(b"f"), 124 - 124, b"\0" * 100), "empty name"),
        (b"\0" * BLOCK + tar_header(b"f") + END_OF_ARCHIVE, "after an end-of-archive"),
    ],
)
def test_hostile_headers_are_errors(archive: bytes, message: str) -> None:
    with pytest.raises(TarError, match=message):
        parse(archive)


def test_oversized_long_name_is_refused() -> None:
    body = b"n" * (1 << 20)
    header = _corrupt(tar_header(b"././@LongLink", size=len(body)), 156, b"L")
    r = TarReader(max_meta=4096)
    r.feed(header)
    with pytest.raises(TarError, match="oversized"):
        r.next_event()


def test_pax_sparse_is_refused() -> None:
    rec = b"30 GNU.sparse.major=1\n"
    rec = b"%d GNU.sparse.major=1\n" % (len(rec))
    header = _corrupt(tar_header(b"PaxHeader", size=len(rec)), 156, b"x")
    archive = header + rec + padding(len(rec)) + tar_header(b"f") + END_OF_ARCHIVE
    with pytest.raises(TarError, match="sparse"):
        parse(archive)


def test_bad_pax_record_is_refused() -> None:
    rec = b"99 path=x\n"
    header = _corrupt(tar_header(b"PaxHeader", size=len(rec)), 156, b"x")
    with pytest.raises(TarError, match="pax"):
        parse(header + rec + padding(len(rec)) + tar_header(b"f") + END_OF_ARCHIVE)


@pytest.mark.parametrize(
    "name",
    [b"../etc/passwd", b"a/../../b", b"/etc/passwd", b"", b"a/\0b", b"..", b"./../x"],
)
def test_member_path_refuses_escapes(name: bytes) -> None:
    with pytest.raises(TarError):
        member_path(name)


@pytest.mark.parametrize(
    "name,clean",
    [(b"./a/b/", b"a/b"), (b"a//b", b"a/b"), (b".", b"."), (b"./", b"."), (b"a/./b", b"a/b")],
)
def test_member_path_normalizes(name: bytes, clean: bytes) -> None:
    assert member_path(name) == clean


def test_malicious_names_are_parsed_not_trusted() -> None:
    # The reader reports names as they are; member_path() is the gate.
    archive = make_tar(
        tarfile.GNU_FORMAT,
        [
            (info("../../escape", 1), b"x"),
            (info("evil", type=tarfile.SYMTYPE, linkname="/etc"), None),
            (info("hard", type=tarfile.LNKTYPE, linkname="/etc/shadow"), None),
        ],
    )
    events = parse(archive)
    names = [e.name for e in events if isinstance(e, TarMember)]
    assert names == [b"../../escape", b"evil", b"hard"]
    with pytest.raises(TarError):
        member_path(names[0])
    hard = events[3]
    assert isinstance(hard, TarMember) and hard.is_hardlink and hard.size == 0


# Properties ----------------------------------------------------------------------------------

names = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b)


@given(
    members=st.lists(st.tuples(names, st.binary(max_size=2000)), min_size=0, max_size=5),
    chunk=st.integers(min_value=1, max_value=1500),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip(members: list[tuple[bytes, bytes]], chunk: int) -> None:
    archive = b"".join(
        tar_header(name, size=len(data), mode=0o600, mtime=5) + data + padding(len(data))
        for name, data in members
    )
    archive += END_OF_ARCHIVE
    events = parse(archive, chunk)
    got: list[tuple[bytes, bytes]] = []
    for ev in events:
        if isinstance(ev, TarMember):
            got.append((ev.name, b""))
        elif isinstance(ev, bytes):
            got[-1] = (got[-1][0], got[-1][1] + ev)
    assert got == members
    assert events[-1] is END


def _sample_archive() -> bytes:
    return make_tar(
        tarfile.PAX_FORMAT,
        [
            (info("dir", type=tarfile.DIRTYPE), None),
            (info("dir/" + "long" * 40, 700, uid=5), b"q" * 700),
            (info("l", type=tarfile.SYMTYPE, linkname="x" * 150), None),
        ],
    )


SAMPLE = _sample_archive()


@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(SAMPLE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=20,
    ),
    cut=st.integers(min_value=0, max_value=len(SAMPLE)),
    chunk=st.integers(min_value=1, max_value=4096),
)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutations_never_crash(edits: list[tuple[int, int]], cut: int, chunk: int) -> None:
    data = bytearray(SAMPLE)
    for pos, value in edits:
        data[pos] = value
    data = data[:cut] if cut < len(data) else data
    try:
        events = parse(bytes(data), chunk)
    except TarError:
        return
    # Whatever was accepted is self-consistent: data pieces never exceed the member size.
    current: TarMember | None = None
    seen = 0
    for ev in events:
        if isinstance(ev, TarMember):
            if current is not None:
                assert seen == current.size
            current, seen = ev, 0
        elif isinstance(ev, bytes):
            assert current is not None
            seen += len(ev)
            assert seen <= current.size


@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=600))
@settings(max_examples=300)
def test_fuzz_random_bytes_never_crash(data: bytes, chunk: int) -> None:
    with contextlib.suppress(TarError):
        parse(data, chunk)
