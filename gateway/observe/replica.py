"""This gateway process as one replica among several on one database.

A :class:`Replica` has a name (``SSHGW_REPLICA_NAME``, else ``HOST-PID-RANDOM``), which every
session row it writes carries, and keeps its ``replicas`` row fresh: a heartbeat every
``SSHGW_HEARTBEAT_INTERVAL`` seconds. On the same tick it ends, in the database, the live sessions
of replicas silent for :attr:`Replica.bound` (three intervals) — ``gateway_lost``, audited once
(:meth:`gateway.store.replicas.ReplicasRepo.mark_lost`) — and prunes the shared failure counts.
So a replica that dies (SIGKILL, a lost host) has its sessions marked ended within four
intervals (40 s by default) by any other. A replica taken for dead that is not (its process was
frozen, its database out of reach for longer than the bound) reopens the rows of its sessions
that still run when its heartbeat gets through again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from gateway.errors import GatewayError
from gateway.store.models import utcnow
from gateway.store.replicas import LostSession

log = logging.getLogger(__name__)

#: The failure counts of the throttle are forgotten after this many quiet seconds (it is the
#: ``forget`` of :class:`gateway.ssh.limits.FailureThrottle`).
FAILURES_FORGET = 300.0


class ReplicaStore(Protocol):
    """What a replica needs from :class:`gateway.store.Store`."""

    async def replica_beat(
        self, name: str, *, address: str | None, pid: int, started_at: datetime, draining: bool
    ) -> bool: ...

    async def replica_leave(self, name: str) -> None: ...

    async def mark_lost(self, me: str, bound: float) -> list[LostSession]: ...

    async def end_orphans(self, me: str) -> list[LostSession]: ...

    async def reopen_lost(self, me: str, ids: Sequence[str]) -> int: ...

    async def prune_auth_failures(self, forget: float) -> int: ...


def default_name() -> str:
    """``HOST-PID-RANDOM``: the host's first label (at most 40 characters), new every start."""
    host = socket.gethostname().split(".")[0] or "gw"
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:40].strip("-_") or "gw"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


class Replica:
    """Name, heartbeat and lost-session marking of this process (see the module doc)."""

    def __init__(
        self,
        store: ReplicaStore,
        *,
        name: str | None,
        interval: float,
        address: str | None = None,
    ) -> None:
        self.store = store
        self.fixed = name is not None
        self.name = name or default_name()
        self.interval = interval
        self.address = address
        self.started_at = utcnow()
        self.draining = False
        self._last_ok: float | None = None  # time.monotonic() of the last heartbeat written

    @property
    def bound(self) -> float:
        """Seconds of silence after which a replica is taken for dead."""
        return 3.0 * self.interval

    async def register(self) -> None:
        """The first heartbeat, before the gateway serves. With a fixed name, the sessions an
        earlier process of that name left open are ended first (it is gone: we are it)."""
        if self.fixed:
            self._report(await self.store.end_orphans(self.name), "an earlier process")
        await self._beat()

    async def run(self, live: Callable[[], Sequence[str]]) -> None:
        """Beat and mark until cancelled; ``live`` gives the ids of this replica's sessions."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                async with asyncio.timeout(max(5.0, self.interval)):
                    await self.tick(live)
            except (GatewayError, TimeoutError) as exc:
                log.warning("replica heartbeat: %s", getattr(exc, "user_message", "timed out"))
            except Exception:  # a bug must not stop the heartbeat: the others would mark us lost
                log.exception("replica heartbeat failed")

    async def tick(self, live: Callable[[], Sequence[str]]) -> None:
        gap = None if self._last_ok is None else time.monotonic() - self._last_ok
        existed = await self._beat()
        if (not existed or (gap is not None and gap > self.bound)) and (ids := live()):
            # The others may have taken us for dead meanwhile: our sessions still run.
            reopened = await self.store.reopen_lost(self.name, ids)
            if reopened:
                log.warning(
                    "replica %s was taken for dead (no heartbeat for %.0f s); %d live "
                    "session(s) reopened",
                    self.name,
                    gap or 0.0,
                    reopened,
                )
        self._report(await self.store.mark_lost(self.name, self.bound), None)
        await self.store.prune_auth_failures(FAILURES_FORGET)

    async def _beat(self) -> bool:
        existed = await self.store.replica_beat(
            self.name,
            address=self.address,
            pid=os.getpid(),
            started_at=self.started_at,
            draining=self.draining,
        )
        self._last_ok = time.monotonic()
        return existed

    async def leave(self) -> None:
        """At a clean stop: the row goes (the sessions were ended and written first)."""
        try:
            async with asyncio.timeout(5.0):
                await self.store.replica_leave(self.name)
        except (GatewayError, TimeoutError) as exc:
            log.warning(
                "replica %s: row not removed (%s); the others will take it for dead",
                self.name,
                getattr(exc, "user_message", "timed out"),
            )

    def _report(self, lost: list[LostSession], whose: str | None) -> None:
        for replica in sorted({s.replica for s in lost}):
            mine = [s for s in lost if s.replica == replica]
            log.warning(
                "replica %s %s: %d live session(s) marked ended (gateway_lost): %s",
                replica,
                f"(left by {whose})" if whose else f"silent for over {self.bound:g} s",
                len(mine),
                ", ".join(s.id[:12] for s in mine[:20]) + (" ..." if len(mine) > 20 else ""),
            )
