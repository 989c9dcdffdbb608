"""Audit events written by administrative commands."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from gateway.store.db import Database
from gateway.store.models import AuditEvent, utcnow

AUDIT_COLUMNS = frozenset({"ts", "user_name", "container", "remote_addr", "session_id"})


class AuditRepo(Database):
    """Audit events."""

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
