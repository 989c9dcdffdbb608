"""What a connection and a session show in a debugger or a log line (their state)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.routing import Target
from gateway.ssh.auth import Credential, LoginRequest
from gateway.ssh.channel import GatewaySession
from gateway.ssh.context import Identity
from gateway.ssh.server import GatewayConnection


def connection() -> GatewayConnection:
    gw: Any = SimpleNamespace(settings=SimpleNamespace(max_auth_tries=6))
    conn = GatewayConnection(gw)
    conn.conn_id = "3f2a0011aabb"
    return conn


def test_a_connection_shows_who_from_where_and_its_state() -> None:
    conn = connection()
    assert repr(conn) == "<GatewayConnection 3f2a… - [NEW]>"
    conn.conn = object()  # type: ignore[assignment]
    conn.remote = "127.0.0.1:5555"
    assert repr(conn) == "<GatewayConnection 3f2a… 127.0.0.1:5555 [REFUSED]>"
    conn._slot = True
    conn._login = LoginRequest("alice+web1", Target("alice", "web1"))
    assert repr(conn) == "<GatewayConnection 3f2a… alice@127.0.0.1:5555 [AUTHENTICATING]>"
    conn._slot = False
    conn.identity = Identity(
        "alice", frozenset(), Target("alice", "web1"), Credential("publickey", key="SHA256:k")
    )
    assert repr(conn) == "<GatewayConnection 3f2a… alice@127.0.0.1:5555 [AUTHENTICATED]>"
    conn._closed = True
    assert repr(conn) == "<GatewayConnection 3f2a… alice@127.0.0.1:5555 [CLOSED]>"


def test_a_session_shows_its_kind_target_and_state() -> None:
    conn = connection()
    conn.identity = Identity(
        "alice", frozenset(), Target("alice", "web1", "app"), Credential("password")
    )
    session = GatewaySession(conn)
    session.session_id = "9ab1" + "0" * 28
    assert repr(session) == "<GatewaySession 9ab1… session alice+web1+app [OPENING]>"
    session.kind = "exec"
    assert repr(session) == "<GatewaySession 9ab1… exec alice+web1+app [RUNNING]>"
    session._ended = True
    assert repr(session) == "<GatewaySession 9ab1… exec alice+web1+app [ENDED]>"
    session.gone.set()
    assert repr(session) == "<GatewaySession 9ab1… exec alice+web1+app [CLOSED]>"
