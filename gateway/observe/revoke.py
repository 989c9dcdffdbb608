"""Revocation: is what a live connection authenticated with still valid?

A connection authenticates once, but an administrator may disable or remove its user, remove
its key or change its password while it stays open (OpenSSH's ControlPersist keeps one for
hours). Every new channel re-checks this (``Observer.recheck``), and the observer's poller reads
the same state from the database every second and ends the connections it no longer covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.store import AuthUser


@dataclass(slots=True)
class LiveConn:
    """One authenticated connection: who, and with which credential."""

    conn_id: str
    user: str
    remote: str
    method: str  # "publickey" | "password" | ...
    key: str | None  # the key's SHA256 fingerprint (publickey)
    password_hash: str | None  # the stored hash the password was checked against (password)
    close: Callable[[], None]
    revoked: str | None = None  # why, once revoked


def revocation(conn: LiveConn, user: AuthUser | None, now: datetime | None = None) -> str | None:
    """Why ``conn`` is no longer authorized by ``user`` (its current database state), or None."""
    if user is None:
        return "user removed"
    if user.disabled:
        return "user disabled"
    if conn.method == "publickey":
        key = user.key(conn.key) if conn.key else None
        if key is None:
            return "key removed"
        if key.expired(now):
            return "key expired"
        return None
    if conn.method == "password":
        if not user.password_hash or user.password_hash != conn.password_hash:
            return "password changed"
        return None
    return f"authentication method {conn.method or 'unknown'} is not re-checked"
