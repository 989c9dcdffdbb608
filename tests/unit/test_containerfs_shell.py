"""The pure parts of containerfs' shell protocol: quoting, listing and stat parsing, errno mapping."""

from __future__ import annotations

import errno
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.containerfs.scripts import HELPER_SCRIPT
from gateway.containerfs.shell import (
    ParseError,
    Stat,
    classify,
    command,
    parse_listing,
    parse_stat,
    sq,
)

names = st.binary(min_size=1, max_size=80).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


def record(name: bytes, mode: int = 0o100644, size: int = 3) -> bytes:
    return b"%x 0 0 %d 1 2 1 %s\n" % (mode, size, name)


def test_parse_stat_line() -> None:
    st_ = parse_stat(b"81a4 1000 1000 123 1700000000 1700000001 2\n")
    assert st_ == Stat(0o100644, 1000, 1000, 123, 1700000000, 1700000001, 2)
    assert st_.is_file and not st_.is_dir
    assert parse_stat(b"41ed 0 0 4096 -5 -6 3").is_dir


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"stat: cannot stat 'x': No such file",
        b"81a4 0 0 1 2 3",
        b"zz 0 0 1 2 3 4",
        b"81a4 0 0 1 2 3 4 5",
    ],
)
def test_parse_stat_refuses_garbage(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse_stat(line)


def test_parse_listing_with_hostile_names() -> None:
    tricky = [
        b"plain",
        b"new\nline",
        b"ends-with-newline\n",
        b"\nstarts",
        b"looks\n81a4 0 0 3 1 2 1 ./like-a-record",  # impossible: has a '/', must not appear
    ]
    safe = [n for n in tricky if b"/" not in n]
    body = b"41ed 0 0 4096 1 2 2 .\n41ed 0 0 4096 1 2 9 ..\n"
    body += b"".join(record(b"./" + n) for n in safe)
    body += record(b"./fake\n81a4 0 0 3 1 2 1 x")
    got = parse_listing(body)
    assert [n for n, _ in got] == [b".", b"..", *safe, b"fake\n81a4 0 0 3 1 2 1 x"]
    assert got[0][1].is_dir


def test_parse_listing_of_empty_and_bad_output() -> None:
    assert [n for n, _ in parse_listing(b"41ed 0 0 4096 1 2 2 .\n")] == [b"."]
    assert parse_listing(b"") == []
    with pytest.raises(ParseError):
        parse_listing(b"garbage without records")
    with pytest.raises(ParseError):
        parse_listing(record(b"./x")[:-1])  # the last record must end with a newline


@given(st.lists(names, max_size=30, unique=True), st.booleans())
@settings(max_examples=300)
def test_parse_listing_round_trip(entries: list[bytes], dots: bool) -> None:
    body = b"41ed 0 0 4096 1 2 2 .\n41ed 0 0 4096 1 2 9 ..\n" if dots else b""
    body += b"".join(record(b"./" + n, size=i) for i, n in enumerate(entries))
    got = parse_listing(body)
    expect = ([b".", b".."] if dots else []) + entries
    assert [n for n, _ in got] == expect
    assert [s.size for n, s in got if n not in (b".", b"..")] == list(range(len(entries)))


@pytest.mark.parametrize(
    "text,code",
    [
        (b"stat: can't stat '/x': No such file or directory\n", errno.ENOENT),
        (b"stat: cannot statx '/x': Permission denied\n", errno.EACCES),
        (b"sh: 1: cannot create /x/y: Directory nonexistent\n", errno.ENOENT),
        (b"sh: can't create /x/y: nonexistent directory\n", errno.ENOENT),
        (b"rmdir: '/tmp/t': Directory not empty\n", errno.ENOTEMPTY),
        (b"mkdir: can't create directory '/a': File exists\n", errno.EEXIST),
        (b"chown: /x: Operation not permitted\n", errno.EPERM),
        (b"dd: error writing '/x': No space left on device\n", errno.ENOSPC),
        (b"touch: /x: Read-only file system\n", errno.EROFS),
        (b"something else entirely\n", errno.EIO),
        # a name cannot fake the reason: the last line that ends in a known reason wins
        (b"rm: 'Permission denied\nx': No such file or directory\n", errno.ENOENT),
    ],
)
def test_classify(text: bytes, code: int) -> None:
    assert classify(text) == code


def test_sq_refuses_nul() -> None:
    with pytest.raises(ValueError):
        sq(b"a\0b")


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
@given(st.lists(st.binary(min_size=0, max_size=40).filter(lambda b: b"\0" not in b), max_size=4))
@settings(max_examples=150)
def test_sq_round_trips_through_a_real_shell(words: list[bytes]) -> None:
    # The helper evaluates request lines exactly like this: read one line, eval it.
    line = b"printf '%s\\0' " + b" ".join(sq(w) for w in words) + b"\n"
    script = "N='\n'\nIFS= read -r l; eval \"$l\""
    if not words:
        return
    res = subprocess.run(
        ["sh", "-c", script], input=line, capture_output=True, timeout=10, check=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.stdout.split(b"\0")[:-1] == words


def test_request_lines_are_one_line() -> None:
    line = command("q_stat", b"/a\nb", 12, "x")
    assert b"\n" not in line
    assert line == b"q_stat '/a'\"$N\"'b' 12 'x'"


def test_helper_script_has_no_bashisms_dash_can_parse() -> None:
    dash = shutil.which("dash") or shutil.which("sh")
    if dash is None:
        pytest.skip("no POSIX shell here")
    res = subprocess.run([dash, "-n", "-c", HELPER_SCRIPT], capture_output=True, timeout=10)
    assert res.returncode == 0, res.stderr
