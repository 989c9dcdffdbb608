"""Sessions: their JSON form and status, and ending a running one.

A kill works while the gateway runs as another process: it sets ``kill_requested`` on the
session's row; the gateway (the replica) that runs the session polls for such rows every second,
ends it and tells the user. A session whose replica is gone is marked ended at once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from gateway.admin.audit import event_view
from gateway.admin.common import Actor, pick
from gateway.errors import Conflict
from gateway.store import AuditRecord, SessionRecord, Store
from gateway.store.replicas import LOST
from gateway.vocab import EndReason


def session_status(row: SessionRecord) -> str:
    if row.ended_at is None:
        return "killing" if row.kill_requested else "active"
    reason = row.end_reason or "ended"
    if row.exit_status is None:
        return str(reason)
    if reason == EndReason.EXIT:
        return f"exit {row.exit_status}"
    return f"{reason}, status {row.exit_status}"


def session_seconds(row: SessionRecord, now: datetime) -> float:
    end: datetime = row.ended_at or now
    started: datetime = row.started_at
    return max(0.0, (end - started).total_seconds())


def session_view(row: SessionRecord, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {
        **pick(row, "id user=user_name"),
        "container": row.container or None,
        **pick(row, "container_id login kind command remote=remote_addr started_at ended_at"),
        "active": row.ended_at is None,
        "duration": round(session_seconds(row, now), 3),
        **pick(row, "bytes_in bytes_out exit_status end_reason"),
        "kill_requested": bool(row.kill_requested),
        "recording": row.recording_path,
        "replica": row.replica,
    }


def session_with_events_view(row: SessionRecord, events: list[AuditRecord]) -> dict[str, Any]:
    return {**session_view(row), "events": [event_view(e) for e in events]}


async def list_sessions(
    store: Store, *, active: bool = False, user: str | None = None, limit: int = 200
) -> list[SessionRecord]:
    """The newest ``limit`` sessions that match, oldest first."""
    rows = await store.list_sessions(active=active, user=user, limit=max(1, limit))
    return list(reversed(rows))


async def session_and_events(store: Store, ref: str) -> tuple[SessionRecord, list[AuditRecord]]:
    """One session (by id or a prefix of it) and its audit events."""
    row = await store.find_session(ref)
    return row, await store.session_events(row.id)


async def request_kill(
    store: Store, actor: Actor, ref: str, lost_after: float = 30.0
) -> SessionRecord:
    """Ask the gateway that runs the session (by id or a prefix) to end it. A session whose
    replica sent no heartbeat for ``lost_after`` seconds (three heartbeat intervals) is marked
    ended at once (``gateway_lost``): nothing runs it any more."""
    row = await store.find_session(ref)
    if row.ended_at is not None:
        raise Conflict(f"session {row.id} already ended ({session_status(row)})")
    gone = row.replica is not None and not await store.replica_alive(row.replica, lost_after)
    if gone:
        await store.force_end(row.id, LOST)
    else:
        await store.request_kill(row.id)
    await store.add_audit_event(
        "admin",
        actor=actor.name,
        detail={
            "action": "session.kill",
            "session": row.id,
            **({"replica_gone": row.replica} if gone else {}),
        },
        user_name=row.user_name,
        container=row.container or None,
        session_id=row.id,
        **({"remote_addr": actor.remote} if actor.remote else {}),
    )
    return await store.get_session(row.id)


async def wait_ended(store: Store, session_id: str, wait: float) -> SessionRecord:
    """The session's row once it has ended, or as it is after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        cur = await store.get_session(session_id)
        if cur.ended_at is not None or time.monotonic() >= deadline:
            return cur
        await asyncio.sleep(0.2)
