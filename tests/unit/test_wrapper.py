"""The PID marker: a per-session nonce, only the first bytes, only a PID > 1 (hardening item 10)."""

from __future__ import annotations

import pytest

from gateway.ssh.wrapper import (
    PID_MARK_MAX,
    alive_argv,
    kill_argv,
    new_nonce,
    pid_mark,
    scan_pid_mark,
    wrapper_argv,
)

N = "0123456789abcdef0123456789abcdef"


def test_the_real_marker_is_found_with_its_position() -> None:
    data = pid_mark(N, 42) + b"$ "
    scan = scan_pid_mark(data, N)
    assert (scan.state, scan.pid, scan.start, scan.end) == ("found", 42, 0, len(pid_mark(N, 42)))


def test_a_nonce_is_fresh_per_call() -> None:
    assert new_nonce() != new_nonce()
    assert len(new_nonce()) == 32


@pytest.mark.parametrize(
    "forged",
    [
        b"\x1esshgw:1\x1e",  # the old format
        pid_mark("f" * 32, 1),  # a guessed nonce
        pid_mark("f" * 32, 777),
        pid_mark(N[:-1] + "0", 7),  # one nibble off
    ],
)
def test_markers_without_this_sessions_nonce_are_ignored(forged: bytes) -> None:
    assert scan_pid_mark(forged, N).state in ("more", "none")
    scan = scan_pid_mark(forged + pid_mark(N, 99), N)
    assert (scan.state, scan.pid) == ("found", 99)
    assert scan.start == len(forged)


@pytest.mark.parametrize("pid", [b"0", b"1", b"01", b"-5", b"4194305", b"99999999999", b"x"])
def test_the_right_nonce_with_a_bad_pid_gives_no_pid(pid: bytes) -> None:
    data = b"\x1esshgw:" + N.encode() + b":" + pid + b"\x1e"
    assert scan_pid_mark(data, N).state == "none"
    # ... and a later marker is not taken instead
    assert scan_pid_mark(data + pid_mark(N, 50), N).state == "none"


def test_only_the_first_bytes_are_examined() -> None:
    late = b"x\x1e" * PID_MARK_MAX + pid_mark(N, 50)
    assert scan_pid_mark(late, N).state == "none"
    cut = b"\x1e" * (PID_MARK_MAX - 10) + pid_mark(N, 50)
    assert scan_pid_mark(cut, N).state == "none"


def test_a_marker_cut_by_the_chunking_waits_for_more() -> None:
    full = pid_mark(N, 1234)
    for i in range(len(full)):
        assert scan_pid_mark(full[:i], N).state == "more", i
    assert scan_pid_mark(full, N).pid == 1234


def test_output_that_cannot_hold_a_marker_gives_up() -> None:
    assert scan_pid_mark(b"OCI runtime exec failed", N).state == "none"
    assert scan_pid_mark(b"\x1eother", N).state == "more"  # still short: could be cut
    assert scan_pid_mark(b"\x1eother" + b"y" * PID_MARK_MAX, N).state == "none"


def test_a_bad_nonce_is_refused() -> None:
    with pytest.raises(ValueError):
        scan_pid_mark(b"", "")
    with pytest.raises(ValueError):
        wrapper_argv("exec", "app", 0, 0, "true", nonce="x'; kill 1")


def test_the_nonce_is_in_the_wrapper_argv_not_the_command() -> None:
    argv = wrapper_argv("exec", "app", 0, 0, "echo hi", nonce=N)
    assert argv[8] == N and argv[-1] == "echo hi"
    assert N not in argv[2]


@pytest.mark.parametrize("pid", [0, 1, -1, 4194305])
def test_kill_and_alive_refuse_pid_0_1_and_out_of_range(pid: int) -> None:
    with pytest.raises(ValueError):
        kill_argv(pid, "TERM")
    with pytest.raises(ValueError):
        alive_argv(pid)


def test_kill_targets_only_the_wrappers_own_group() -> None:
    cmd = kill_argv(77, "HUP")[2]
    assert "kill -HUP -77" in cmd
    assert '[ "$3" = "$p" ]' in cmd and '[ "$2" = 0 ]' in cmd  # pgid = pid, parent outside
    assert "||" not in cmd.split("exit 3;")[-1]  # no fallback to a bare PID
    with pytest.raises(ValueError):
        kill_argv(77, "TERM; kill -9 1")
