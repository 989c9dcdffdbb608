"""Recording bounds: the size cap and the free-space rule (pure parts and the recorder's files)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from gateway.observe.recorder import (
    LOW_DISK,
    SPOOL_SUFFIX,
    Budget,
    Recorder,
    RecordingStopped,
    convert_orphans,
    convert_spool,
    fitting_prefix,
    marker_text,
    read_cast,
    truncated_reason,
)

CAP = 4096
# The marker event line, and nothing else, may pass the cap.
MARKER_LINE = 120


# --- Budget: the decision alone ------------------------------------------------------------


def test_budget_without_limits_takes_everything_and_never_looks_at_the_disk() -> None:
    b = Budget()
    b.take(1 << 40)
    assert b.room() is None and b.fits(1 << 40)
    assert not b.needs_free_check()


def test_budget_room_shrinks_to_zero_and_never_below() -> None:
    b = Budget(max_bytes=100)
    assert b.fits(100) and not b.fits(101)
    b.take(60)
    assert b.room() == 40 and b.fits(40) and not b.fits(41)
    b.take(60)
    assert b.room() == 0 and not b.fits(1)


def test_budget_looks_at_free_space_first_then_every_check_every_bytes() -> None:
    b = Budget(min_free=1000, check_every=10)
    assert b.needs_free_check()  # at the start
    assert b.free_ok(1000)
    assert not b.needs_free_check()
    b.take(9)
    assert not b.needs_free_check()
    b.take(1)
    assert b.needs_free_check()
    assert not b.free_ok(999)  # below the minimum
    assert not b.needs_free_check()


def test_fitting_prefix_is_the_longest_that_fits() -> None:
    text = "\x01" * 50 + "abc"  # each control character escapes to six bytes
    for room in range(0, 400, 7):
        k = fitting_prefix(1.5, "o", text, room)
        line = f'[{1.5:.6f}, "o", {json.dumps(text[:k])}]\n'.encode()
        assert k == 0 or len(line) <= room
        if k < len(text):
            longer = f'[{1.5:.6f}, "o", {json.dumps(text[: k + 1])}]\n'.encode()
            assert len(longer) > room
    assert fitting_prefix(0.0, "o", "abc", 10**6) == 3
    assert fitting_prefix(0.0, "o", "abc", 0) == 0


# --- the recorder under a cap ----------------------------------------------------------------


def _events(path: Path) -> list[tuple[str, str]]:
    _, events = read_cast(path)
    return [(e.code, e.data) for e in events]


def test_cap_ends_the_recording_with_one_marker_and_takes_nothing_after(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24, max_bytes=CAP)
    chunk = b"0123456789abcdef" * 16  # 256 bytes
    stops = 0
    for _ in range(100):
        try:
            rec.output(chunk)
        except RecordingStopped as exc:
            stops += 1
            assert not exc.low_disk
            assert str(exc) == truncated_reason(CAP)
    assert stops == 1  # raised once; later output is ignored
    assert rec.stopped is not None
    rec.output(b"LATE")
    rec.close()
    assert rec.spool.stat().st_size <= CAP + 100  # the spool holds the cap too
    rec.convert()
    events = _events(path)
    assert events[-1] == ("o", marker_text(truncated_reason(CAP)))
    assert sum(1 for _, d in events if "[sshgw:" in d) == 1
    text = "".join(d for c, d in events[:-1] if c == "o")
    assert "LATE" not in text
    assert text == (chunk * 100).decode()[: len(text)]  # a clean prefix of what was output
    assert len(text) > CAP - 600  # the cap is used, not wasted
    assert path.stat().st_size <= CAP + MARKER_LINE


def test_cast_holds_the_cap_when_escaping_makes_text_longer(tmp_path: Path) -> None:
    # Control bytes become \\u00XX (six bytes each) and invalid UTF-8 becomes U+FFFD (three):
    # the spool takes the raw bytes, the asciicast file must still stay within the cap.
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24, max_bytes=CAP)
    with pytest.raises(RecordingStopped):
        for _ in range(100):
            rec.output(bytes(range(32)) * 4 + b"\xff" * 64)
    rec.convert()
    raw = path.read_bytes()
    assert len(raw) <= CAP + MARKER_LINE
    for line in raw.splitlines():
        json.loads(line)
    events = _events(path)
    assert events[-1][1] == marker_text(truncated_reason(CAP))
    assert sum(1 for _, d in events if "[sshgw:" in d) == 1


def test_input_counts_against_the_cap_when_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24, record_input=True, max_bytes=CAP)
    with pytest.raises(RecordingStopped):
        for _ in range(1000):
            rec.input(b"typed ")
    rec.output(b"after")  # ignored
    rec.convert()
    events = _events(path)
    assert {c for c, _ in events[:-1]} == {"i"}
    assert events[-1] == ("o", marker_text(truncated_reason(CAP)))
    assert path.stat().st_size <= CAP + MARKER_LINE


def test_a_cap_smaller_than_the_header_still_gives_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24, title="x" * 200, max_bytes=10)
    with pytest.raises(RecordingStopped):
        rec.output(b"a")
    rec.convert()
    hdr, _ = read_cast(path)
    assert hdr.raw["title"] == "x" * 200
    assert _events(path) == [("o", marker_text(truncated_reason(10)))]


def test_no_cap_records_everything(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    for _ in range(64):
        rec.output(b"y" * 1024)
    rec.convert()
    assert "".join(d for _, d in _events(path)) == "y" * 65536


def test_conversion_alone_holds_the_cap(tmp_path: Path) -> None:
    # A spool written without a cap (an earlier run, or a crash) is capped when converted.
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    for _ in range(64):
        rec.output(b"\x1b[0mz" * 100)
    rec.close()
    convert_spool(rec.spool, path, max_bytes=CAP)
    assert path.stat().st_size <= CAP + MARKER_LINE
    assert _events(path)[-1] == ("o", marker_text(truncated_reason(CAP)))
    assert not rec.spool.exists()


def test_orphaned_spools_are_converted_under_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "day" / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    for _ in range(64):
        rec.output(b"w" * 1000)
    rec.close()
    old = time.time() - 60
    os.utime(rec.spool, (old, old))
    assert convert_orphans(tmp_path, CAP) == [path]
    assert path.stat().st_size <= CAP + MARKER_LINE
    assert not list(tmp_path.rglob("*" + SPOOL_SUFFIX))


# --- free space ----------------------------------------------------------------------------


def test_low_disk_at_the_start_records_only_the_marker(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24, min_free=1 << 30, free_space=lambda _: 1 << 20)
    assert rec.stopped is not None and rec.stopped.low_disk
    rec.output(b"secret output")
    rec.convert()
    assert _events(path) == [("o", marker_text(LOW_DISK))]


def test_free_space_is_checked_every_few_mib_not_on_every_write(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    calls: list[Path] = []
    free = [1 << 40]

    def free_space(d: Path) -> int:
        calls.append(d)
        return free[0]

    rec = Recorder(path, cols=80, rows=24, min_free=1 << 30, free_space=free_space)
    chunk = b"k" * 4096
    for _ in range(1024):  # 4 MiB: one more look
        rec.output(chunk)
    assert 1 <= len(calls) <= 3
    assert calls[0] == path.parent
    free[0] = 1 << 20  # the disk fills up
    with pytest.raises(RecordingStopped) as stop:
        for _ in range(2048):
            rec.output(chunk)
    assert stop.value.low_disk and str(stop.value) == LOW_DISK
    assert len(calls) <= 4
    rec.output(chunk)  # ignored now
    rec.convert()
    events = _events(path)
    assert events[-1] == ("o", marker_text(LOW_DISK))
    recorded = sum(len(d) for c, d in events[:-1])
    assert (4 << 20) <= recorded <= (8 << 20) + len(chunk)
