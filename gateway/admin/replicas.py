"""Replicas: the gateway processes on this database, from their heartbeat rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.admin.common import pick
from gateway.store import Store
from gateway.store.replicas import ReplicaRecord


def replica_state(row: ReplicaRecord, now: datetime, lost_after: float) -> str:
    """``up``, ``draining`` (SIGTERM: it serves its sessions until they end), or ``silent``
    (no heartbeat for ``lost_after`` seconds: the next heartbeat of another replica ends its
    sessions and removes the row)."""
    if (now - row.last_seen).total_seconds() > lost_after:
        return "silent"
    return "draining" if row.draining else "up"


def replica_view(row: ReplicaRecord, now: datetime, lost_after: float) -> dict[str, Any]:
    return {
        **pick(row, "name address pid started_at last_seen"),
        "state": replica_state(row, now, lost_after),
    }


async def list_replicas(store: Store) -> tuple[list[ReplicaRecord], datetime]:
    """The replicas (by name) and the time to judge them by."""
    return await store.replicas(), datetime.now(UTC)
