"""Properties of the shell protocol's pure parts (issue 8): quoting, listings, stat lines,
passwd/group maps, reply framing and errno mapping, on arbitrary and hostile input.

Everything here parses what a container printed (hostile) or builds what a container's shell
evaluates. Only the documented exceptions may escape: :class:`ParseError` from the listing and
stat parsers, ``ValueError`` from :func:`find_reply` and :func:`sq`; :func:`parse_id_map` and
:func:`classify` never raise. The coverage-guided counterpart is ``fuzz/fuzz_shell.py``.
"""

from __future__ import annotations

import errno
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.containerfs import shell
from gateway.containerfs.shell import (
    ParseError,
    Stat,
    classify,
    command,
    find_reply,
    parse_id_map,
    parse_listing,
    parse_stat,
    sq,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# stat lines --------------------------------------------------------------------------------------

stats = st.builds(
    Stat,
    mode=st.integers(0, 0xFFFFFFFF),
    uid=st.integers(0, 9_999_999_999),
    gid=st.integers(0, 9_999_999_999),
    size=st.integers(0, 10**20 - 1),
    atime=st.integers(-(10**20) + 1, 10**20 - 1),
    mtime=st.integers(-(10**20) + 1, 10**20 - 1),
    nlink=st.integers(0, 10**20 - 1),
)


def fields(s: Stat, upper: bool = False) -> bytes:
    mode = (b"%X" if upper else b"%x") % s.mode
    return b"%s %d %d %d %d %d %d" % (mode, s.uid, s.gid, s.size, s.atime, s.mtime, s.nlink)


@given(stats, st.booleans(), st.sampled_from([b"", b"\n", b" ", b"\n "]))
@FAST
def test_stat_line_round_trip(s: Stat, upper: bool, tail: bytes) -> None:
    assert parse_stat(b" " * upper + fields(s, upper) + tail) == s


@given(st.one_of(st.binary(max_size=120), stats.map(fields).map(lambda b: b + b" x")))
@FAST
def test_stat_line_garbage_is_a_parse_error(line: bytes) -> None:
    try:
        got = parse_stat(line)
    except ParseError as exc:
        assert exc.code == errno.EIO
        return
    assert isinstance(got, Stat)
    assert parse_stat(fields(got)) == got


# listings ----------------------------------------------------------------------------------------

# Directory entry names: any byte but NUL and '/', newlines and record look-alikes included.
entry_names = st.one_of(
    st.binary(min_size=1, max_size=60),
    st.lists(
        st.sampled_from([b"\n", b" ", b"81a4 0 0 3 1 2 1 ", b".", b"..", b"x", b"\xff"]),
        min_size=1,
        max_size=8,
    ).map(b"".join),
).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@given(
    st.lists(st.tuples(entry_names, stats), max_size=20, unique_by=lambda t: t[0]),
    st.one_of(st.none(), st.tuples(stats, stats)),
)
@FAST
def test_listing_round_trip(
    entries: list[tuple[bytes, Stat]], dots: tuple[Stat, Stat] | None
) -> None:
    body = b""
    expect: list[tuple[bytes, Stat]] = []
    if dots is not None:
        body += fields(dots[0]) + b" .\n" + fields(dots[1]) + b" ..\n"
        expect += [(b".", dots[0]), (b"..", dots[1])]
    for name, s in entries:
        body += fields(s) + b" ./" + name + b"\n"
    expect += entries
    assert parse_listing(body) == expect


listing_garbage = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.one_of(
            stats.map(fields).map(lambda f: f + b" ./"),
            stats.map(fields).map(lambda f: f + b" .\n"),
            st.sampled_from([b"\n", b"/", b"./", b"x", b" ", b"\0"]),
            st.binary(max_size=10),
        ),
        max_size=12,
    ).map(b"".join),
)


@given(listing_garbage)
@FAST
def test_listing_garbage_is_a_parse_error(body: bytes) -> None:
    try:
        got = parse_listing(body)
    except ParseError:
        return
    seen_entry = False
    for i, (name, s) in enumerate(got):
        assert isinstance(s, Stat)
        if name in (b".", b"..") and not seen_entry and i < 2:
            continue
        seen_entry = True
        assert name and b"/" not in name


# passwd / group ---------------------------------------------------------------------------------

user_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=":\n\r"), min_size=1, max_size=64
).filter(lambda n: n.isprintable() and " " not in n)


@given(st.lists(st.tuples(user_names, st.integers(0, 9_999_999_999)), max_size=15))
@FAST
def test_id_map_round_trip(entries: list[tuple[str, int]]) -> None:
    body = b"".join(b"%s:x:%d:0:gecos:/home:/bin/sh\n" % (n.encode(), i) for n, i in entries)
    expect: dict[int, str] = {}
    for name, ident in entries:
        expect.setdefault(ident, name)
    assert parse_id_map(body) == expect


@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(
            st.one_of(st.binary(max_size=20), st.sampled_from([b":", b"\n", b"\r", b"0", b"9"])),
            max_size=40,
        ).map(b"".join),
    )
)
@FAST
def test_id_map_of_garbage_never_raises(body: bytes) -> None:
    got = parse_id_map(body)
    for ident, name in got.items():
        assert 0 <= ident < 10**10
        assert 0 < len(name) <= 64 and name.isprintable() and " " not in name


# reply framing ----------------------------------------------------------------------------------

nonces = st.binary(min_size=8, max_size=8).map(lambda b: b.hex().encode())


@given(
    nonces,
    st.binary(max_size=300),
    st.integers(0, 999),
    st.binary(max_size=40),
    st.lists(st.integers(1, 64), min_size=1, max_size=30),
)
@FAST
def test_reply_framing_round_trip_over_any_chunking(
    nonce: bytes, body: bytes, status: int, after: bytes, chunks: list[int]
) -> None:
    mark = b"\0" + nonce + b" "
    if mark in body:
        return
    trailer = mark + b"%d\n" % status
    stream = body + trailer + after
    assert find_reply(stream, mark) == (len(body), status, len(body) + len(trailer))
    # The helper's read loop: search only the new part (minus a mark's worth of overlap).
    buf = bytearray()
    start = 0
    pos = 0
    sizes = iter(chunks * (len(stream) // sum(chunks) + 1))
    found = None
    while found is None:
        assert pos < len(stream), "reply not found"
        n = next(sizes)
        buf += stream[pos : pos + n]
        pos += n
        found = find_reply(buf, mark, start)
        start = max(0, len(buf) - len(mark) - 32)
    assert found == (len(body), status, len(body) + len(trailer))


@given(nonces, st.binary(max_size=200), st.binary(max_size=30))
@FAST
def test_reply_framing_of_garbage(nonce: bytes, before: bytes, after: bytes) -> None:
    mark = b"\0" + nonce + b" "
    for buf in (before, before + mark + after):
        try:
            found = find_reply(buf, mark)
        except ValueError:
            continue
        if found is None:
            # Incomplete: only while there is still room for a short status and its newline.
            i = buf.find(mark)
            assert i < 0 or len(buf) - i - len(mark) < 12
        else:
            end, status, used = found
            assert buf[end:].startswith(mark) and 0 <= status <= 999
            assert buf[used - 1 : used] == b"\n" and used - end - len(mark) <= 4


# errno mapping ----------------------------------------------------------------------------------

MESSAGES = sorted(shell._MESSAGES)
KNOWN = {errno.EIO, *shell._MESSAGES.values()}


@given(st.binary(max_size=300))
@FAST
def test_classify_garbage_is_a_known_errno(text: bytes) -> None:
    assert classify(text) in KNOWN


@given(
    st.binary(max_size=100),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.sampled_from(MESSAGES),
    st.sampled_from([b"", b"\n", b" \n", b"\r\n", b"\t"]),
)
@FAST
def test_classify_the_last_line_decides(
    before: bytes, prefix: bytes, message: bytes, end: bytes
) -> None:
    text = before + b"\n" + prefix + message + end
    assert classify(text) == shell._MESSAGES[message]


# quoting through real shells -------------------------------------------------------------------

SHELLS = [
    pytest.param(argv, id=argv[0])
    for argv in (["dash"], ["bash", "--posix"], ["busybox", "sh"])
    if shutil.which(argv[0])
]
ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
words = st.binary(max_size=60).filter(lambda b: b"\0" not in b)


@pytest.mark.skipif(not SHELLS, reason="needs a POSIX sh")
@pytest.mark.parametrize("sh", SHELLS)
@given(word=words)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_sq_word_evaluates_to_itself(sh: list[str], word: bytes) -> None:
    script = b"N='\n'\nprintf %s " + sq(word)
    res = subprocess.run([*sh, "-c", script], capture_output=True, timeout=10, check=True, env=ENV)
    assert res.stdout == word
    assert b"\n" not in sq(word)


args = st.one_of(
    words,
    st.integers(-(10**12), 10**12),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=20),
)


@pytest.mark.skipif(not SHELLS, reason="needs a POSIX sh")
@given(st.lists(args, min_size=1, max_size=5))
@settings(max_examples=150, deadline=None)
def test_request_line_gives_the_helper_its_arguments(values: list[bytes | str | int]) -> None:
    # Like the helper: one line read, eval'd, calling a function with the quoted arguments.
    line = command("q_echo", *values)
    assert b"\n" not in line
    script = (
        "N='\n'\nq_echo() { for a; do printf '%s\\0' \"$a\"; done; }\nIFS= read -r l; eval \"$l\""
    )
    res = subprocess.run(
        ["sh", "-c", script],
        input=line + b"\n",
        capture_output=True,
        timeout=10,
        check=True,
        env=ENV,
    )
    expect = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    assert res.stdout.split(b"\0")[:-1] == expect


@given(st.one_of(st.binary(max_size=40), st.text(max_size=20), st.integers()))
@FAST
def test_sq_refuses_only_with_value_error(value: bytes | str | int) -> None:
    try:
        out = sq(value)
    except ValueError:
        # NUL bytes, or text that is not encodable (lone surrogates)
        assert isinstance(value, str) or b"\0" in value
        return
    assert b"\n" not in out and b"\0" not in out
