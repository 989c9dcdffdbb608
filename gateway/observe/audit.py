"""The audit trail: events and session rows, written in batches off the data path.

:meth:`AuditWriter.submit` is synchronous and O(1): it appends a record to an in-memory buffer and
wakes the writer task. The writer drains the buffer in batches, one transaction per batch. When
the database is unreachable the records stay in the buffer (bounded by ``max_buffer``); the first
failure and the recovery are logged once each and the ``sshgw_audit_*`` metrics show the backlog.
Only when the buffer is full are new records dropped — counted and logged, never silently. At
shutdown whatever could not be written is spooled to a JSON-lines file in the data directory and
loaded again at the next start.

The SQL lives in the store (:mod:`gateway.store.audit`): :func:`~gateway.store.audit.write_records`
writes a batch, and :func:`~gateway.store.audit.transient` tells an unreachable database (keep the
records, retry) from one that refused them (find the bad record, drop it, count it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.observe.metrics import Metrics

# The tables the trail is written to (for readers such as the tests), and how it is written.
from gateway.store.audit import AUDIT as AUDIT
from gateway.store.audit import SESSIONS as SESSIONS
from gateway.store.audit import transient as _transient
from gateway.store.audit import write_records
from gateway.store.models import as_utc, utcnow

if TYPE_CHECKING:
    from gateway.store import AuthUser
    from gateway.store.audit import TrailEngine

log = logging.getLogger(__name__)

# Event kinds written to audit_events.kind.
LOGIN = "login"
SESSION_START = "session.start"
SESSION_END = "session.end"
FILE = "file"
DENIED = "denied"
# A session's recording ended early (size cap, low disk space, write error); the session went on.
RECORDING_STOPPED = "recording.stopped"
# A live connection's user or credential was revoked (user disabled/removed, key removed, ...).
REVOKED = "revoked"

Op = Literal["event", "session_start", "session_end"]


class StoreLike(Protocol):
    """What the observer needs from :class:`gateway.store.Store`."""

    @property
    def engine(self) -> TrailEngine: ...

    async def ping(self) -> None: ...

    async def auth_user(self, name: str) -> AuthUser | None: ...

    async def auth_users(self, names: Iterable[str]) -> dict[str, AuthUser]: ...

    async def kill_requested(self, replica: str | None = None) -> list[str]: ...


@dataclass(slots=True)
class Record:
    op: Op
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"op": self.op, "values": self.values}, default=_json_default)

    @classmethod
    def from_json(cls, line: str) -> Record:
        doc = json.loads(line)
        values = dict(doc["values"])
        for key in ("ts", "started_at", "ended_at"):
            if isinstance(values.get(key), str):
                values[key] = as_utc(datetime.fromisoformat(values[key]))
        op = doc["op"]
        if op not in ("event", "session_start", "session_end"):
            raise ValueError(f"unknown audit record op {op!r}")
        return cls(op, values)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    return str(obj)


def event(
    kind: str,
    /,
    *,
    user: str | None = None,
    container: str | None = None,
    remote: str | None = None,
    session_id: str | None = None,
    actor: str | None = None,
    **detail: Any,
) -> Record:
    return Record(
        "event",
        {
            "ts": utcnow(),
            "kind": kind,
            "actor": actor,
            "user_name": user,
            "container": container,
            "remote_addr": remote,
            "session_id": session_id,
            "detail": detail,
        },
    )


class AuditWriter:
    """Bounded, never-blocking queue of audit records, batch-written by one task."""

    def __init__(
        self,
        store: StoreLike,
        metrics: Metrics,
        *,
        max_buffer: int = 50_000,
        batch_size: int = 500,
        spool_path: Path | None = None,
        write_timeout: float = 10.0,
        retry_max: float = 5.0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._buf: deque[Record] = deque()
        self._max = max_buffer
        self._batch = batch_size
        self._spool = spool_path
        self._write_timeout = write_timeout
        self._retry_max = retry_max
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._down = False
        self._full_logged = False
        self._dropped_since_log = 0
        self.written = 0

    # Producer side (synchronous, never blocks, never raises) --------------------------------

    def submit(self, record: Record) -> None:
        if len(self._buf) >= self._max:
            self._metrics.audit_dropped.labels(reason="buffer_full").inc()
            self._dropped_since_log += 1
            if not self._full_logged:
                self._full_logged = True
                log.error(
                    "audit buffer full (%d records): the database has been unreachable too long; "
                    "new audit records are dropped and counted in "
                    "sshgw_audit_records_dropped_total",
                    self._max,
                )
            return
        self._buf.append(record)
        self._metrics.audit_buffered.set(len(self._buf))
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def database_down(self) -> bool:
        return self._down

    # Writer task ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Drain the buffer forever (cancel to stop; call :meth:`close` afterwards)."""
        delay = 0.25
        while True:
            if not self._buf:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(islice(self._buf, 0, self._batch))
            try:
                await self._write_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.audit_write_errors.inc()
                if _transient(exc):
                    self._mark_down(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
                    continue
                # The database answered but refused the batch: find the bad record(s).
                await self._write_one_by_one(batch)
                continue
            delay = 0.25
            self._done(len(batch))

    async def _write_batch(self, batch: Sequence[Record]) -> None:
        async with asyncio.timeout(self._write_timeout):
            await write_records(self._store.engine, batch)

    async def _write_one_by_one(self, batch: Sequence[Record]) -> None:
        for rec in batch:
            try:
                await self._write_batch([rec])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _transient(exc):
                    self._mark_down(exc)
                    return  # retried from the start of the buffer later
                self._metrics.audit_dropped.labels(reason="rejected").inc()
                log.error(
                    "audit record refused by the database and dropped: %s %s (%s)",
                    rec.op,
                    rec.values.get("kind") or rec.values.get("id", ""),
                    exc.__class__.__name__,
                )
            self._done(1)

    def _done(self, n: int) -> None:
        for _ in range(n):
            self._buf.popleft()
        self.written += n
        self._metrics.audit_written.inc(n)
        self._metrics.audit_buffered.set(len(self._buf))
        if self._down:
            self._down = False
            self._metrics.audit_db_up.set(1)
            log.warning(
                "audit database reachable again; writing %d held-back records", len(self._buf) + n
            )
        if self._full_logged and len(self._buf) < self._max:
            self._full_logged = False
            log.warning(
                "audit buffer has room again; %d records were dropped", self._dropped_since_log
            )
            self._dropped_since_log = 0

    def _mark_down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            self._metrics.audit_db_up.set(0)
            log.warning(
                "audit database unreachable (%s); holding audit records in memory (at most %d)",
                exc.__class__.__name__,
                self._max,
            )

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the buffer is empty (True) or ``timeout`` passes (False)."""
        if not self._buf:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return not self._buf

    # Spool: records left at shutdown survive a restart ---------------------------------------

    def spool(self) -> int:
        """Append unwritten records to the spool file; returns how many were saved."""
        if not self._buf:
            return 0
        n = len(self._buf)
        if self._spool is None:
            log.error("audit: %d records could not be written and are lost (no spool file)", n)
            self._metrics.audit_dropped.labels(reason="buffer_full").inc(n)
            return 0
        try:
            self._spool.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for rec in self._buf:
                    f.write(rec.to_json() + "\n")
        except OSError as exc:
            log.error("audit: %d records could not be written or spooled: %s", n, exc)
            return 0
        log.warning(
            "audit: database unreachable at shutdown; %d records spooled to %s", n, self._spool
        )
        self._buf.clear()
        self._metrics.audit_buffered.set(0)
        return n

    def load_spool(self) -> int:
        """Queue the records a previous run spooled; the file is removed once read."""
        if self._spool is None or not self._spool.exists():
            return 0
        loaded: list[Record] = []
        bad = 0
        try:
            with self._spool.open(encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        loaded.append(Record.from_json(line))
                    except (ValueError, KeyError, TypeError):
                        bad += 1
            self._spool.unlink()
        except OSError as exc:
            log.error("audit: cannot read spool file %s: %s", self._spool, exc)
            return 0
        if bad:
            log.error("audit: %d unreadable lines in spool file %s were skipped", bad, self._spool)
        for rec in loaded:
            self.submit(rec)
        if loaded:
            log.info("audit: %d spooled records from an earlier run queued", len(loaded))
        return len(loaded)
