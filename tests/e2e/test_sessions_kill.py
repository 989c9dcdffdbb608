"""Live sessions: `sshgw sessions --active` sees a running command and `sshgw sessions kill`
ends it from another process while the user watches."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.helpers import Gateway, has_process, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def active_sessions(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    res = gateway.cli("sessions", "--active", "--user", user, "--json")
    return list(json.loads(res.stdout))


def test_kill_ends_a_running_command(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("kl")
    gateway.add_user(user)
    gateway.grant(c, user=user, rights="shell,exec", logins="app")
    proc = subprocess.Popen(
        gateway.ssh_cmd(f"{user}+{c}", "sleep 100"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: len(active_sessions(gateway, user)) == 1, timeout=60), (
            "the session never showed up as active"
        )
        (sess,) = active_sessions(gateway, user)
        assert sess["kind"] == "exec"
        assert sess["command"] == "sleep 100"
        assert sess["container"] == c
        assert sess["login"] == "app"
        assert wait_until(lambda: has_process(c, r"sleep 100\b"), timeout=30)

        res = gateway.cli("sessions", "kill", sess["id"][:10])
        assert f"session {sess['id']} ended: killed" in res.stdout

        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        text = err.decode("utf-8", "replace")
        assert "administrator" in text, text
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert wait_until(lambda: not has_process(c, r"sleep 100\b"), timeout=30), (
        "the killed command lives on in the container"
    )
    assert active_sessions(gateway, user) == []

    shown = json.loads(gateway.cli("sessions", "show", sess["id"], "--json").stdout)
    assert shown["end_reason"] == "killed"
    assert shown["ended_at"] is not None
    assert shown["kill_requested"] is True

    # The kill is an admin change in the audit trail.
    events = json.loads(gateway.cli("audit", "--kind", "admin", "--user", user, "--json").stdout)
    kills = [e for e in events if e["detail"].get("action") == "session.kill"]
    assert len(kills) == 1
    assert kills[0]["session_id"] == sess["id"]
    assert kills[0]["actor"]


def test_kill_unknown_and_ended_sessions_are_clear_errors(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    res = gateway.cli("sessions", "kill", "0123456789abcdef", check=False)
    assert res.returncode != 0
    assert res.stderr.strip() == "error: no such session: 0123456789abcdef"

    c = make_container(busybox_image)
    user = unique("ke")
    gateway.add_user(user)
    gateway.grant(c, user=user, rights="exec", logins="app")
    assert gateway.ssh(f"{user}+{c}", "true").returncode == 0
    sessions = json.loads(gateway.cli("sessions", "--user", user, "--json").stdout)
    assert len(sessions) == 1
    res = gateway.cli("sessions", "kill", sessions[0]["id"], check=False)
    assert res.returncode != 0
    assert "already ended" in res.stderr
    assert "Traceback" not in res.stderr
