"""Metric names and labels, and the Observer's bookkeeping (no sockets, no database)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.observe import Observer, SessionInfo
from gateway.observe.metrics import Metrics
from gateway.observe.recorder import read_cast

REQUIRED = {
    # name: label names
    "sshgw_connections_opened_total": set(),
    "sshgw_connections_open": set(),
    "sshgw_handshake_failures_total": set(),
    "sshgw_auth_attempts_total": {"method", "result"},
    "sshgw_sessions_started_total": {"kind", "result"},
    "sshgw_sessions_ended_total": {"kind", "result"},
    "sshgw_sessions_active": {"kind"},
    "sshgw_session_duration_seconds": {"kind"},
    "sshgw_first_byte_seconds": {"kind"},
    "sshgw_docker_exec_start_seconds": set(),
    "sshgw_docker_errors_total": {"op"},
    "sshgw_bytes_to_container_total": {"kind"},
    "sshgw_bytes_from_container_total": {"kind"},
    "sshgw_sftp_operations_total": {"op", "result"},
    "sshgw_sftp_operation_seconds": {"op"},
    "sshgw_access_denied_total": {"reason"},
    "sshgw_build_info": {"version", "python", "asyncssh", "aiodocker"},
    "sshgw_ready": set(),
    "sshgw_audit_records_buffered": set(),
    "sshgw_audit_records_dropped_total": {"reason"},
}
FORBIDDEN_LABELS = {"user", "remote", "ip", "address", "container", "login", "session"}


def _families(m: Metrics) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for fam in m.registry.collect():
        labels: set[str] = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
        name = fam.name + ("_total" if fam.type == "counter" else "")
        out[name] = labels
    return out


def _exercise(obs: Observer, tmp: Path) -> None:
    obs.connection_opened("c1", "127.0.0.1:5000")
    obs.auth_attempt("publickey", True, "alice", "127.0.0.1:5000")
    obs.auth_attempt("password", False, "alice", "127.0.0.1:5000", "bad password")
    obs.access_denied("right_missing", "alice", "web1", "exec", "127.0.0.1:5000")
    obs.docker_error("exec_start")
    obs.exec_started(0.04)
    obs.handshake_failed("127.0.0.1:5001", "ConnectionLost")
    t = obs.session_started(_info("sftp", pty=False))
    t.from_container(b"data")
    t.file_op("read", "/etc/hosts", 120, "ok", 0.002)
    t.end(0, "exit")


def _info(kind: str = "shell", pty: bool = True, record: bool = True) -> SessionInfo:
    return SessionInfo(
        id=uuid.uuid4().hex,
        conn_id="c1",
        user="alice",
        container="web1",
        container_id="0123456789ab" * 5,
        login="app",
        kind=kind,
        command=None if kind == "shell" else "ls",
        remote="127.0.0.1:5000",
        pty=pty,
        term="xterm",
        cols=80,
        rows=24,
        record=record,
        connected_at=time.monotonic() - 0.1,
    )


class _FakeStore:
    @property
    def engine(self) -> Any:
        raise AssertionError("no database in unit tests")

    async def ping(self) -> None:
        return None


class _FakeEngine:
    async def ping(self) -> None:
        return None


def _observer(tmp: Path, **kw: Any) -> Observer:
    settings = Settings(data_dir=tmp, metrics_listen="127.0.0.1:0", **kw)
    return Observer(settings, _FakeStore(), _FakeEngine())  # type: ignore[arg-type]


def _v(obs: Observer, name: str, **labels: str) -> float:
    v = obs.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_required_metrics_and_labels(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    _exercise(obs, tmp_path)
    fams = _families(obs.metrics)
    for name, labels in REQUIRED.items():
        assert name in fams, f"missing metric {name}"
        assert fams[name] == labels, f"{name}: labels {fams[name]} != {labels}"
    for name, labels in fams.items():
        assert name.startswith("sshgw_"), name
        bad = labels & FORBIDDEN_LABELS
        assert not bad, f"{name} has high-cardinality labels {bad}"


def test_container_label_is_opt_in(tmp_path: Path) -> None:
    obs = _observer(tmp_path, metrics_container_label=True)
    obs.session_started(_info("exec", pty=False)).end(0, "exit")
    assert _v(obs, "sshgw_sessions_ended_total", kind="exec", container="web1", result="exit") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_exposition_passes_promtool(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    _exercise(obs, tmp_path)
    res = subprocess.run(
        ["promtool", "check", "metrics"],
        input=obs.metrics.exposition(),
        capture_output=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_session_bookkeeping(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    info = _info("shell")
    t = obs.session_started(info)
    assert _v(obs, "sshgw_sessions_active", kind="shell") == 1
    assert _v(obs, "sshgw_sessions_started_total", kind="shell", result="ok") == 1
    assert obs.active_sessions == [t]
    t.to_container(10)
    t.from_container(b"hello")
    t.from_container(b"world!")
    t.resize(100, 50)
    assert _v(obs, "sshgw_bytes_to_container_total", kind="shell") == 10
    assert _v(obs, "sshgw_bytes_from_container_total", kind="shell") == 11
    assert _v(obs, "sshgw_first_byte_seconds_count", kind="shell") == 1
    assert _v(obs, "sshgw_first_byte_seconds_sum", kind="shell") >= 0.1
    t.end(3, "exit")
    t.end(0, "error")  # idempotent: the first end wins
    assert obs.active_sessions == []
    assert _v(obs, "sshgw_sessions_active", kind="shell") == 0
    assert _v(obs, "sshgw_sessions_ended_total", kind="shell", result="exit") == 1
    assert _v(obs, "sshgw_sessions_ended_total", kind="shell", result="error") == 0
    assert _v(obs, "sshgw_session_duration_seconds_count", kind="shell") == 1
    # Audit: session row start + start event + row end + end event.
    recs = list(obs.writer._buf)
    assert [r.op for r in recs] == ["session_start", "event", "session_end", "event"]
    assert recs[0].values["id"] == info.id
    assert recs[2].values["exit_status"] == 3
    assert recs[2].values["bytes_in"] == 10 and recs[2].values["bytes_out"] == 11
    assert recs[3].values["detail"]["reason"] == "exit"
    # The recording is a valid asciicast with the output and the resize.
    path = Path(recs[0].values["recording_path"])
    assert path.is_relative_to(tmp_path / "recordings")
    hdr, events = read_cast(path)
    assert (hdr.width, hdr.height) == (80, 24)
    assert [(e.code, e.data) for e in events] == [
        ("o", "hello"),
        ("o", "world!"),
        ("r", "100x50"),
    ]


@pytest.mark.parametrize(
    ("kw", "pty", "record"),
    [
        ({"recording": False}, True, True),
        ({}, False, True),
        ({}, True, False),
    ],
)
def test_recording_switches(tmp_path: Path, kw: dict[str, Any], pty: bool, record: bool) -> None:
    obs = _observer(tmp_path, **kw)
    t = obs.session_started(_info("shell", pty=pty, record=record))
    t.from_container(b"x")
    t.end(0, "exit")
    assert t.recording_path is None
    assert not (tmp_path / "recordings").exists()


def test_record_input_switch(tmp_path: Path) -> None:
    obs = _observer(tmp_path, record_input=True)
    t = obs.session_started(_info("shell"))
    t.input(b"id\r")
    path = t.recording_path
    t.end(0, "exit")
    assert path is not None
    _, events = read_cast(path)
    assert [(e.code, e.data) for e in events] == [("i", "id\r")]


def test_audit_off_writes_nothing(tmp_path: Path) -> None:
    obs = _observer(tmp_path, audit=False, recording=False)
    obs.auth_attempt("password", False, "bob", "1.2.3.4:5")
    obs.session_started(_info("exec", pty=False)).end(0, "exit")
    assert obs.writer.pending == 0
    assert _v(obs, "sshgw_sessions_ended_total", kind="exec", result="exit") == 1


def test_unknown_label_values_are_clamped(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    obs.access_denied("something new", "u", "c", "forward", "r")
    obs.auth_attempt("gssapi-with-mic", False, None, "r")
    assert _v(obs, "sshgw_access_denied_total", reason="other") == 1
    assert _v(obs, "sshgw_auth_attempts_total", method="other", result="failure") == 1
    assert _v(obs, "sshgw_sessions_started_total", kind="other", result="denied") == 1


def test_connections_gauge_is_idempotent(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    obs.connection_opened("a", "r")
    obs.connection_opened("a", "r")
    obs.connection_opened("b", "r")
    obs.connection_closed("a")
    obs.connection_closed("a")
    assert _v(obs, "sshgw_connections_open") == 1
    assert _v(obs, "sshgw_connections_opened_total") == 2


def test_recording_failure_does_not_reach_the_session(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    t = obs.session_started(_info("shell"))
    assert t.recorder is not None
    t.recorder._file.close()  # type: ignore[union-attr]  # the disk went away
    t.from_container(b"x" * 100_000)  # must not raise
    assert t.recorder is None
    assert _v(obs, "sshgw_recording_errors_total") == 1
    t.end(0, "exit")


def test_a_refused_scp_is_counted_as_scp(tmp_path: Path) -> None:
    obs = _observer(tmp_path)
    obs.access_denied("no_grant", "u", "c", "sftp-read", "r", kind="scp")
    obs.access_denied("no_grant", "u", "c", "sftp-read", "r")
    assert _v(obs, "sshgw_sessions_started_total", kind="scp", result="denied") == 1
    assert _v(obs, "sshgw_sessions_started_total", kind="sftp", result="denied") == 1
