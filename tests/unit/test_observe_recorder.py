"""asciicast v2 recorder: file format, UTF-8 split across reads, resize and input events."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from gateway.observe.recorder import (
    CastError,
    Recorder,
    convert_orphans,
    read_cast,
    spool_in_use,
)


def _lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_header_and_output_events(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "s1.cast"
    rec = Recorder(path, cols=100, rows=30, term="xterm-256color", title="alice+web1")
    rec.output(b"hello\r\n")
    rec.output(b"\x1b[1mbold\x1b[0m")
    rec.convert()
    lines = _lines(path)
    header = lines[0]
    assert isinstance(header, dict)
    assert header["version"] == 2
    assert header["width"] == 100 and header["height"] == 30
    assert isinstance(header["timestamp"], int)
    assert header["env"] == {"TERM": "xterm-256color"}
    assert header["title"] == "alice+web1"
    events = lines[1:]
    assert [e[1] for e in events] == ["o", "o"]  # type: ignore[index]
    assert events[0][2] == "hello\r\n"  # type: ignore[index]
    assert events[1][2] == "\x1b[1mbold\x1b[0m"  # type: ignore[index]
    times = [e[0] for e in events]  # type: ignore[index]
    assert all(isinstance(t, float | int) and t >= 0 for t in times)
    assert times == sorted(times)


def test_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "s.cast"
    Recorder(path, cols=80, rows=24).convert()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) & 0o077 == 0


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_text("old")
    with pytest.raises(FileExistsError):
        Recorder(path, cols=80, rows=24)
    assert path.read_text() == "old"


def test_utf8_split_across_reads_and_invalid_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    euro = "€".encode()  # 3 bytes
    rec.output(b"a" + euro[:1])
    rec.output(euro[1:] + b"b")
    rec.output(b"\xff\xfe")
    rec.output(euro[:2])  # cut off at the end: flushed as U+FFFD on close
    rec.convert()
    hdr, events = read_cast(path)
    text = "".join(e.data for e in events if e.code == "o")
    assert text == "a€b\ufffd\ufffd\ufffd"
    assert hdr.width == 80


def test_resize_and_input(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24, record_input=True)
    rec.input(b"ls\r")
    rec.resize(120, 40)
    rec.resize(0, 0)  # ignored
    rec.output(b"x")
    rec.convert()
    _, events = read_cast(path)
    got = [(e.code, e.data) for e in events]
    assert got == [("i", "ls\r"), ("r", "120x40"), ("o", "x")]


def test_input_not_recorded_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    rec.input(b"secret\r")
    rec.output(b"out")
    rec.convert()
    assert "secret" not in path.read_text()


def test_zero_size_header_gets_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    Recorder(path, cols=0, rows=0).convert()
    hdr, events = read_cast(path)
    assert (hdr.width, hdr.height) == (80, 24)
    assert list(events) == []


def test_all_byte_values_survive_as_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    rec.output(bytes(range(256)))
    rec.convert()
    for line in path.read_bytes().splitlines():
        json.loads(line)  # every line is valid JSON
    _, events = read_cast(path)
    text = "".join(e.data for e in events)
    assert text.startswith("".join(chr(i) for i in range(128)))


def test_close_is_idempotent_and_later_writes_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    rec.convert()
    rec.convert()
    rec.output(b"late")
    assert rec.closed
    assert len(path.read_text().splitlines()) == 1


def test_read_cast_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cast"
    bad.write_text('{"version": 1}\n')
    with pytest.raises(CastError):
        read_cast(bad)
    bad.write_text("not json\n")
    with pytest.raises(CastError):
        read_cast(bad)


def test_read_cast_stops_at_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_text('{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "a"]\n[0.2, "o", "b')
    _, events = read_cast(path)
    assert [e.data for e in events] == ["a"]


def test_data_path_writes_only_the_spool(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    rec.output(b"x" * 10)
    assert not path.exists()
    assert rec.spool.exists()
    assert spool_in_use(rec.spool)
    rec.close()
    assert not spool_in_use(rec.spool)
    rec.convert()
    assert path.exists() and not rec.spool.exists()


def test_spool_left_by_a_crash_is_converted_up_to_its_last_whole_frame(tmp_path: Path) -> None:
    path = tmp_path / "day" / "s.cast"
    rec = Recorder(path, cols=80, rows=24)
    rec.output(b"before the crash")
    rec.output(b"0123456789")
    rec.close()
    spool = rec.spool
    spool.write_bytes(spool.read_bytes()[:-3])  # the last frame is torn
    os.utime(spool, (time.time() - 60, time.time() - 60))
    live = Recorder(tmp_path / "day" / "live.cast", cols=80, rows=24)  # still recording
    assert convert_orphans(tmp_path) == [path]
    assert not spool.exists()
    _, events = read_cast(path)
    assert [e.data for e in events] == ["before the crash"]
    assert live.spool.exists() and not live.path.exists()
    live.convert()
