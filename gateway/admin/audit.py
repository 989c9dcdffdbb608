"""The audit trail as administrators read it (``sshgw audit``, ``GET /api/v1/audit``)."""

from __future__ import annotations

from typing import Any

from gateway.admin.common import pick
from gateway.admin.when import parse_since
from gateway.store import AuditRecord, Store

KINDS_HELP = (
    "login, session (session.start, session.end), file, denied, admin, revoked, "
    "gateway (gateway.drain, gateway.drained), replica (replica.lost)"
)


def event_view(row: AuditRecord) -> dict[str, Any]:
    return pick(
        row, "id ts kind actor user=user_name container remote=remote_addr session_id detail"
    )


async def events(
    store: Store,
    *,
    since: str | None = None,
    user: str | None = None,
    container: str | None = None,
    kind: str | None = None,
    session: str | None = None,
    limit: int = 1000,
) -> tuple[list[AuditRecord], bool]:
    """The newest ``limit`` events that match, oldest first, and whether there were more.
    ``since``: ``30m``, ``2d`` ago or a date; ``kind`` matches its sub-kinds too; ``session``
    is an id prefix."""
    since_at = parse_since(since) if since else None
    limit = max(1, limit)
    rows = await store.audit_events(
        since=since_at,
        user=user,
        container=container,
        kind=kind,
        session=session,
        limit=limit + 1,
    )
    return list(reversed(rows[:limit])), len(rows) > limit
