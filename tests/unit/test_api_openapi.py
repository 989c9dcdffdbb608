"""The admin API's pure parts: the OpenAPI document made from the route table, the models that
describe gateway.admin's JSON views, and the dates administrators type."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.admin.audit import event_view
from gateway.admin.checks import CheckResult, check_view
from gateway.admin.containers import container_view
from gateway.admin.engines import engine_view
from gateway.admin.grants import grant_view
from gateway.admin.groups import group_view
from gateway.admin.keys import key_view
from gateway.admin.sessions import session_view, session_with_events_view
from gateway.admin.users import user_with_grants_view
from gateway.admin.when import parse_since, parse_when
from gateway.engines.base import Container, EngineState
from gateway.errors import InvalidInput
from gateway.policy import Decision, Grant
from gateway.store import AuditRecord, GroupInfo, KeyInfo, SessionRecord, UserInfo
from gateway.web.api import models as m
from gateway.web.api.base import PREFIX
from gateway.web.api.openapi import document
from gateway.web.api.routes import ROUTES

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SPEC = document(ROUTES, PREFIX)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_route_is_in_the_document() -> None:
    assert SPEC["openapi"] == "3.1.0"
    for route in ROUTES:
        op = SPEC["paths"][PREFIX + route.path][route.method.lower()]
        assert str(route.status) in op["responses"] and "default" in op["responses"]
        names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{(\w+)}", route.path))


def test_every_ref_resolves_and_names_are_valid() -> None:
    schemas = SPEC["components"]["schemas"]
    for ref in refs(SPEC):
        name = ref.removeprefix("#/components/schemas/")
        assert name in schemas, ref
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in schemas)


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for path in SPEC["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))


def test_only_the_document_is_public() -> None:
    public = [
        (path, method)
        for path, ops in SPEC["paths"].items()
        for method, op in ops.items()
        if op.get("security") == []
    ]
    assert public == [(PREFIX + "/openapi.json", "get")]
    assert SPEC["security"] == [{"bearer": []}]


# The views (also the CLI's --json) validate through the response models -------------------

KEY = KeyInfo("bob", "SHA256:x", "ssh-ed25519", "ssh-ed25519 AAAA c", "c", None, NOW, NOW)
GRANT = Grant(
    id=3, target="web*", rights=frozenset({"shell"}), user="bob", labels=(("env", "p*"),),
    logins=("app",), paths=("/srv",), expires_at=NOW,
)  # fmt: skip
SESSION = SessionRecord(
    id="0f" * 18, user_name="bob", container="web1", container_id="c" * 64, login="app",
    kind="shell", command=None, remote_addr="192.0.2.1", started_at=NOW, ended_at=None,
    bytes_in=0, bytes_out=0, exit_status=None, end_reason=None, recording_path=None,
    kill_requested=False, gateway_pid=1,
)  # fmt: skip
EVENT = AuditRecord(1, NOW, "admin", "token:ci", "bob", None, "192.0.2.1", None, {"a": [1]})


def test_views_fit_their_models() -> None:
    user = UserInfo("bob", None, False, True, NOW, (KEY,), ("ops",))
    m.UserDetail.model_validate(user_with_grants_view(user, [GRANT]))
    m.KeyOut.model_validate(key_view(KEY))
    m.GroupOut.model_validate(group_view(GroupInfo("ops", ("bob",), NOW)))
    m.GrantOut.model_validate(grant_view(GRANT))
    m.SessionOut.model_validate(session_view(SESSION, NOW))
    m.SessionDetail.model_validate(session_with_events_view(SESSION, [EVENT]))
    m.EventOut.model_validate(event_view(EVENT))
    m.EngineOut.model_validate(engine_view(EngineState("e1", "unix:///d.sock", "down", error="x")))
    m.ContainerOut.model_validate(
        container_view(Container("c" * 64, "web1", "busybox", "running", {"a": "b"}))
    )
    decision = Decision(False, "shell", "deny: no grant")
    m.CheckOut.model_validate(check_view(CheckResult("bob", "web1", decision, None, ["w"])))


# Dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["+999999w", "9999-12-31T23:59:59-23:59"])
def test_dates_out_of_range_are_one_line_not_a_crash(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_when(text, now=NOW)


def test_since_out_of_range_is_one_line() -> None:
    with pytest.raises(InvalidInput, match="invalid --since"):
        parse_since("9999999w", now=NOW)
    assert parse_since("2d", now=NOW) == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
