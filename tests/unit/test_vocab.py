"""The vocabularies (gateway.vocab): their values are what metrics, audit and the database hold."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, generate_latest

from gateway.vocab import DenyReason, EndReason, SessionKind


def test_values_are_the_stored_strings() -> None:
    # Rows written before the vocabularies existed hold these strings; they must not change.
    assert [k.value for k in SessionKind] == ["shell", "exec", "sftp", "scp", "list", "forward"]
    assert {r.value for r in EndReason} == {
        "exit",
        "client_gone",
        "container_gone",
        "killed",
        "revoked",
        "shutdown",
        "error",
    }
    assert {r.value for r in DenyReason} == {
        "no_grant",
        "right_missing",
        "login_not_allowed",
        "path_rule",
        "expired",
        "revoked",
        "port_not_allowed",
        "dest_not_allowed",
    }


def test_a_member_is_its_string_everywhere() -> None:
    kind = SessionKind.SCP
    assert kind == "scp" and str(kind) == "scp" and f"{kind}" == "scp"
    assert json.dumps({"reason": EndReason.CLIENT_GONE}) == '{"reason": "client_gone"}'
    assert SessionKind("sftp") is SessionKind.SFTP


def test_a_member_as_a_metric_label() -> None:
    registry = CollectorRegistry()
    c = Counter("t", "t", ["reason"], registry=registry)
    c.labels(reason=DenyReason.NO_GRANT).inc()
    assert b't_total{reason="no_grant"} 1.0' in generate_latest(registry)
