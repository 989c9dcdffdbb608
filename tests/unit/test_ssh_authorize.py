"""Session rights and what a denied user is told (gateway.ssh.authorize), with fake grants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.engines import Container
from gateway.errors import AccessDenied, NoSuchContainer
from gateway.policy import Grant, Right
from gateway.routing import Target
from gateway.ssh.auth import Credential
from gateway.ssh.authorize import KIND_RIGHT, decide_access, decide_session, decide_write, denial
from gateway.ssh.context import Identity
from gateway.vocab import DenyReason

WEB = Container("c0ffee" * 10, "web1", "busybox:1", "running", {"team": "a"})


def ident(login: str | None = None, container: str = "web1") -> Identity:
    target = Target("alice", container, login)
    return Identity("alice", frozenset({"devs"}), target, Credential("publickey", key="SHA256:k"))


def grant(gid: int, rights: str, logins: tuple[str, ...] = (), **kw: Any) -> Grant:
    return Grant(gid, "web*", frozenset(rights.split(",")), user="alice", logins=logins, **kw)


def test_each_kind_needs_its_right() -> None:
    assert KIND_RIGHT == {
        "shell": Right.SHELL,
        "exec": Right.EXEC,
        "sftp": Right.SFTP_READ,
        "scp": Right.SFTP_READ,
    }


def test_allowed_with_the_default_login() -> None:
    d = decide_session(ident(), [grant(1, "shell,exec", ("app", "root"))], WEB, Right.EXEC)
    assert d.allowed and d.login == "app"


def test_no_grant_and_expired_look_like_no_such_container() -> None:
    d = decide_session(ident(), [], WEB, Right.SHELL)
    assert not d.allowed and d.reason is DenyReason.NO_GRANT
    err = denial(d, ident(container="web1.e2"), WEB)
    assert isinstance(err, NoSuchContainer)
    assert "web1.e2" in err.user_message  # the name the user typed
    old = grant(1, "shell", expires_at=datetime.now(UTC) - timedelta(days=1))
    d = decide_session(ident(), [old], WEB, Right.SHELL)
    assert d.reason is DenyReason.EXPIRED
    assert isinstance(denial(d, ident(), WEB), NoSuchContainer)


def test_a_missing_right_and_a_login_not_allowed_are_said() -> None:
    d = decide_session(ident(), [grant(1, "exec", ("app",))], WEB, Right.SHELL)
    err = denial(d, ident(), WEB)
    assert isinstance(err, AccessDenied)
    assert err.user_message == "access denied: you have no shell right on web1"
    d = decide_session(ident("root"), [grant(1, "shell", ("app",))], WEB, Right.SHELL)
    assert d.reason is DenyReason.LOGIN_NOT_ALLOWED
    err = denial(d, ident("root"), WEB)
    assert isinstance(err, AccessDenied)
    assert err.user_message == "access denied: login 'root' is not allowed on web1"


@pytest.mark.parametrize(
    ("grants", "writable", "paths"),
    [
        ([grant(1, "sftp-read", ("app",))], False, ()),
        ([grant(1, "sftp-read,sftp-write", ("app",))], True, ()),
        # A write grant for another login never makes this session writable.
        ([grant(1, "sftp-read", ("app",)), grant(2, "sftp-write", ("root",))], False, ()),
        # The write paths come from the write grant alone.
        (
            [grant(1, "sftp-read", ("app",)), grant(2, "sftp-write", ("app",), paths=("/srv",))],
            True,
            ("/srv",),
        ),
    ],
)
def test_writing_is_decided_for_the_sessions_own_login(
    grants: list[Grant], writable: bool, paths: tuple[str, ...]
) -> None:
    read = decide_session(ident(), grants, WEB, Right.SFTP_READ)
    assert read.allowed and read.login == "app"
    write = decide_write(ident(), grants, WEB, read)
    assert write.allowed is writable
    if writable:
        assert write.paths == paths


def test_check_and_a_session_decide_alike() -> None:
    # `sshgw check` asks decide_access what a session asks decide_session.
    grants = [grant(1, "shell", ("app",)), Grant(2, "web*", frozenset({"exec"}), group="devs")]
    for right in (Right.SHELL, Right.EXEC, Right.SFTP_READ):
        for login in (None, "app", "root"):
            s = decide_session(ident(login), grants, WEB, right)
            c = decide_access("alice", frozenset({"devs"}), grants, WEB, right, login)
            assert c == s


def test_a_container_by_name_only_is_matched_without_labels() -> None:
    labelled = Grant(1, "web*", frozenset({"shell"}), user="alice", labels=(("team", "a"),))
    assert decide_access("alice", frozenset(), [labelled], WEB, Right.SHELL, None).allowed
    d = decide_access("alice", frozenset(), [labelled], "web1", Right.SHELL, None)
    assert not d.allowed and d.reason is DenyReason.NO_GRANT


def test_a_disabled_user_is_denied_with_what_the_grants_say() -> None:
    d = decide_access(
        "alice", frozenset(), [grant(7, "shell")], WEB, Right.SHELL, None, disabled=True
    )
    assert not d.allowed and d.grant is not None and d.grant.id == 7
    assert d.message.startswith("deny: user alice is disabled (with the user enabled: allow")
