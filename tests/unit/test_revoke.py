"""Which database states revoke a live connection (``gateway.observe.revoke.revocation``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.observe.revoke import LiveConn, revocation
from gateway.store import AuthKey, AuthUser

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def conn(
    method: str = "publickey", key: str | None = "SHA256:a", pw: str | None = None
) -> LiveConn:
    return LiveConn("c1", "alice", "1.2.3.4:5", method, key, pw, lambda: None)


def user(
    disabled: bool = False,
    keys: tuple[AuthKey, ...] = (AuthKey("SHA256:a", "ssh-ed25519 AAAA", None),),
    pw: str | None = "$argon2id$x",
) -> AuthUser:
    return AuthUser("alice", disabled, pw, keys, frozenset())


def test_valid_key_and_password_connections_stay() -> None:
    assert revocation(conn(), user(), NOW) is None
    assert revocation(conn("password", None, "$argon2id$x"), user(), NOW) is None


def test_user_removed_or_disabled() -> None:
    assert revocation(conn(), None, NOW) == "user removed"
    assert revocation(conn("password", None, "$argon2id$x"), user(disabled=True), NOW) == (
        "user disabled"
    )


def test_key_removed_or_expired_only_for_that_key() -> None:
    other = (AuthKey("SHA256:b", "ssh-ed25519 BBBB", None),)
    assert revocation(conn(), user(keys=other), NOW) == "key removed"
    assert revocation(conn(key="SHA256:b"), user(keys=other), NOW) is None
    expired = (AuthKey("SHA256:a", "ssh-ed25519 AAAA", NOW - timedelta(seconds=1)),)
    assert revocation(conn(), user(keys=expired), NOW) == "key expired"
    assert revocation(conn(key=None), user(), NOW) == "key removed"


def test_password_changed_or_cleared() -> None:
    c = conn("password", None, "$argon2id$x")
    assert revocation(c, user(pw="$argon2id$y"), NOW) == "password changed"
    assert revocation(c, user(pw=None), NOW) == "password changed"


def test_unknown_method_is_not_trusted() -> None:
    assert revocation(conn("hostbased", None), user(), NOW) is not None
