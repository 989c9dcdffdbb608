"""Sessions: the rows the gateway writes for every session, read by ``sshgw sessions``, and
the kill requests administrators leave on them for the gateway that runs the session."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import InvalidInput, NotFound
from gateway.store.audit import AUDIT, SESSIONS, AuditRecord
from gateway.store.db import Database

_SESSION_REF = re.compile(r"[0-9a-f-]{4,36}")


@dataclass(frozen=True)
class SessionRecord:
    """One row of the ``sessions`` table."""

    id: str
    user_name: str
    container: str
    container_id: str | None
    login: str | None
    kind: str
    command: str | None
    remote_addr: str | None
    started_at: datetime
    ended_at: datetime | None
    bytes_in: int
    bytes_out: int
    exit_status: int | None
    end_reason: str | None
    recording_path: str | None
    kill_requested: bool
    gateway_pid: int | None
    replica: str | None = None  # the replica that serves (served) it


def _session(row: Any) -> SessionRecord:
    return SessionRecord(**row._mapping)


class SessionsRepo(Database):
    """Session rows: listing, lookup by id prefix, kill requests."""

    async def list_sessions(
        self, *, active: bool = False, user: str | None = None, limit: int = 200
    ) -> list[SessionRecord]:
        """The newest ``limit`` sessions, newest first."""
        q = sa.select(SESSIONS)
        if active:
            q = q.where(SESSIONS.c.ended_at.is_(None))
        if user:
            q = q.where(SESSIONS.c.user_name == user)
        q = q.order_by(SESSIONS.c.started_at.desc()).limit(limit)

        async def read(conn: AsyncConnection) -> list[SessionRecord]:
            return [_session(r) for r in (await conn.execute(q)).all()]

        return await self._read(read)

    async def find_session(self, ref: str) -> SessionRecord:
        """A session by full id or unique prefix (at least 4 characters)."""
        ref = ref.strip().lower()
        if not _SESSION_REF.fullmatch(ref):
            raise InvalidInput(f"invalid session id {ref!r} (at least 4 hex digits)")

        async def read(conn: AsyncConnection) -> list[SessionRecord]:
            q = sa.select(SESSIONS).where(SESSIONS.c.id.like(ref + "%")).limit(2)
            return [_session(r) for r in (await conn.execute(q)).all()]

        rows = await self._read(read)
        if not rows:
            raise NotFound(f"no such session: {ref}")
        if len(rows) > 1:
            raise InvalidInput(f"session id prefix {ref!r} is ambiguous; give more digits")
        return rows[0]

    async def get_session(self, session_id: str) -> SessionRecord:
        async def read(conn: AsyncConnection) -> SessionRecord:
            q = sa.select(SESSIONS).where(SESSIONS.c.id == session_id)
            return _session((await conn.execute(q)).one())

        return await self._read(read)

    async def session_events(self, session_id: str, limit: int = 10_000) -> list[AuditRecord]:
        """The audit events of one session, oldest first."""
        q = (
            sa.select(AUDIT)
            .where(AUDIT.c.session_id == session_id)
            .order_by(AUDIT.c.id)
            .limit(limit)
        )

        async def read(conn: AsyncConnection) -> list[AuditRecord]:
            return [AuditRecord(**r._mapping) for r in (await conn.execute(q)).all()]

        return await self._read(read)

    async def request_kill(self, session_id: str) -> None:
        """Ask the gateway that runs the session to end it (it polls for these)."""
        async with self._guard(), self.engine.begin() as conn:
            await conn.execute(
                SESSIONS.update()
                .where(SESSIONS.c.id == session_id, SESSIONS.c.ended_at.is_(None))
                .values(kill_requested=True)
            )

    async def force_end(self, session_id: str, reason: str = "killed (forced)") -> None:
        """Mark a session ended that no gateway ends (the one that ran it is gone)."""
        async with self._guard(), self.engine.begin() as conn:
            await conn.execute(
                SESSIONS.update()
                .where(SESSIONS.c.id == session_id, SESSIONS.c.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC), end_reason=reason)
            )

    async def kill_requested(self, replica: str | None = None) -> list[str]:
        """Ids of the running sessions an administrator asked to end (on ``replica`` only,
        when given)."""
        q = sa.select(SESSIONS.c.id).where(
            SESSIONS.c.kill_requested == sa.true(), SESSIONS.c.ended_at.is_(None)
        )
        if replica is not None:
            q = q.where(SESSIONS.c.replica == replica)

        async def read(conn: AsyncConnection) -> list[str]:
            return [row[0] for row in await conn.execute(q)]

        return await self._read(read)
