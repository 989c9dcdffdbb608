"""Users: add (with a password and a key), disable, enable, set or clear the password, remove."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.admin.common import Actor, pick, record
from gateway.admin.grants import grant_view
from gateway.errors import GatewayError
from gateway.policy import Grant
from gateway.store import Store, UserInfo, hash_password, parse_public_key


def user_view(u: UserInfo) -> dict[str, Any]:
    return {
        **pick(u, "name display disabled password=has_password created_at"),
        "groups": list(u.groups),
        "keys": [pick(k, "fingerprint algorithm comment expires_at last_used_at") for k in u.keys],
    }


def user_with_grants_view(u: UserInfo, grants: list[Grant]) -> dict[str, Any]:
    return {**user_view(u), "grants": [grant_view(g) for g in grants]}


# argon2 takes 64 MiB per hash: at most this many at once (API requests arrive together).
_HASHING = asyncio.Semaphore(2)


async def hashed(password: str | None) -> str | None:
    """The argon2 hash of ``password`` (64 MiB, off the event loop), or None."""
    if password is None:
        return None
    async with _HASHING:
        return await asyncio.to_thread(hash_password, password)


async def add_user(
    store: Store,
    actor: Actor,
    name: str,
    *,
    password: str | None = None,
    display: str | None = None,
    key: str | None = None,
) -> str | None:
    """Add a user, with a password and a public key (all or nothing); the key's fingerprint."""
    parsed = parse_public_key(key) if key is not None else None
    password_hash = await hashed(password)
    await store.add_user(name, password_hash=password_hash, display=display)
    await record(
        store, actor, "user.add", user=name, display=display, password=password is not None
    )
    if parsed is None:
        return None
    try:
        fp = await store.add_key(name, parsed.public_key)
    except GatewayError:
        await store.remove_user(name)  # all or nothing
        raise
    await record(store, actor, "key.add", user=name, fingerprint=fp)
    return fp


async def user_and_grants(store: Store, name: str) -> tuple[UserInfo, list[Grant]]:
    """One user and the grants that apply to them (their own and their groups')."""
    return await store.get_user(name), await store.grants_for(name)


async def set_disabled(store: Store, actor: Actor, name: str, disabled: bool) -> None:
    """Disable (no new logins or sessions; running gateways end the user's connections within
    seconds; keys and grants are kept) or enable a user."""
    await store.set_disabled(name, disabled)
    await record(store, actor, "user.disable" if disabled else "user.enable", user=name)


async def set_password(store: Store, actor: Actor, name: str, password: str | None) -> None:
    """Set a user's password, or clear it (None: keys only from now on)."""
    await store.set_password(name, await hashed(password))
    await record(store, actor, "user.passwd", user=name, password=password is not None)


async def remove_user(store: Store, actor: Actor, name: str) -> None:
    """Remove a user with their keys, memberships and grants; their connections end."""
    await store.remove_user(name)
    await record(store, actor, "user.remove", user=name)
