"""Replicas: the heartbeat rows of running gateways, and the sessions of those that died.

Every gateway process (a *replica*) keeps one ``replicas`` row fresh (:meth:`ReplicasRepo.
replica_beat`). On its own beat each replica also ends, in the database, the live sessions of
replicas whose row has gone stale (:meth:`ReplicasRepo.mark_lost`): one ``UPDATE … RETURNING``
takes exactly the rows it changed, so two replicas doing it at once end (and audit) each session
once. Times are the database's clock on PostgreSQL (replicas on several hosts compare against
one clock), the process's own on SQLite (one host).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.audit import AUDIT, SESSIONS
from gateway.store.db import Database
from gateway.store.models import ReplicaRow, utcnow

REPLICAS = cast(sa.Table, ReplicaRow.__table__)

#: ``sessions.end_reason`` of a session whose replica stopped sending heartbeats.
LOST = "gateway_lost"


def db_now(dialect: str) -> Any:
    """Now, on the database's clock where the database has one worth sharing."""
    return sa.func.now() if dialect == "postgresql" else utcnow()


def db_ago(dialect: str, seconds: float) -> Any:
    """``seconds`` before :func:`db_now`."""
    if dialect == "postgresql":
        return sa.func.now() - sa.literal(timedelta(seconds=seconds), sa.Interval())
    return utcnow() - timedelta(seconds=seconds)


@dataclass(frozen=True)
class ReplicaRecord:
    """One row of the ``replicas`` table."""

    name: str
    address: str | None
    pid: int | None
    started_at: datetime
    last_seen: datetime
    draining: bool


@dataclass(frozen=True)
class LostSession:
    """A live session marked ended because its replica is gone."""

    id: str
    user_name: str
    container: str
    remote_addr: str | None
    replica: str


class ReplicasRepo(Database):
    """Heartbeats, and ending the sessions of replicas that stopped sending them."""

    async def replica_beat(
        self,
        name: str,
        *,
        address: str | None,
        pid: int,
        started_at: datetime,
        draining: bool = False,
    ) -> bool:
        """Refresh (or create) the replica's row. False when there was no row: the first beat,
        or the others found this replica stale and removed it."""
        values = {"address": address, "pid": pid, "draining": draining}
        now = db_now(self.dialect)
        async with self._guard(), self.engine.begin() as conn:
            res = await conn.execute(
                REPLICAS.update().where(REPLICAS.c.name == name).values(last_seen=now, **values)
            )
            if res.rowcount:
                return True
            await conn.execute(
                REPLICAS.insert().values(name=name, started_at=started_at, last_seen=now, **values)
            )
            return False

    async def replica_leave(self, name: str) -> None:
        """The replica stops cleanly: its row goes (its sessions were ended already)."""
        async with self._guard(), self.engine.begin() as conn:
            await conn.execute(REPLICAS.delete().where(REPLICAS.c.name == name))

    async def replicas(self) -> list[ReplicaRecord]:
        async def read(conn: AsyncConnection) -> list[ReplicaRecord]:
            rows = await conn.execute(sa.select(REPLICAS).order_by(REPLICAS.c.name))
            return [ReplicaRecord(**r._mapping) for r in rows]

        return await self._read(read)

    async def replica_alive(self, name: str, bound: float) -> bool:
        """Whether ``name`` sent a heartbeat within the last ``bound`` seconds."""
        q = sa.select(REPLICAS.c.name).where(
            REPLICAS.c.name == name, REPLICAS.c.last_seen >= db_ago(self.dialect, bound)
        )

        async def read(conn: AsyncConnection) -> bool:
            return (await conn.execute(q)).first() is not None

        return await self._read(read)

    async def mark_lost(self, me: str, bound: float) -> list[LostSession]:
        """End the live sessions of every other replica silent for ``bound`` seconds, audit
        each, and remove those replicas' rows; all in one transaction. Returns the sessions
        this call ended (none that another replica ended first)."""
        stale = sa.select(REPLICAS.c.name).where(
            REPLICAS.c.name != me, REPLICAS.c.last_seen < db_ago(self.dialect, bound)
        )
        async with self._guard(), self.engine.begin() as conn:
            lost = await self._end_sessions(conn, SESSIONS.c.replica.in_(stale), me)
            gone = await conn.execute(
                REPLICAS.delete()
                .where(REPLICAS.c.name != me, REPLICAS.c.last_seen < db_ago(self.dialect, bound))
                .returning(REPLICAS.c.name, REPLICAS.c.last_seen)
            )
            events = [
                _event(
                    "replica.lost",
                    None,
                    None,
                    None,
                    None,
                    {"replica": name, "last_seen": last.isoformat(), "marked_by": me},
                )
                for name, last in gone.all()
            ]
            if events:
                await conn.execute(AUDIT.insert(), events)
            return lost

    async def end_orphans(self, me: str) -> list[LostSession]:
        """At start: sessions left open under this replica's own name by an earlier process
        of that name (``SSHGW_REPLICA_NAME`` set) ended without telling anyone."""
        async with self._guard(), self.engine.begin() as conn:
            return await self._end_sessions(conn, SESSIONS.c.replica == me, me)

    async def reopen_lost(self, me: str, ids: Sequence[str]) -> int:
        """This replica was taken for dead (it sent no heartbeat for too long) but its sessions
        ``ids`` still run: they are live again. Returns how many rows were reopened."""
        if not ids:
            return 0
        async with self._guard(), self.engine.begin() as conn:
            res = await conn.execute(
                SESSIONS.update()
                .where(
                    SESSIONS.c.id.in_(list(ids)),
                    SESSIONS.c.replica == me,
                    SESSIONS.c.end_reason == LOST,
                )
                .values(ended_at=None, end_reason=None)
            )
            return int(res.rowcount or 0)

    async def _end_sessions(
        self, conn: AsyncConnection, which: sa.ColumnElement[bool], me: str
    ) -> list[LostSession]:
        res = await conn.execute(
            SESSIONS.update()
            .where(SESSIONS.c.ended_at.is_(None), which)
            .values(ended_at=db_now(self.dialect), end_reason=LOST)
            .returning(
                SESSIONS.c.id,
                SESSIONS.c.user_name,
                SESSIONS.c.container,
                SESSIONS.c.remote_addr,
                SESSIONS.c.replica,
            )
        )
        lost = [LostSession(*row) for row in res.all()]
        if lost:
            await conn.execute(
                AUDIT.insert(),
                [
                    _event(
                        "session.end",
                        s.user_name,
                        s.container or None,
                        s.remote_addr,
                        s.id,
                        {"reason": LOST, "replica": s.replica, "marked_by": me},
                    )
                    for s in lost
                ],
            )
        return lost


def _event(
    kind: str,
    user: str | None,
    container: str | None,
    remote: str | None,
    session_id: str | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    return {
        "ts": utcnow(),
        "kind": kind,
        "actor": None,
        "user_name": user,
        "container": container,
        "remote_addr": remote,
        "session_id": session_id,
        "detail": detail,
    }
