"""The audit trail of a running gateway, read back with `sshgw audit`: logins (success and
failure), session start/end with bytes and exit status, access denials and admin changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.helpers import Gateway, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def audit(gateway: Gateway, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(gateway.cli("audit", "--json", *args).stdout))


def test_audit_shows_logins_sessions_denials_and_admin_changes(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    other = make_container(busybox_image)
    user = unique("au")
    gateway.add_user(user)
    gateway.grant(c, user=user, rights="exec", logins="app")

    res = gateway.ssh(f"{user}+{c}", "cat; echo err >&2", input=bytes(range(256)) * 4)
    assert res.returncode == 0 and len(res.stdout) == 1024
    assert gateway.ssh(f"{user}+{c}", "exit 3").returncode == 3
    assert gateway.ssh(f"{user}+{c}", "true", key=gateway.stranger_key).returncode == 255
    assert gateway.ssh(f"{user}+{other}", "true").returncode != 0  # no grant there

    def complete() -> bool:
        kinds = [e["kind"] for e in audit(gateway, "--user", user)]
        return kinds.count("session.end") == 2 and "denied" in kinds

    assert wait_until(complete, timeout=60, interval=0.5), audit(gateway, "--user", user)
    events = audit(gateway, "--user", user)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(e["kind"], []).append(e)
        assert e["user"] == user

    # Admin changes made through the CLI, with who did them.
    actions = [e["detail"]["action"] for e in by_kind["admin"]]
    assert "user.add" in actions and "grant.add" in actions
    assert all(e["actor"] for e in by_kind["admin"])

    # Logins: successes by public key and the refused stranger key, with the remote address.
    logins = by_kind["login"]
    ok = [e for e in logins if e["detail"]["result"] == "success"]
    bad = [e for e in logins if e["detail"]["result"] == "failure"]
    assert len(ok) == 3  # two sessions + the denied attempt
    assert all(e["detail"]["method"] == "publickey" for e in ok)
    assert bad and bad[0]["remote"].startswith("127.0.0.1:")

    # Sessions: start and end, with command, bytes and exit status.
    starts = by_kind["session.start"]
    assert [s["detail"]["command"] for s in starts] == ["cat; echo err >&2", "exit 3"]
    assert all(s["container"] == c and s["detail"]["login"] == "app" for s in starts)
    ends = {e["detail"]["command"]: e for e in by_kind["session.end"]}
    cat = ends["cat; echo err >&2"]["detail"]
    assert cat["bytes_in"] == 1024
    assert cat["bytes_out"] == 1024 + len(b"err\n")
    assert cat["exit_status"] == 0 and cat["reason"] == "exit"
    assert ends["exit 3"]["detail"]["exit_status"] == 3
    assert {e["session_id"] for e in by_kind["session.end"]} == {s["session_id"] for s in starts}

    # The denial names the container and the reason, never more than that.
    (denied,) = by_kind["denied"]
    assert denied["container"] == other
    assert denied["detail"]["reason"] == "no_grant"

    # Filters.
    assert {e["kind"] for e in audit(gateway, "--user", user, "--kind", "session")} == {
        "session.start",
        "session.end",
    }
    assert [e["kind"] for e in audit(gateway, "--user", user, "--container", other)] == ["denied"]
    assert len(audit(gateway, "--user", user, "--since", "1h")) == len(events)
    assert audit(gateway, "--user", user, "--since", "2099-01-01") == []
    sid = starts[0]["session_id"]
    assert {e["kind"] for e in audit(gateway, "--session", sid[:8])} == {
        "session.start",
        "session.end",
    }

    # The human table.
    text = gateway.cli("audit", "--user", user).stdout
    assert "session.start" in text and "login" in text and "denied" in text
    assert "user.add" in text

    # Sessions list agrees with the audit trail.
    sessions = json.loads(gateway.cli("sessions", "--user", user, "--json").stdout)
    assert {s["exit_status"] for s in sessions} == {0, 3}
    assert all(not s["active"] for s in sessions)


def test_bad_since_is_one_clear_error(gateway: Gateway) -> None:
    res = gateway.cli("audit", "--since", "yesterday-ish", check=False)
    assert res.returncode != 0
    assert res.stderr.startswith("error: invalid --since")
    assert "Traceback" not in res.stderr
