"""Files on the gateway host: the data directory holds password hashes, public keys, the audit
trail, host keys and session recordings. A review found the directory created 0755 and
``sshgw.db`` 0644 (readable by every local user), and recordings without any size bound (one
session printing without end could fill the disk).

Each test runs the real gateway (or the real CLI) as its own process and looks at the files it
left: directories 0700, files 0600 (SQLite's ``-wal``/``-shm`` too), an already open data
directory tightened at start with one warning line, a recording cut at
``recording_max_bytes`` with a visible marker while the session itself is complete, and no
recording data at all while the file system has less free space than ``recording_min_free``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Gateway, GatewayFactory, PtyProcess, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]
REPO = Path(__file__).resolve().parents[2]
DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
CAP = 64 * 1024
# What a recording may hold beyond the cap: the truncation marker event, and slack for one event.
MARKER_SLACK = 512


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def db_files(data_dir: Path) -> list[Path]:
    return [p for s in DB_SUFFIXES if (p := data_dir / f"sshgw.db{s}").exists()]


def assert_private_tree(root: Path) -> None:
    """``root`` and everything under it: directories 0700, files without group/other bits."""
    assert mode(root) == 0o700, f"{root}: {oct(mode(root))}"
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            assert mode(path) == 0o700, f"{path}: {oct(mode(path))}"
        else:
            assert mode(path) & 0o077 == 0, f"{path}: {oct(mode(path))}"


def user_for(gateway: Gateway, container: str) -> str:
    user = unique("hf")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="shell,exec", logins="app")
    return user


def pty_session(
    gateway: Gateway, login: str, line: bytes, until: bytes, timeout: float = 120
) -> bytes:
    """Type ``line`` into a PTY shell, read until ``until``, exit; return what the client saw."""
    env = dict(os.environ, TERM="xterm")
    with PtyProcess(gateway.ssh_cmd(login, extra_opts=["-tt"]), rows=24, cols=80, env=env) as p:
        p.send(line + b"\r")
        out = p.read_until(until, timeout=timeout)
        p.send(b"exit\r")
        assert p.wait(timeout=60) == 0
    return out


def shell_session_of(gateway: Gateway, user: str) -> dict[str, Any]:
    rows = json.loads(gateway.cli("sessions", "--user", user, "--json").stdout)
    rows = [r for r in rows if r["kind"] == "shell"]
    assert len(rows) == 1, rows
    row: dict[str, Any] = rows[0]
    return row


def recording_of(gateway: Gateway, user: str) -> tuple[dict[str, Any], Path]:
    sess = shell_session_of(gateway, user)
    assert sess["recording"], sess
    path = Path(sess["recording"])
    assert wait_until(path.exists, timeout=60), f"{path} was never written"
    return sess, path


def load_cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """Parse an asciicast v2 file strictly: a header object, then one event array per line."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "the recording ends in a partial line"
    lines = raw.decode("utf-8").split("\n")[:-1]
    header = json.loads(lines[0])
    assert isinstance(header, dict) and header["version"] == 2, header
    events = [json.loads(line) for line in lines[1:]]
    for ev in events:
        assert isinstance(ev, list) and len(ev) == 3, ev
        assert isinstance(ev[0], float | int) and ev[1] in ("o", "i", "r"), ev
        assert isinstance(ev[2], str), ev
    times = [ev[0] for ev in events]
    assert times == sorted(times)
    return header, events


def metric(gateway: Gateway, name: str) -> float:
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def warning_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "tightened" in ln]


# --- permissions ------------------------------------------------------------------------------


def test_data_dir_database_and_recordings_are_private_after_a_session(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory()
    c = make_container(busybox_image)
    user = user_for(gw, c)
    pty_session(gw, f"{user}+{c}", b"echo HF$((6*7))", b"HF42")
    assert gw.ssh(f"{user}+{c}", "echo plain").returncode == 0
    _, rec = recording_of(gw, user)

    data = gw.data_dir
    # The gateway is running: SQLite's WAL and shared-memory files are there too.
    files = db_files(data)
    assert data / "sshgw.db" in files
    for f in files:
        assert mode(f) == 0o600, f"{f}: {oct(mode(f))}"
    assert mode(data) == 0o700
    recordings = data / "recordings"
    assert mode(recordings) == 0o700
    assert mode(rec.parent) == 0o700
    assert mode(rec) == 0o600
    for key in data.glob("ssh_host_*_key"):
        assert mode(key) == 0o600
    assert_private_tree(data)

    gw.stop()  # the audit spool, if any, is written at shutdown
    assert_private_tree(data)
    for f in db_files(data):
        assert mode(f) == 0o600, f"{f}: {oct(mode(f))}"


def test_open_data_dir_and_database_are_tightened_at_start_with_one_warning(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory()
    gw.add_user(unique("hf"))
    gw.stop()
    data = gw.data_dir
    (data / "recordings").mkdir(exist_ok=True)
    os.chmod(data, 0o755)
    os.chmod(data / "recordings", 0o755)
    for f in db_files(data):
        os.chmod(f, 0o644)

    since = gw.log_size()
    gw.start()
    assert mode(data) == 0o700
    assert mode(data / "recordings") == 0o700
    for f in db_files(data):
        assert mode(f) == 0o600, f"{f}: {oct(mode(f))}"
    lines = warning_lines(gw.log(since))
    assert len(lines) == 1, gw.log(since)
    assert str(data) in lines[0] and "WARNING" in lines[0].upper(), lines[0]
    # Once tight, a restart says nothing.
    gw.stop()
    since = gw.log_size()
    gw.start()
    assert warning_lines(gw.log(since)) == []

    # `sshgw db upgrade` (an admin may run it before the first `serve`) tightens too.
    gw.stop()
    os.chmod(data, 0o755)
    for f in db_files(data):
        os.chmod(f, 0o644)
    res = gw.cli("db", "upgrade")
    assert mode(data) == 0o700
    for f in db_files(data):
        assert mode(f) == 0o600, f"{f}: {oct(mode(f))}"
    assert len(warning_lines(res.stderr)) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_cli_on_a_fresh_data_dir_creates_it_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSHGW_")}
    env["SSHGW_DATA_DIR"] = str(data)

    def sshgw(*args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        return res

    res = sshgw("user", "add", "hfcli")
    assert warning_lines(res.stderr) == []  # created tight: nothing to tighten
    assert mode(data) == 0o700
    assert data / "sshgw.db" in db_files(data)
    for f in db_files(data):
        assert mode(f) == 0o600, f"{f}: {oct(mode(f))}"
    sshgw("db", "upgrade")
    sshgw("hostkey", "show")
    assert_private_tree(data)


# --- recordings: size cap and free space ------------------------------------------------------


def test_recording_is_cut_at_the_cap_with_a_marker_and_the_session_is_complete(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory({"SSHGW_RECORDING_MAX_BYTES": str(CAP)})
    c = make_container(busybox_image)
    user = user_for(gw, c)
    n = 30000  # about 190 KB of output: three times the cap
    out = pty_session(gw, f"{user}+{c}", f"busybox seq 1 {n}; echo HF$((6*7))".encode(), b"HF42")

    # The client got every line: the cap is on the recording, never on the session.
    expected = b"\r\n".join(str(i).encode() for i in range(1, n + 1)) + b"\r\nHF42"
    assert expected in out, out[-500:]

    sess, path = recording_of(gw, user)
    assert sess["exit_status"] == 0 and sess["bytes_out"] > 2 * CAP, sess
    size = path.stat().st_size
    assert size <= CAP + MARKER_SLACK, size
    _, events = load_cast(path)
    assert events, "nothing recorded"
    markers = [ev for ev in events if "[sshgw: recording" in ev[2]]
    assert len(markers) == 1, markers
    assert events[-1] is markers[0]
    assert events[-1][1] == "o"
    assert f"recording truncated at {CAP} bytes" in events[-1][2]
    text = "".join(ev[2] for ev in events[:-1] if ev[1] == "o")
    assert "1\r\n2\r\n3\r\n" in text  # the start of the session is there
    assert "HF42" not in text  # nothing after the cap
    assert not list(path.parent.glob("*.part")), "a spool was left behind"

    # It plays: sshgw's own player reads it to the end, marker included.
    played = gw.cli("replay", sess["id"], "--speed", "1000", timeout=300)
    assert "recording truncated" in played.stdout
    assert "Traceback" not in played.stderr


def test_low_disk_space_records_no_data_and_says_so(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory({"SSHGW_RECORDING_MIN_FREE": str(1 << 60)})
    c = make_container(busybox_image)
    user = user_for(gw, c)
    errors_before = metric(gw, "sshgw_recording_errors_total")
    out = pty_session(gw, f"{user}+{c}", b"echo HF$((6*7))", b"HF42")
    assert b"HF42" in out  # the session itself works

    sess, path = recording_of(gw, user)
    assert sess["exit_status"] == 0, sess
    _, events = load_cast(path)
    assert len(events) == 1, events
    assert events[0][1] == "o"
    assert "recording stopped: low disk space" in events[0][2]
    assert "HF" not in path.read_text(encoding="utf-8")
    assert path.stat().st_size <= MARKER_SLACK + 512  # header + marker

    # Visible to the admin: the recording-error metric and the audit trail.
    assert metric(gw, "sshgw_recording_errors_total") >= errors_before + 1
    trail = json.loads(gw.cli("audit", "--user", user, "--json").stdout)
    stopped = [e for e in trail if e["kind"] == "recording.stopped"]
    assert len(stopped) == 1, trail
    assert "low disk space" in json.dumps(stopped[0]["detail"])
    assert stopped[0]["session_id"] == sess["id"]
