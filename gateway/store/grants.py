"""Grants: stored rows to :class:`gateway.policy.Grant` values and back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Unpack

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import NotFound
from gateway.policy import Grant, GrantFields, check_grant, format_ports, parse_ports
from gateway.store.db import Database
from gateway.store.models import GrantRow, Group, GroupMember, User, as_utc


def _split(text: str | None, sep: str) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(p for p in text.split(sep) if p)


def _grant_from_row(row: Any) -> Grant:
    labels = row.labels or {}
    if isinstance(labels, str):  # some drivers hand JSON back as text
        labels = json.loads(labels)
    return Grant(
        id=int(row.id),
        target=row.target,
        rights=frozenset(_split(row.rights, ",")),
        user=row.user_name,
        group=row.group_name,
        labels=tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())),
        logins=_split(row.logins, ","),
        paths=_split(row.paths, "\n"),
        expires_at=row.expires_at,
        record=bool(row.record),
        ports=parse_ports(row.ports or ""),
        engine=row.engine or "*",
    )


def _grant_select() -> sa.Select[Any]:
    u = User.__table__.alias("gu")
    g = Group.__table__.alias("gg")
    gr = GrantRow.__table__
    return (
        sa.select(
            gr.c.id,
            gr.c.target,
            gr.c.labels,
            gr.c.rights,
            gr.c.logins,
            gr.c.paths,
            gr.c.expires_at,
            gr.c.record,
            gr.c.ports,
            gr.c.engine,
            u.c.name.label("user_name"),
            g.c.name.label("group_name"),
        )
        .select_from(gr.outerjoin(u, gr.c.user_id == u.c.id).outerjoin(g, gr.c.group_id == g.c.id))
        .order_by(gr.c.id)
    )


class GrantsRepo(Database):
    """Grants of users and groups."""

    async def grants_for(self, user: str) -> list[Grant]:
        """Grants of the user and of the user's groups (expired ones included), by id."""
        member_groups = (
            sa.select(GroupMember.group_id)
            .join(User, GroupMember.user_id == User.id)
            .where(User.name == user)
        )
        gr = GrantRow.__table__
        u_ids = sa.select(User.id).where(User.name == user).scalar_subquery()
        query = _grant_select().where(
            sa.or_(gr.c.user_id == u_ids, gr.c.group_id.in_(member_groups))
        )

        async def q(conn: AsyncConnection) -> list[Grant]:
            return [_grant_from_row(r) for r in (await conn.execute(query)).all()]

        return await self._read(q)

    async def all_grants(self) -> list[Grant]:
        async def q(conn: AsyncConnection) -> list[Grant]:
            return [_grant_from_row(r) for r in (await conn.execute(_grant_select())).all()]

        return await self._read(q)

    async def add_grant(
        self,
        *,
        expires_at: datetime | None = None,
        record: bool = True,
        **fields: Unpack[GrantFields],
    ) -> int:
        """Add a grant for exactly one of ``user`` / ``group``; returns its id."""
        spec = check_grant(**fields)
        async with self._tx() as s:
            uid = await self._user_id(s, spec.user) if spec.user is not None else None
            gid = await self._group_id(s, spec.group) if spec.group is not None else None
            row = GrantRow(
                user_id=uid,
                group_id=gid,
                target=spec.target,
                labels=dict(spec.labels),
                rights=",".join(sorted(spec.rights)),
                logins=",".join(spec.logins),
                paths="\n".join(spec.paths),
                expires_at=as_utc(expires_at) if expires_at is not None else None,
                record=record,
                ports=format_ports(spec.ports),
                engine=spec.engine,
            )
            s.add(row)
            await s.flush()
            return int(row.id)

    async def get_grant(self, grant_id: int) -> Grant:
        async def q(conn: AsyncConnection) -> list[Grant]:
            rows = await conn.execute(_grant_select().where(GrantRow.__table__.c.id == grant_id))
            return [_grant_from_row(r) for r in rows.all()]

        found = await self._read(q)
        if not found:
            raise NotFound(f"no such grant: {grant_id}")
        return found[0]

    async def remove_grant(self, grant_id: int) -> None:
        async with self._tx() as s:
            result = await s.execute(sa.delete(GrantRow).where(GrantRow.id == grant_id))
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"no such grant: {grant_id}")
