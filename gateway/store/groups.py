"""Groups and their members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gateway.errors import Conflict, NotFound
from gateway.store.db import Database, check_name
from gateway.store.models import Group, GroupMember, User


@dataclass(frozen=True)
class GroupInfo:
    name: str
    members: tuple[str, ...]
    created_at: datetime


class GroupsRepo(Database):
    """Groups and memberships."""

    async def add_group(self, name: str) -> None:
        check_name("group", name)
        async with self._tx() as s:
            if await s.scalar(sa.select(Group.id).where(Group.name == name)) is not None:
                raise Conflict(f"group {name} already exists")
            s.add(Group(name=name))

    async def list_groups(self) -> list[GroupInfo]:
        async with self._guard(), self.sessionmaker() as s:
            groups = list((await s.scalars(sa.select(Group).order_by(Group.name))).all())
            members: dict[int, list[str]] = {}
            rows = await s.execute(
                sa.select(GroupMember.group_id, User.name)
                .join(User, GroupMember.user_id == User.id)
                .order_by(User.name)
            )
            for gid, uname in rows.all():
                members.setdefault(gid, []).append(uname)
        return [GroupInfo(g.name, tuple(members.get(g.id, ())), g.created_at) for g in groups]

    async def remove_group(self, name: str) -> None:
        """Remove the group with its memberships and grants."""
        async with self._tx() as s:
            gid = await self._group_id(s, name)
            await s.execute(sa.delete(Group).where(Group.id == gid))

    async def add_member(self, group: str, user: str) -> None:
        async with self._tx() as s:
            gid = await self._group_id(s, group)
            uid = await self._user_id(s, user)
            exists = await s.scalar(
                sa.select(sa.func.count())
                .select_from(GroupMember)
                .where(GroupMember.group_id == gid, GroupMember.user_id == uid)
            )
            if exists:
                raise Conflict(f"user {user} is already a member of group {group}")
            s.add(GroupMember(group_id=gid, user_id=uid))

    async def remove_member(self, group: str, user: str) -> None:
        async with self._tx() as s:
            gid = await self._group_id(s, group)
            uid = await self._user_id(s, user)
            result = await s.execute(
                sa.delete(GroupMember).where(
                    GroupMember.group_id == gid, GroupMember.user_id == uid
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"user {user} is not a member of group {group}")
