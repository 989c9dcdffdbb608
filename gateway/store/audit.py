"""The audit trail: events (``audit_events``) and the session rows the gateway writes with them.

Administrative commands add events one at a time (:meth:`AuditRepo.add_audit_event`); the
gateway's audit writer hands its batches to :func:`write_records`, and :func:`transient` tells it
whether a failure means "the database is unreachable, retry" or "the database refused the data".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.db import Database
from gateway.store.models import AuditEvent, SessionRow, utcnow

AUDIT = cast(sa.Table, AuditEvent.__table__)
SESSIONS = cast(sa.Table, SessionRow.__table__)

AUDIT_COLUMNS = frozenset({"ts", "user_name", "container", "remote_addr", "session_id"})

#: What the audit writer writes through (the store's engine).
TrailEngine = AsyncEngine


class TrailRecord(Protocol):
    """One record of the audit writer: ``event`` (an audit_events row), ``session_start`` (a
    sessions row) or ``session_end`` (the end values of a sessions row)."""

    @property
    def op(self) -> str: ...

    @property
    def values(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class AuditRecord:
    """One row of the ``audit_events`` table."""

    id: int
    ts: datetime
    kind: str
    actor: str | None
    user_name: str | None
    container: str | None
    remote_addr: str | None
    session_id: str | None
    detail: dict[str, Any]


def transient(exc: BaseException) -> bool:
    """True when the database is unreachable (retry later), False when it refused the data."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    return isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError)


async def write_records(engine: TrailEngine, records: Sequence[TrailRecord]) -> None:
    """Write records in one transaction: session starts, then events, then session ends (a start
    always comes before its end in the buffer, so this order keeps them consistent)."""
    async with engine.begin() as conn:
        await _write_records(conn, records)


async def _write_records(conn: AsyncConnection, records: Sequence[TrailRecord]) -> None:
    starts = [dict(r.values) for r in records if r.op == "session_start"]
    events = [dict(r.values) for r in records if r.op == "event"]
    ends = [r.values for r in records if r.op == "session_end"]
    if starts:
        await conn.execute(SESSIONS.insert(), starts)
    if events:
        await conn.execute(AUDIT.insert(), events)
    if ends:
        stmt = (
            SESSIONS.update()
            .where(SESSIONS.c.id == sa.bindparam("b_id"))
            .values(
                ended_at=sa.bindparam("b_ended_at"),
                bytes_in=sa.bindparam("b_bytes_in"),
                bytes_out=sa.bindparam("b_bytes_out"),
                exit_status=sa.bindparam("b_exit_status"),
                end_reason=sa.bindparam("b_end_reason"),
            )
        )
        await conn.execute(stmt, [{f"b_{k}": v for k, v in e.items()} for e in ends])


class AuditRepo(Database):
    """Audit events: added by administrative commands, read by ``sshgw audit``."""

    async def add_audit_event(
        self, kind: str, *, actor: str | None, detail: Mapping[str, Any], **cols: Any
    ) -> None:
        """Record one audit event. ``cols``: ts, user_name, container, remote_addr, session_id."""
        unknown = set(cols) - AUDIT_COLUMNS
        if unknown:
            raise TypeError(f"unknown audit event column(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            "kind": kind,
            "actor": actor,
            "detail": json.loads(json.dumps(dict(detail), default=str)),
            "ts": utcnow(),
            **cols,
        }
        async with self._guard(), self._autocommit.connect() as conn:
            await conn.execute(sa.insert(AuditEvent).values(**values))

    async def audit_events(
        self,
        *,
        since: datetime | None = None,
        user: str | None = None,
        container: str | None = None,
        kind: str | None = None,
        session: str | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """The newest ``limit`` events that match, newest first. ``kind`` also matches its
        sub-kinds (``session`` matches ``session.start``); ``session`` is an id prefix."""
        q = sa.select(AUDIT)
        if since is not None:
            q = q.where(AUDIT.c.ts >= since)
        if user:
            q = q.where(AUDIT.c.user_name == user)
        if container:
            q = q.where(AUDIT.c.container == container)
        if kind:
            q = q.where(sa.or_(AUDIT.c.kind == kind, AUDIT.c.kind.like(kind + ".%")))
        if session:
            q = q.where(AUDIT.c.session_id.like(session.lower() + "%"))
        q = q.order_by(AUDIT.c.id.desc()).limit(limit)

        async def read(conn: AsyncConnection) -> list[AuditRecord]:
            return [AuditRecord(**r._mapping) for r in (await conn.execute(q)).all()]

        return await self._read(read)
