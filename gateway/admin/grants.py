"""Grants: who may reach which containers, with which rights and logins (the rules of a grant
are :func:`gateway.policy.check_grant`'s)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Unpack

from gateway.admin.common import Actor, pick, record
from gateway.errors import InvalidInput
from gateway.policy import Grant, GrantFields, Right, format_ports
from gateway.store import Store

FORWARD_NO_PORTS = "without --ports the 'forward' right allows no port"


def grant_view(g: Grant) -> dict[str, Any]:
    return {
        **pick(g, "id user group target"),
        "labels": dict(g.labels),
        "rights": sorted(g.rights),
        "logins": list(g.logins),
        "paths": list(g.paths),
        "ports": format_ports(g.ports),
        "engine": g.engine,
        **pick(g, "expires_at record"),
    }


def labels_of(values: list[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` (VALUE may be a glob) as pairs."""
    out = []
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise InvalidInput(f"invalid --label {v!r}: use KEY=VALUE (VALUE may be a glob)")
        out.append((key, value))
    return out


def notes(grant: Grant) -> list[str]:
    """What an administrator should know about a grant just made."""
    return [FORWARD_NO_PORTS] if Right.FORWARD in grant.rights and not grant.ports else []


async def add_grant(
    store: Store,
    actor: Actor,
    *,
    expires_at: datetime | None = None,
    record_pty: bool = True,
    **fields: Unpack[GrantFields],
) -> Grant:
    """Grant a user or a group rights on containers; the grant as stored."""
    gid = await store.add_grant(expires_at=expires_at, record=record_pty, **fields)
    grant = await store.get_grant(gid)
    await record(store, actor, "grant.add", **grant_view(grant))
    return grant


async def remove_grant(store: Store, actor: Actor, grant_id: int) -> Grant:
    """Remove a grant by id; the grant it was."""
    grant = await store.get_grant(grant_id)
    await store.remove_grant(grant_id)
    await record(store, actor, "grant.remove", **grant_view(grant))
    return grant
