"""API tokens of the admin API: add (shown once), list, remove."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.admin.common import Actor, pick, record
from gateway.store import Store
from gateway.store.tokens import TokenInfo, parse_scope


def token_view(t: TokenInfo) -> dict[str, Any]:
    """Everything about a token but the token (which is nowhere to be read)."""
    return pick(t, "name scope key_id created_by created_at expires_at last_used_at")


async def add_token(
    store: Store, actor: Actor, name: str, scope: str, expires_at: datetime | None = None
) -> tuple[str, TokenInfo]:
    """A new token (print it once: only its digest is kept) and its row."""
    token, info = await store.add_token(
        name, parse_scope(scope), expires_at=expires_at, created_by=actor.name
    )
    await record(
        store, actor, "token.add", token=name, scope=str(info.scope), expires_at=expires_at
    )
    return token, info


async def remove_token(store: Store, actor: Actor, name: str) -> None:
    """Remove a token: requests that carry it are refused (401) from now on."""
    await store.remove_token(name)
    await record(store, actor, "token.remove", token=name)
