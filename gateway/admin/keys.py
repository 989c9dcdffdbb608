"""Users' SSH public keys: add, remove (by fingerprint)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.admin.common import Actor, pick, record
from gateway.errors import NotFound
from gateway.store import KeyInfo, ParsedKey, Store, parse_public_key


def key_view(k: KeyInfo) -> dict[str, Any]:
    return pick(
        k, "user fingerprint algorithm comment public_key expires_at last_used_at created_at"
    )


def fingerprint_of(text: str) -> str:
    """``SHA256:...`` as ``key list`` shows it; the prefix may be left out."""
    text = text.strip()
    return text if text.startswith("SHA256:") else "SHA256:" + text


async def add_key(
    store: Store,
    actor: Actor,
    user: str,
    key: str,
    *,
    comment: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ParsedKey]:
    """Add a public key (OpenSSH or RFC 4716 text) to ``user``; its fingerprint and the key."""
    parsed = parse_public_key(key, comment)
    fp = await store.add_key(user, parsed.public_key, expires_at=expires_at)
    await record(
        store,
        actor,
        "key.add",
        user=user,
        fingerprint=fp,
        comment=parsed.comment,
        expires_at=expires_at,
    )
    return fp, parsed


async def remove_key(
    store: Store, actor: Actor, fingerprint: str, user: str | None = None
) -> tuple[str, str]:
    """Remove a key (of ``user``, when given); (its fingerprint, the user who had it).
    Connections that logged in with it end."""
    fingerprint = fingerprint_of(fingerprint)
    if user is not None and all(k.fingerprint != fingerprint for k in await store.list_keys(user)):
        raise NotFound(f"user {user} has no key {fingerprint}")
    owner = await store.remove_key(fingerprint)
    await record(store, actor, "key.remove", user=owner, fingerprint=fingerprint)
    return fingerprint, owner
