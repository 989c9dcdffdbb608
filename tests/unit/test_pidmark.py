"""The PID-marker scanner (gateway.ssh.pidmark): what of an exec's first output reaches the client."""

from __future__ import annotations

import pytest

from gateway.ssh.pidmark import HOLD_LIMIT, PidMarkScanner
from gateway.ssh.wrapper import PID_MARK_MAX, explain_start_failure, pid_mark

OUT, ERR = 1, 2
N = "0123456789abcdef0123456789abcdef"
OCI = b"OCI runtime exec failed: exec failed: unable to start container process: exec: "


def scanner(pty: bool) -> PidMarkScanner:
    return PidMarkScanner(N, pty=pty, stdout=OUT, stderr=ERR)


def joined(chunks: list[tuple[int, bytes]], stream: int | None = None) -> bytes:
    return b"".join(d for k, d in chunks if stream is None or k == stream)


@pytest.mark.parametrize("pty", [True, False])
def test_a_marker_split_at_every_byte_is_found_and_removed(pty: bool) -> None:
    stream = OUT if pty else ERR
    data = pid_mark(N, 4242) + b"$ prompt"
    for cut in range(len(data) + 1):
        s = scanner(pty)
        out = s.feed(stream, data[:cut]) + s.feed(stream, data[cut:])
        assert s.pid == 4242, cut
        assert joined(out) == b"$ prompt", cut
        assert (s.waiting, s.missing, s.finish()) == (False, False, [])


def test_bytes_before_the_marker_in_its_chunk_are_kept_else_the_search_ends() -> None:
    s = scanner(pty=True)
    assert s.feed(OUT, b"pre" + pid_mark(N, 7) + b"post") == [(OUT, b"pre"), (OUT, b"post")]
    assert s.pid == 7
    s = scanner(pty=True)
    assert s.feed(OUT, b"pre") == [(OUT, b"pre")]  # no marker can start here any more
    assert s.missing and s.pid is None
    assert s.feed(OUT, pid_mark(N, 7)) == [(OUT, pid_mark(N, 7))]
    assert s.pid is None


@pytest.mark.parametrize("pty", [True, False])
def test_a_marker_fed_one_byte_at_a_time(pty: bool) -> None:
    s = scanner(pty)
    stream = OUT if pty else ERR
    out: list[tuple[int, bytes]] = []
    for b in pid_mark(N, 77) + b"after":
        out += s.feed(stream, bytes([b]))
    assert s.pid == 77
    assert joined(out) == b"after"


def test_with_a_pty_everything_is_one_stream_and_the_marker_is_on_it() -> None:
    s = scanner(pty=True)
    assert s.feed(ERR, pid_mark(N, 9)[:5]) == []  # a PTY exec has no stderr: taken as stdout
    assert s.feed(OUT, pid_mark(N, 9)[5:] + b"x") == [(OUT, b"x")]
    assert s.pid == 9
    assert s.feed(ERR, b"y") == [(OUT, b"y")]


def test_without_a_pty_the_marker_is_on_stderr_and_stdout_waits_for_it() -> None:
    s = scanner(pty=False)
    assert s.feed(OUT, b"early stdout") == []  # frames of the two streams are not ordered
    assert s.held == [(OUT, b"early stdout")]
    out = s.feed(ERR, pid_mark(N, 31) + b"err")
    assert out == [(OUT, b"early stdout"), (ERR, b"err")]
    assert s.pid == 31 and s.held == []
    assert s.feed(OUT, b"later") == [(OUT, b"later")]


def test_without_a_pty_a_marker_on_stdout_is_the_commands_output() -> None:
    s = scanner(pty=False)
    assert s.feed(OUT, pid_mark(N, 5)) == []  # held as output, not parsed
    assert s.pid is None
    out = s.feed(ERR, pid_mark(N, 6))
    assert s.pid == 6
    assert out == [(OUT, pid_mark(N, 5))]


def test_type_ahead_is_held_up_to_the_limit_then_let_through() -> None:
    s = scanner(pty=False)
    block = b"o" * (16 * 1024)
    for _ in range(HOLD_LIMIT // len(block)):
        assert s.feed(OUT, block) == []
    assert s.waiting and not s.overflowed
    out = s.feed(OUT, b"!")  # one byte over the limit
    assert s.overflowed and s.waiting and s.pid is None
    assert joined(out) == block * (HOLD_LIMIT // len(block)) + b"!"
    assert s.held == []
    assert s.feed(OUT, b"more") == [(OUT, b"more")]  # stdout flows from now on
    # The marker is still looked for on its own stream (the engine does not order the two
    # streams: a fast command's stdout can pass it), and taken out of the output.
    assert s.feed(ERR, pid_mark(N, 12) + b"err") == [(ERR, b"err")]
    assert s.pid == 12 and not s.waiting
    assert s.finish() == []


@pytest.mark.parametrize(
    "forged",
    [b"\x1esshgw:1\x1e", pid_mark("f" * 32, 1), pid_mark(N[:-1] + "0", 7)],
)
def test_a_forged_marker_without_the_nonce_gives_no_pid(forged: bytes) -> None:
    s = scanner(pty=True)
    assert s.feed(OUT, forged) == []  # it might still be followed by the real one
    out = s.feed(OUT, b"x" * PID_MARK_MAX)
    assert s.pid is None and s.missing
    assert joined(out) == forged + b"x" * PID_MARK_MAX
    # ... and before the real marker it is passed on as output.
    s = scanner(pty=True)
    assert joined(s.feed(OUT, forged + pid_mark(N, 99) + b"$ ")) == forged + b"$ "
    assert s.pid == 99


def test_a_marker_after_the_first_bytes_is_refused() -> None:
    late = b"\x1e" * (PID_MARK_MAX - 10) + pid_mark(N, 50)
    s = scanner(pty=False)
    out = s.feed(ERR, late)
    assert s.pid is None and s.missing and not s.waiting
    assert out == [(ERR, late)]
    assert s.feed(ERR, pid_mark(N, 51)) == [(ERR, pid_mark(N, 51))]
    assert s.pid is None


def test_a_marker_with_a_bad_pid_is_refused() -> None:
    s = scanner(pty=True)
    bad = b"\x1esshgw:" + N.encode() + b":1\x1e"
    assert s.feed(OUT, bad + pid_mark(N, 50)) == [(OUT, bad + pid_mark(N, 50))]
    assert s.pid is None


def test_with_a_pty_the_engines_start_error_is_kept_for_the_explanation_not_shown() -> None:
    s = scanner(pty=True)
    text = OCI + b'chdir to cwd ("/nowhere") set in config.json failed\r\n'
    assert s.feed(OUT, text) == []
    assert s.missing and s.pid is None
    assert bytes(s.start_output) == text
    assert explain_start_failure(bytes(s.start_output), "web1", "app") == (
        "cannot start a process in container web1"
    )
    assert s.finish() == []


def test_without_a_pty_a_start_error_on_stdout_is_held_and_returned_at_the_end() -> None:
    # A missing binary or user: the engine's text arrives on stdout, then the output ends.
    s = scanner(pty=False)
    text = OCI + b"unable to find user nobody2: no matching entries in passwd file\r\n"
    assert s.feed(OUT, text) == []
    unsent = s.finish()
    assert unsent == [(OUT, text)]
    assert s.missing and s.pid is None and not s.waiting
    assert explain_start_failure(bytes(s.start_output), "web1", "nobody2") == (
        "login 'nobody2' does not exist in container web1"
    )
    assert s.finish() == []


def test_the_output_ends_before_the_marker_is_complete() -> None:
    s = scanner(pty=False)
    assert s.feed(OUT, b"o") == []
    assert s.feed(ERR, pid_mark(N, 8)[:6]) == []
    assert s.finish() == [(OUT, b"o"), (ERR, pid_mark(N, 8)[:6])]
    assert s.start_output == b"o" + pid_mark(N, 8)[:6]


def test_when_the_marker_will_not_come_other_output_is_released_but_engine_text_dropped() -> None:
    s = scanner(pty=False)
    assert s.feed(OUT, OCI + b"x") == []
    assert s.feed(OUT, b"plain") == []
    out = s.feed(ERR, b"no marker here")
    assert out == [(OUT, b"plain"), (ERR, b"no marker here")]
    assert s.start_output == b"no marker here"
