"""Admission of peers that have not authenticated: what they may make the gateway hold or do.

The pure pieces (startup gate, attempt counts, failure throttle, digest of failed logins) live in
:mod:`gateway.ssh.limits`; :class:`Limits` wires them to the settings, the observer, a timer and
the password-check slots (docs/SECURITY.md, "Unauthenticated peers"), and the per-user failure
counts to the database, where every replica adds to and reads the same count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from gateway.errors import GatewayError
from gateway.ssh.limits import (
    Digest,
    FailureDigest,
    FailureThrottle,
    StartupGate,
    parse_max_startups,
)
from gateway.store import verify_password

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.observe import Observer
    from gateway.ssh.server import GatewayConnection

log = logging.getLogger(__name__)


class FailureStore(Protocol):
    """The failed-password counts shared by the replicas (:mod:`gateway.store.throttle`)."""

    async def auth_failures(self, name: str, forget: float) -> int: ...

    async def auth_failed(self, name: str, forget: float) -> int: ...


# The transport's extra info that names the startup slot a connection took while its PROXY
# protocol header was read (gateway.ssh.proxied); absent on other connections.
HELD_SLOT = "sshgw_startup_slot"


class Limits:
    """What peers that have not authenticated may make the whole gateway hold or do.

    One per gateway (see :mod:`gateway.ssh.limits` and docs/SECURITY.md, "Unauthenticated
    peers"): the startup gate, the failure throttle, the slots for password checks, and the
    audit digest of failed logins with the timer that writes it.
    """

    # A refused connection is logged at debug level; a summary at most this often.
    warn_interval = 60.0
    # Seconds the shared failure count may take before the local counts decide alone.
    db_timeout = 2.0

    def __init__(
        self, settings: Settings, observer: Observer, store: FailureStore | None = None
    ) -> None:
        self.settings = settings
        self.observer = observer
        # The per-user failure counts every replica shares (None: this process's own only).
        self.store = store
        self.gate = StartupGate(
            parse_max_startups(settings.max_startups), settings.max_startups_per_source
        )
        self.throttle = FailureThrottle()
        self.digest = FailureDigest()
        self.password_slots = asyncio.Semaphore(settings.max_password_checks)
        self.password_waiting = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused_since_warn = 0
        self._warned_at = -self.warn_interval
        # Connections holding failures not yet written (written at shutdown at the latest).
        self.pending: set[GatewayConnection] = set()

    # Startups -------------------------------------------------------------------------------

    def enter(self, source: str, held: str | None = None) -> str | None:
        """A new connection from ``source``: None when it may start, else why not.

        ``held``: the slot it took while its PROXY protocol header was read
        (:mod:`gateway.ssh.proxied`); it moves to ``source`` (:meth:`StartupGate.move`).
        """
        reason = self.gate.enter(source) if held is None else self.gate.move(held, source)
        if reason is None:
            self.observer.unauthenticated(self.gate.count)
            return None
        self.observer.startup_refused(reason)
        self._refused_since_warn += 1
        now = time.monotonic()
        if now - self._warned_at >= self.warn_interval:
            log.warning(
                "refusing new connections: %d unauthenticated open (max_startups %s, "
                "%d from one source at most); %d refused since the last warning",
                self.gate.count,
                self.settings.max_startups,
                self.settings.max_startups_per_source,
                self._refused_since_warn,
            )
            self._warned_at = now
            self._refused_since_warn = 0
        return reason

    def leave(self, source: str) -> None:
        self.gate.leave(source)
        self.observer.unauthenticated(self.gate.count)

    # Failure throttle ------------------------------------------------------------------------

    async def auth_delay(self, source: str, user: str) -> float:
        """Seconds a password attempt from ``source`` for ``user`` waits before it is checked:
        the largest of this replica's counts (per source, per user) and the per-user count all
        replicas share, so alternating between replicas buys no guesses."""
        local = self.throttle.delay(("source", source), ("user", user))
        if self.store is None:
            return local
        try:
            async with asyncio.timeout(self.db_timeout):
                shared = await self.store.auth_failures(user, self.throttle.forget)
        except (GatewayError, TimeoutError) as exc:
            # The database is out of reach (a password check needs it anyway): local counts.
            log.debug("shared failure count for %s: %r", user, exc)
            return local
        return max(local, self.throttle.delay_for(shared))

    async def auth_failed(self, source: str, user: str) -> None:
        """One more failed password from ``source`` for ``user``: counted here and shared."""
        self.throttle.failed(("source", source), ("user", user))
        if self.store is None:
            return
        try:
            async with asyncio.timeout(self.db_timeout):
                await self.store.auth_failed(user, self.throttle.forget)
        except (GatewayError, TimeoutError) as exc:
            log.debug("shared failure count for %s not written: %r", user, exc)

    # Password checks ------------------------------------------------------------------------

    async def check_password(self, stored: str | None, password: str) -> bool:
        """argon2 verification in a worker thread, at most ``max_password_checks`` at once."""
        self.password_waiting += 1
        self.observer.password_checks_waiting(self.password_waiting)
        try:
            await self.password_slots.acquire()
        finally:
            self.password_waiting -= 1
            self.observer.password_checks_waiting(self.password_waiting)
        try:
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(None, verify_password, stored, password)
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                # The client replaced its request: the thread still runs, and keeps its slot.
                await asyncio.wait({job})
                raise
        finally:
            self.password_slots.release()

    # Audit of failed logins -----------------------------------------------------------------

    def login_failed(
        self, source: str, user: str | None, remote: str, method: str, reason: str, count: int
    ) -> None:
        """A failed-login event: written now, or summed into the source's digest."""
        write, due = self.digest.admit(source, user, method, count)
        if write:
            self.observer.login_failed(user, remote, method, reason, count)
        for d in due:
            self._write(d)
        self._schedule()

    def _write(self, d: Digest) -> None:
        users = list(d.users)
        self.observer.login_failed(
            users[0] if len(users) == 1 else None,
            d.source,
            ",".join(sorted(d.methods)),
            "repeated failures from this source",
            d.count,
            users=users,
            window=self.digest.window,
        )

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        at = self.digest.next_due()
        if at is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, at - time.monotonic()) + 0.01, self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        for d in self.digest.due():
            self._write(d)
        self._schedule()

    def close(self) -> None:
        """At shutdown: write every failure held back (connections' and digests')."""
        for conn in list(self.pending):
            conn.write_failures()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for d in self.digest.drain():
            self._write(d)
