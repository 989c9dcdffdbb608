"""Session recordings: a real PTY session through OpenSSH is recorded as asciicast v2, plays in
asciinema's own player and through `sshgw replay`; the global and per-grant switches work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.helpers import Gateway, PtyProcess, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def shell_session(gateway: Gateway, login: str, resize: bool = False) -> None:
    env = dict(os.environ, TERM="xterm-256color")
    with PtyProcess(gateway.ssh_cmd(login, extra_opts=["-tt"]), rows=24, cols=80, env=env) as p:
        p.send(b"echo REC$((6*7))\r")
        p.read_until(b"REC42")
        if resize:
            # The window-change travels before the next keystrokes on the same channel.
            p.resize(30, 100)
            p.send(b"echo RS$((1+1))\r")
            p.read_until(b"RS2")
        p.send(b"exit\r")
        assert p.wait() == 0


def sessions_of(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    return list(json.loads(gateway.cli("sessions", "--user", user, "--json").stdout))


def recording_of(sess: dict[str, Any]) -> Path:
    """The session's asciicast file (written out right after the session ends)."""
    assert sess["recording"], sess
    path = Path(sess["recording"])
    assert wait_until(path.exists, timeout=30), f"{path} was never written"
    return path


def load_cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    events = [json.loads(line) for line in lines[1:]]
    return header, events


def setup(gateway: Gateway, container: str, record: bool = True) -> str:
    user = unique("rc")
    gateway.add_user(user)
    gateway.cli(
        "grant",
        "add",
        "--user",
        user,
        "--target",
        container,
        "--rights",
        "shell,exec",
        "--logins",
        "app",
        "--record" if record else "--no-record",
    )
    return user


def test_pty_session_is_recorded_as_asciicast_v2(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup(gateway, c)
    shell_session(gateway, f"{user}+{c}", resize=True)

    (sess,) = sessions_of(gateway, user)
    assert sess["kind"] == "shell"
    path = recording_of(sess)
    assert path.is_file()
    assert path.is_relative_to(gateway.data_dir / "recordings")
    assert path.stat().st_mode & 0o077 == 0

    header, events = load_cast(path)
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (80, 24)
    assert isinstance(header["timestamp"], int)
    assert header["env"]["TERM"] == "xterm-256color"
    for ev in events:
        assert len(ev) == 3 and isinstance(ev[0], float | int) and ev[1] in ("o", "r"), ev
        assert isinstance(ev[2], str)
    times = [ev[0] for ev in events]
    assert times == sorted(times)
    output = "".join(ev[2] for ev in events if ev[1] == "o")
    assert "REC42" in output
    assert ["r", "100x30"] in [ev[1:] for ev in events]
    assert not any(ev[1] == "i" for ev in events)  # input is off by default


@pytest.mark.skipif(shutil.which("asciinema") is None, reason="asciinema not installed")
def test_recording_plays_in_asciinema_and_sshgw_replay(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup(gateway, c)
    shell_session(gateway, f"{user}+{c}")
    (sess,) = sessions_of(gateway, user)
    recording_of(sess)

    res = subprocess.run(
        ["asciinema", "play", "--speed", "100", sess["recording"]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert b"REC42" in res.stdout
    res = subprocess.run(
        ["asciinema", "cat", sess["recording"]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and b"REC42" in res.stdout

    replay = gateway.cli("replay", sess["id"][:12], "--speed", "1000")
    assert "REC42" in replay.stdout
    shown = gateway.cli("sessions", "show", sess["id"]).stdout
    assert sess["recording"] in shown


def test_commands_without_pty_are_not_recorded(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup(gateway, c)
    assert gateway.ssh(f"{user}+{c}", "echo plain").returncode == 0
    (sess,) = sessions_of(gateway, user)
    assert sess["recording"] is None
    res = gateway.cli("replay", sess["id"], check=False)
    assert res.returncode != 0
    assert "has no recording" in res.stderr


def test_grant_switch_turns_recording_off(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup(gateway, c, record=False)
    shell_session(gateway, f"{user}+{c}")
    (sess,) = sessions_of(gateway, user)
    assert sess["kind"] == "shell"
    assert sess["recording"] is None


def test_global_switches(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    off = gateway_factory({"SSHGW_RECORDING": "false"})
    user = setup(off, c)
    shell_session(off, f"{user}+{c}")
    (sess,) = sessions_of(off, user)
    assert sess["recording"] is None
    assert not (off.data_dir / "recordings").exists()

    with_input = gateway_factory({"SSHGW_RECORD_INPUT": "true"})
    user = setup(with_input, c)
    shell_session(with_input, f"{user}+{c}")
    (sess,) = sessions_of(with_input, user)
    _, events = load_cast(recording_of(sess))
    typed = "".join(ev[2] for ev in events if ev[1] == "i")
    assert "echo REC$((6*7))" in typed
