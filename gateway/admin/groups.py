"""Groups of users, to grant access to many at once: add, remove, members."""

from __future__ import annotations

from typing import Any

from gateway.admin.common import Actor, pick, record
from gateway.store import GroupInfo, Store


def group_view(g: GroupInfo) -> dict[str, Any]:
    return {"name": g.name, "members": list(g.members), **pick(g, "created_at")}


async def add_group(store: Store, actor: Actor, name: str) -> None:
    await store.add_group(name)
    await record(store, actor, "group.add", group=name)


async def remove_group(store: Store, actor: Actor, name: str) -> None:
    """Remove a group with its memberships and grants."""
    await store.remove_group(name)
    await record(store, actor, "group.remove", group=name)


async def add_member(store: Store, actor: Actor, group: str, user: str) -> None:
    await store.add_member(group, user)
    await record(store, actor, "group.member.add", group=group, user=user)


async def remove_member(store: Store, actor: Actor, group: str, user: str) -> None:
    await store.remove_member(group, user)
    await record(store, actor, "group.member.remove", group=group, user=user)
