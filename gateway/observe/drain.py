"""Graceful drain: what a replica does between SIGTERM and its stop.

``gateway.app`` closes the SSH listener (a balancer then sends new connections to the other
replicas) and calls :func:`drain`: ``/readyz`` answers 503 at once, every live shell and command
is told on its stderr, in one line::

    sshgw: this gateway is shutting down; this session ends in 30 s

(a session that starts later, on a connection that was open already, is told the time left),
and the drain waits until the last session has ended — then the process stops at once — or
until ``SSHGW_DRAIN_TIMEOUT`` seconds have passed, or until a second signal. What still runs then
is ended by the gateway's stop like any shutdown (``end_reason`` ``shutdown``, the user told
"the gateway is shutting down; session ended"). SFTP, SCP and forwarded ports have no stderr to
write to: they just get the time. The audit trail has a ``gateway.drain`` event when the drain
starts and a ``gateway.drained`` event when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING

from gateway.observe import audit as _audit

if TYPE_CHECKING:
    from gateway.observe.observer import Observer

log = logging.getLogger(__name__)


class Drain:
    """Whether this gateway drains, and until when (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.until: float | None = None

    @property
    def active(self) -> bool:
        return self.until is not None

    def notice(self) -> str:
        """The line a session is told (without the ``sshgw:`` prefix the channel adds)."""
        left = 0 if self.until is None else max(0, math.ceil(self.until - time.monotonic()))
        return f"this gateway is shutting down; this session ends in {left} s"


async def drain(observer: Observer, timeout: float, interrupted: asyncio.Event) -> int:
    """Drain for at most ``timeout`` seconds or until ``interrupted`` is set; returns how many
    sessions still run (the gateway's stop ends them)."""
    t0 = time.monotonic()
    observer.drain.until = t0 + timeout
    observer.http.draining = True
    if observer.replica is not None:
        observer.replica.draining = True
    tracks = observer.active_sessions
    log.info(
        "draining: %d session(s) told they end within %g s (SIGTERM or SIGINT again: stop now)",
        len(tracks),
        timeout,
    )
    observer.submit(
        _audit.event(
            "gateway.drain",
            replica=observer.replica.name if observer.replica else None,
            sessions=len(tracks),
            timeout=timeout,
        )
    )
    for t in tracks:
        t.notify(observer.drain.notice())
    while observer.active_sessions and not interrupted.is_set():
        left = observer.drain.until - time.monotonic()
        if left <= 0:
            break
        # Sessions end on their own; the check is cheap and the drain is bounded.
        await asyncio.sleep(min(0.05, left))
    remaining = len(observer.active_sessions)
    why = "interrupted" if interrupted.is_set() else ("deadline" if remaining else "done")
    log.info(
        "drain %s after %.1f s: %d session(s) still running", why, time.monotonic() - t0, remaining
    )
    observer.submit(
        _audit.event(
            "gateway.drained",
            replica=observer.replica.name if observer.replica else None,
            outcome=why,
            remaining=remaining,
            seconds=round(time.monotonic() - t0, 3),
        )
    )
    return remaining
