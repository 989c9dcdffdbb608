"""Properties of the tar codec (issue 8): round trips, chunking, hostile input, bounded state.

Tar from a container is hostile input. These properties say: what :func:`tar_header` writes,
:class:`TarReader` reads back field for field (and Python's tarfile agrees both ways); how the
stream is cut into chunks never changes what is read; anything at all fed in ends in events or
:class:`TarError`, nothing else; and what the reader holds between calls stays bounded.
The coverage-guided counterpart is ``fuzz/fuzz_tar.py`` (``scripts/fuzz.sh``).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.containerfs.tar import (
    BLOCK,
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    END,
    END_OF_ARCHIVE,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    TarError,
    TarMember,
    TarReader,
    member_path,
    padding,
    tar_header,
)

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Event = TarMember | bytes | object
Outcome = tuple[list[Event], str | None]

# Strategies ------------------------------------------------------------------------------------

segment = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b),
    st.sampled_from([b".", b"..", b"", b"a", b"\n", b"\xff\xfe"]),
)
# Path-like names (short and long, with empty, '.' and '..' components) and raw bytes.
names = st.one_of(
    st.lists(segment, min_size=1, max_size=25).map(b"/".join),
    st.binary(min_size=1, max_size=400),
).filter(lambda b: b != b"" and b"\0" not in b)
no_nul = st.binary(max_size=300).filter(lambda b: b"\0" not in b)
small_no_nul = st.binary(max_size=32).filter(lambda b: b"\0" not in b)
# Numbers both inside the octal fields and beyond them (those travel in a pax record).
ids = st.one_of(st.integers(0, 0o7777777), st.integers(0, (1 << 63) - 1))
times = st.one_of(st.integers(0, 0o77777777777), st.integers(-(1 << 63) + 1, (1 << 63) - 1))


@st.composite
def members(draw: st.DrawFn) -> tuple[TarMember, bytes]:
    kind = draw(st.sampled_from([REGULAR, DIRECTORY, SYMLINK, HARDLINK, FIFO, CHARDEV, BLOCKDEV]))
    data = draw(st.binary(max_size=1500)) if kind == REGULAR else b""
    member = TarMember(
        name=draw(names),
        type=kind,
        size=len(data),
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(ids),
        gid=draw(ids),
        mtime=draw(times),
        linkname=draw(no_nul) if kind in (SYMLINK, HARDLINK) else b"",
        uname=draw(small_no_nul),
        gname=draw(small_no_nul),
    )
    return member, data


def encode(items: Sequence[tuple[TarMember, bytes]]) -> bytes:
    out = []
    for m, data in items:
        out.append(
            tar_header(
                m.name,
                type=m.type,
                size=m.size,
                mode=m.mode,
                uid=m.uid,
                gid=m.gid,
                mtime=m.mtime,
                linkname=m.linkname,
                uname=m.uname,
                gname=m.gname,
            )
        )
        out.append(data + padding(len(data)))
    out.append(END_OF_ARCHIVE)
    return b"".join(out)


@st.composite
def cut_points(draw: st.DrawFn, length: int) -> list[int]:
    """Sorted offsets into a stream of ``length`` bytes: small, large and zero-length chunks."""
    if length == 0:
        return []
    cuts = draw(st.lists(st.integers(0, length), max_size=40))
    return sorted(cuts)


def drive(data: bytes, cuts: Sequence[int] = (), *, drain_each: bool = True) -> Outcome:
    """Feed ``data`` split at ``cuts``; the events (data pieces of a member joined), then the
    error, if any: 'TarError' (the only one allowed) or whatever else escaped."""
    r = TarReader()
    events: list[Event] = []

    def drain() -> None:
        while (ev := r.next_event()) is not None:
            if isinstance(ev, bytes) and events and isinstance(events[-1], bytes):
                events[-1] = events[-1] + ev
            else:
                events.append(ev)

    try:
        prev = 0
        for cut in [*cuts, len(data)]:
            r.feed(data[prev:cut])
            prev = cut
            if drain_each:
                drain()
        r.feed_eof()
        drain()
    except TarError:
        return events, "TarError"
    return events, None


def members_of(events: list[Event]) -> list[tuple[TarMember, bytes]]:
    out: list[tuple[TarMember, bytes]] = []
    for ev in events:
        if isinstance(ev, TarMember):
            out.append((ev, b""))
        elif isinstance(ev, bytes):
            out[-1] = (out[-1][0], out[-1][1] + ev)
    return out


# Round trips -----------------------------------------------------------------------------------


@given(st.lists(members(), max_size=5), st.data())
@FAST
def test_written_members_read_back_field_for_field(
    items: list[tuple[TarMember, bytes]], data: st.DataObject
) -> None:
    archive = encode(items)
    events, error = drive(archive, data.draw(cut_points(len(archive))))
    assert error is None
    assert events[-1] is END
    assert members_of(events) == items


@given(st.lists(members(), max_size=4))
@settings(max_examples=200, deadline=None)
def test_tarfile_reads_what_we_write(items: list[tuple[TarMember, bytes]]) -> None:
    with tarfile.open(
        fileobj=io.BytesIO(encode(items)), encoding="utf-8", errors="surrogateescape"
    ) as tf:
        got = tf.getmembers()
        assert len(got) == len(items)
        for ti, (m, data) in zip(got, items, strict=True):
            name = m.name.rstrip(b"/") if m.type == DIRECTORY else m.name
            assert ti.name.encode("utf-8", "surrogateescape") == name
            assert ti.type == m.type
            assert ti.linkname.encode("utf-8", "surrogateescape") == m.linkname
            assert (ti.size, ti.mode, ti.uid, ti.gid) == (m.size, m.mode, m.uid, m.gid)
            # tarfile turns a pax mtime into a float (it allows fractions): compare as floats.
            assert float(ti.mtime) == float(m.mtime)
            if m.type == REGULAR:
                f = tf.extractfile(ti)
                assert f is not None and f.read() == data


tarfile_members = st.lists(
    st.tuples(
        names.filter(lambda n: not n.endswith(b"/")),
        st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
        st.binary(max_size=700),
        no_nul,
        st.integers(0, (1 << 40) - 1),
    ),
    max_size=4,
)


@given(tarfile_members, st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]), st.data())
@settings(max_examples=200, deadline=None)
def test_we_read_what_tarfile_writes(
    specs: list[tuple[bytes, bytes, bytes, bytes, int]], fmt: int, data: st.DataObject
) -> None:
    buf = io.BytesIO()
    expect: list[tuple[bytes, bytes, bytes, bytes, int]] = []
    with tarfile.open(
        fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for name, kind, content, link, uid in specs:
            ti = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            ti.type = kind
            ti.uid = uid
            if kind == tarfile.REGTYPE:
                ti.size = len(content)
            else:
                content = b""
            if kind == tarfile.SYMTYPE:
                ti.linkname = link.decode("utf-8", "surrogateescape")
            else:
                link = b""
            tf.addfile(ti, io.BytesIO(content) if content else None)
            expect.append((name, kind, content, link, uid))
    archive = buf.getvalue()
    events, error = drive(archive, data.draw(cut_points(len(archive))))
    assert error is None
    got = [
        (m.name.rstrip(b"/") if m.is_dir else m.name, m.type, content, m.linkname, m.uid)
        for m, content in members_of(events)
    ]
    want = [(n.rstrip(b"/") if k == DIRECTORY else n, k, c, lk, u) for n, k, c, lk, u in expect]
    assert got == want


# Chunking --------------------------------------------------------------------------------------


def _checksummed(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


_size_fields = st.one_of(
    st.integers(0, 3000).map(lambda n: b"%011o\0" % n),
    st.binary(min_size=12, max_size=12),
    st.integers(0, 255).map(lambda b: bytes([0x80 | (b & 0x7F)]) + b"\0" * 10 + bytes([b])),
    st.just(b"\xff" * 12),
)
_pax_keys = st.sampled_from(
    [b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime", b"uname", b"GNU.sparse.x", b"k"]
)
_pax_values = st.one_of(
    st.binary(max_size=30), st.integers(-(10**20), 10**20).map(lambda n: b"%d" % n)
)


@st.composite
def _pax_body(draw: st.DrawFn) -> bytes:
    out = b""
    for key, value in draw(st.lists(st.tuples(_pax_keys, _pax_values), max_size=4)):
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + len(b"%d" % (len(body) + 2))
        length += draw(st.sampled_from([0, 0, 0, -1, 1, -length, 10**6]))
        out += b"%d" % length + body
    if draw(st.booleans()):
        out += draw(st.binary(max_size=8))
    return out


@st.composite
def hostile_blocks(draw: st.DrawFn) -> bytes:
    """Headers that pass the checksum, with any type and size field, then any payload: the
    reader has to get past the checksum before the interesting paths run at all."""
    block = bytearray(draw(st.binary(min_size=BLOCK, max_size=BLOCK)))
    if draw(st.booleans()):
        block[257:265] = draw(st.sampled_from([b"ustar\x0000", b"ustar  \x00"]))
    kind = draw(st.sampled_from(list(b"0125673LKxgS\0V4xxLKg")).map(lambda c: bytes([c])))
    block[156:157] = kind
    if draw(st.booleans()):
        block[0:100] = draw(st.binary(max_size=100)).ljust(100, b"\0")
    payload = draw(_pax_body() if kind in (b"x", b"g") else st.binary(max_size=1200))
    if draw(st.booleans()):
        block[124:136] = b"%011o\0" % len(payload)
    else:
        block[124:136] = draw(_size_fields)
    for start, width in ((100, 8), (108, 8), (116, 8), (136, 12)):
        if draw(st.booleans()):
            block[start : start + width] = b"%0*o\0" % (width - 1, draw(st.integers(0, 7**6)))
    header = _checksummed(block) if draw(st.integers(0, 9)) else bytes(block)
    return header + payload + padding(len(payload))


hostile_streams = st.lists(
    st.one_of(
        hostile_blocks(),
        st.lists(members(), max_size=2).map(lambda items: encode(items)[: -2 * BLOCK]),
        hostile_blocks(),
        st.sampled_from([b"\0" * BLOCK, END_OF_ARCHIVE, b"\0" * 37]),
        st.binary(max_size=600),
    ),
    max_size=6,
).map(b"".join)


@given(hostile_streams, st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_input_raises_only_tar_error_and_chunking_does_not_matter(
    stream: bytes, data: st.DataObject
) -> None:
    whole = drive(stream)
    chunked = drive(stream, data.draw(cut_points(len(stream))))
    at_once = drive(stream, data.draw(cut_points(len(stream))), drain_each=False)
    assert chunked == whole
    assert at_once == whole
    events, _ = whole
    # Whatever was accepted is self-consistent: data pieces add up to the member's size.
    for m, content in members_of(events):
        assert len(content) <= m.size
        assert not (m.type in (DIRECTORY, SYMLINK, HARDLINK, FIFO) and m.size)
        assert m.name and b"\0" not in m.name
    assert END not in events[:-1]


@given(st.binary(max_size=3000), st.data())
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_tar_error(stream: bytes, data: st.DataObject) -> None:
    assert drive(stream, data.draw(cut_points(len(stream)))) == drive(stream)


def test_feed_after_eof_is_a_tar_error() -> None:
    r = TarReader()
    r.feed_eof()
    with pytest.raises(TarError):
        r.feed(b"x")


# Bounded state ---------------------------------------------------------------------------------


def _held(r: TarReader) -> dict[str, int]:
    """What the reader keeps between calls (white box: the attributes that could grow)."""
    pending_pax = sum(len(k) + len(v) for k, v in r._pax.items())
    return {
        "buffer": len(r._buf) - r._pos,
        "meta": len(r._meta_buf),
        "long_name": len(r._long_name or b""),
        "long_link": len(r._long_link or b""),
        "pax": pending_pax,
    }


@given(
    st.lists(st.one_of(hostile_blocks(), st.binary(max_size=600)), max_size=8).map(b"".join),
    st.integers(1, 700),
    st.sampled_from([512, 4096]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reader_state_stays_bounded(stream: bytes, chunk: int, max_meta: int) -> None:
    r = TarReader(max_meta=max_meta)
    try:
        for i in range(0, len(stream), chunk):
            r.feed(stream[i : i + chunk])
            while r.next_event() is not None:
                pass
            held = _held(r)
            assert held["buffer"] < BLOCK + chunk
            assert held["meta"] <= max_meta
            assert held["long_name"] <= max_meta
            assert held["long_link"] <= max_meta
            assert held["pax"] <= max_meta
    except TarError:
        pass


def _pax_header(n: int, budget: int) -> bytes:
    body = b""
    i = 0
    while True:
        rec = b" k%d.%d=%s\n" % (n, i, b"v" * 100)
        rec = b"%d" % (len(rec) + 3) + rec
        if len(body) + len(rec) > budget:
            break
        body += rec
        i += 1
    block = bytearray(tar_header(b"PaxHeader", size=len(body)))
    block[156:157] = b"x"
    return _checksummed(block) + body + padding(len(body))


def test_consecutive_pax_headers_stay_within_max_meta() -> None:
    # The reader's promise: buffering stays below one fed chunk plus max_meta bytes.
    r = TarReader(max_meta=4096)
    try:
        for n in range(50):
            r.feed(_pax_header(n, 4096))
            assert r.next_event() is None
            assert _held(r)["pax"] <= 4096
    except TarError:
        pass  # refusing the stream is a fine answer too


# member_path -----------------------------------------------------------------------------------


@given(st.one_of(names, st.binary(max_size=200)))
@settings(max_examples=400, deadline=None)
def test_member_path_is_clean_relative_or_refused(name: bytes) -> None:
    try:
        clean = member_path(name)
    except TarError:
        parts = name.split(b"/")
        assert not name or b"\0" in name or name.startswith(b"/") or b".." in parts
        return
    assert clean == b"." or all(p not in (b"", b".", b"..") for p in clean.split(b"/"))
    assert not clean.startswith(b"/") and b"\0" not in clean
    assert member_path(clean) == clean
    assert [p for p in name.split(b"/") if p not in (b"", b".")] == (
        [] if clean == b"." else clean.split(b"/")
    )
