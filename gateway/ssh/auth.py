"""Authentication values: who a login name asks for, and what proved it.

asyncssh calls ``begin_auth`` once per user name, then ``validate_public_key`` /
``validate_password`` per attempt, then ``auth_completed`` without arguments. The connection
(:class:`gateway.ssh.server.GatewayConnection`) keeps the :class:`LoginRequest` of the current
user name and the :class:`Credential` the last successful check *returned*; ``auth_completed``
turns the two into the connection's :class:`~gateway.ssh.context.Identity`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.errors import BadLogin, StoreUnavailable
from gateway.routing import Target, parse_login

if TYPE_CHECKING:
    from gateway.store import AuthUser, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credential:
    """What authenticated the connection; re-checked while it lives (revocation)."""

    method: str  # "publickey" or "password"
    key: str | None = None  # the accepted key's SHA256 fingerprint
    password_hash: str | None = None  # the stored hash the password was checked against


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """A user name as the client sent it, parsed, with the gateway user it names (if any)."""

    name: str
    target: Target | None = None  # None: the name does not parse
    user: AuthUser | None = None  # None: no such user (or the database was unreachable)

    @property
    def usable(self) -> AuthUser | None:
        """The user, unless unknown or disabled."""
        user = self.user
        if user is None or user.disabled:
            return None
        return user

    @property
    def user_name(self) -> str | None:
        """The gateway user the attempts are for, as audited (None when the name does not parse)."""
        return self.target.user if self.target is not None else None

    @property
    def throttle_name(self) -> str:
        """The name failures are throttled by (the raw name, bounded, when it does not parse)."""
        return self.target.user if self.target is not None else self.name[:64]


async def begin_login(store: Store, conn_id: str, name: str) -> tuple[LoginRequest, str | None]:
    """Parse ``name`` and look its user up: the request, and a banner line for the client."""
    try:
        target = parse_login(name)
    except BadLogin as exc:
        return LoginRequest(name), f"sshgw: {exc.user_message} (expected USER+CONTAINER[+LOGIN])"
    try:
        user = await store.auth_user(target.user)
    except StoreUnavailable:
        log.error("conn %s: database unavailable during authentication", conn_id)
        return (
            LoginRequest(name, target),
            "sshgw: the gateway cannot reach its database; try again later",
        )
    return LoginRequest(name, target, user), None


def key_credential(login: LoginRequest | None, fingerprint: str) -> Credential | None:
    """The credential a public key gives: one of the user's keys, not expired."""
    user = login.usable if login is not None else None
    if user is None:
        return None
    key = user.key(fingerprint)
    if key is None or key.expired():
        return None
    return Credential("publickey", key=fingerprint)


def password_credential(user: AuthUser | None, matched: bool) -> Credential | None:
    """The credential a password gives once checked against ``user``'s stored hash."""
    if not matched or user is None:
        return None
    return Credential("password", password_hash=user.password_hash)
