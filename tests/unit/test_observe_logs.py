"""Structured logs: plain and JSON, connection/session ids on every line, no secrets in extras."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.observe.logs import conn_id_var, session_id_var, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _log(fmt: str, tmp: Path) -> str:
    buf = io.StringIO()
    setup_logging(Settings(data_dir=tmp, log_format=fmt, log_level="DEBUG"), stream=buf)
    log = logging.getLogger("gateway.test")
    t1 = conn_id_var.set("c0ffee")
    t2 = session_id_var.set("5e55")
    try:
        log.info("session started for %s", "alice", extra={"kind": "shell", "password": "hunter2"})
    finally:
        session_id_var.reset(t2)
        conn_id_var.reset(t1)
    log.warning("no context here")
    return buf.getvalue()


def test_plain(tmp_path: Path, restore_logging: None) -> None:
    out = _log("plain", tmp_path).splitlines()
    assert len(out) == 2
    assert "INFO" in out[0] and "gateway.test" in out[0]
    assert "[conn=c0ffee session=5e55]" in out[0]
    assert "session started for alice" in out[0]
    assert "kind=shell" in out[0]
    assert "hunter2" not in out[0]
    assert "conn=" not in out[1] and "no context here" in out[1]


def test_json(tmp_path: Path, restore_logging: None) -> None:
    lines = [json.loads(x) for x in _log("json", tmp_path).splitlines()]
    first, second = lines
    assert first["level"] == "info"
    assert first["logger"] == "gateway.test"
    assert first["msg"] == "session started for alice"
    assert first["conn_id"] == "c0ffee" and first["session_id"] == "5e55"
    assert first["kind"] == "shell"
    assert first["password"] == "***"
    assert first["ts"].endswith("Z")
    assert second["conn_id"] is None and second["session_id"] is None


def test_setup_twice_keeps_one_handler(tmp_path: Path, restore_logging: None) -> None:
    s = Settings(data_dir=tmp_path)
    setup_logging(s, stream=io.StringIO())
    setup_logging(s, stream=io.StringIO())
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "sshgw"]
    assert len(ours) == 1


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_hostile_text_is_escaped_and_stays_on_one_line(
    tmp_path: Path, restore_logging: None, fmt: str
) -> None:
    buf = io.StringIO()
    setup_logging(Settings(data_dir=tmp_path, log_format=fmt, log_level="DEBUG"), stream=buf)
    hostile = "echo '\x1b]0;pwned\x07'\n2026-01-01T00:00:00.000Z INFO  forged \x9b2J\u202e"
    logging.getLogger("gateway.test").info("command: %s", hostile, extra={"path": hostile})
    out = buf.getvalue()
    assert out.count("\n") == 1, out  # one record, one line: no forged line
    for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert ch not in out
    if fmt == "json":
        doc = json.loads(out)
        assert doc["msg"] == f"command: {hostile}" and doc["path"] == hostile  # exact value kept
    else:
        assert "\\x1b]0;pwned\\x07" in out and "\\n2026" in out
