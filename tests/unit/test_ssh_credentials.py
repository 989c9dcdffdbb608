"""Authentication values (gateway.ssh.auth): a check returns the credential, or None."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.errors import StoreUnavailable
from gateway.routing import Target
from gateway.ssh.auth import (
    Credential,
    LoginRequest,
    begin_login,
    key_credential,
    password_credential,
)
from gateway.store import AuthKey, AuthUser

PAST = datetime.now(UTC) - timedelta(days=1)
FUTURE = datetime.now(UTC) + timedelta(days=1)


def user(disabled: bool = False, *keys: AuthKey) -> AuthUser:
    return AuthUser("alice", disabled, "$argon2id$hash", keys, frozenset({"devs"}))


def login(u: AuthUser | None) -> LoginRequest:
    return LoginRequest("alice+web1", Target("alice", "web1"), u)


def key(fp: str, expires: datetime | None = None) -> AuthKey:
    return AuthKey(fp, "ssh-ed25519 AAAA", expires)


def test_a_known_live_key_gives_a_publickey_credential() -> None:
    u = user(False, key("SHA256:old", PAST), key("SHA256:a"), key("SHA256:b", FUTURE))
    assert key_credential(login(u), "SHA256:a") == Credential("publickey", key="SHA256:a")
    assert key_credential(login(u), "SHA256:b") == Credential("publickey", key="SHA256:b")
    assert key_credential(login(u), "SHA256:old") is None  # expired
    assert key_credential(login(u), "SHA256:other") is None


def test_no_credential_for_unknown_disabled_or_unparsed_users() -> None:
    assert key_credential(None, "SHA256:a") is None
    assert key_credential(login(None), "SHA256:a") is None
    assert key_credential(login(user(True, key("SHA256:a"))), "SHA256:a") is None
    assert key_credential(LoginRequest("bad name"), "SHA256:a") is None


def test_a_password_credential_carries_the_hash_it_was_checked_against() -> None:
    u = user()
    assert password_credential(u, True) == Credential("password", password_hash="$argon2id$hash")
    assert password_credential(u, False) is None
    assert password_credential(None, True) is None


def test_names_for_audit_and_throttling() -> None:
    assert login(None).user_name == "alice"
    assert LoginRequest("x" * 100).user_name is None
    assert LoginRequest("x" * 100).throttle_name == "x" * 64
    assert login(user(True)).usable is None


class _Store:
    def __init__(self, result: AuthUser | Exception | None) -> None:
        self.result = result
        self.asked: list[str] = []

    async def auth_user(self, name: str) -> AuthUser | None:
        self.asked.append(name)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_begin_login_parses_then_looks_the_user_up() -> None:
    store = _Store(user())
    req, banner = await begin_login(store, "c1", "alice+web1+app")  # type: ignore[arg-type]
    assert banner is None and store.asked == ["alice"]
    assert req.target == Target("alice", "web1", "app") and req.usable is not None
    req, banner = await begin_login(_Store(user()), "c1", "+++")  # type: ignore[arg-type]
    assert req.target is None and banner is not None and "expected USER+CONTAINER" in banner
    req, banner = await begin_login(_Store(StoreUnavailable("down")), "c1", "alice")  # type: ignore[arg-type]
    assert req.target == Target("alice") and req.user is None
    assert banner == "sshgw: the gateway cannot reach its database; try again later"
