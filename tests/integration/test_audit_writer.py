"""The audit writer against real databases (SQLite and PostgreSQL): batches land in the tables,
and records submitted while the database is unreachable are written once it is back.

Outages are real: for PostgreSQL the writer talks through a TCP relay on loopback that the test
cuts (connections reset, port refused) and restores; for SQLite another connection holds the
database's exclusive lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from gateway.observe import audit
from gateway.observe.audit import AuditWriter, Record
from gateway.observe.metrics import Metrics
from gateway.store import Store
from gateway.store.models import utcnow

HANG = 120.0


class Relay:
    """A TCP relay on 127.0.0.1 that can be cut (all connections reset, port closed) and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        with contextlib.suppress(OSError):
            w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        self._writers |= {cw, uw}
        t1 = asyncio.create_task(self._pipe(cr, uw))
        t2 = asyncio.create_task(self._pipe(ur, cw))
        self._tasks |= {t1, t2}
        try:
            await asyncio.gather(t1, t2)
        finally:
            self._tasks -= {t1, t2}
            self._writers -= {cw, uw}

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            with contextlib.suppress(OSError):
                w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


def _start(sid: str) -> Record:
    return Record(
        "session_start",
        {
            "id": sid,
            "user_name": "alice",
            "container": "web1",
            "container_id": "ab" * 32,
            "login": "app",
            "kind": "shell",
            "command": None,
            "remote_addr": "127.0.0.1:40000",
            "started_at": utcnow(),
            "recording_path": None,
            "kill_requested": False,
            "gateway_pid": 1,
        },
    )


def _end(sid: str, status: int) -> Record:
    return Record(
        "session_end",
        {
            "id": sid,
            "ended_at": utcnow(),
            "bytes_in": 10,
            "bytes_out": 20,
            "exit_status": status,
            "end_reason": "exit",
        },
    )


def _file(sid: str, i: int) -> Record:
    return audit.event(
        audit.FILE,
        user="alice",
        container="web1",
        session_id=sid,
        op="write",
        path=f"/tmp/f{i}",
        bytes=i,
        result="ok",
    )


async def _events(store: Store, sid: str) -> list[dict[str, object]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(audit.AUDIT.c.kind, audit.AUDIT.c.detail)
            .where(audit.AUDIT.c.session_id == sid)
            .order_by(audit.AUDIT.c.id)
        )
        return [{"kind": k, **d} for k, d in rows]


async def _session(store: Store, sid: str) -> sa.Row[tuple[object, ...]] | None:
    async with store.engine.connect() as conn:
        res = await conn.execute(sa.select(audit.SESSIONS).where(audit.SESSIONS.c.id == sid))
        return res.first()


async def _run(writer: AuditWriter) -> asyncio.Task[None]:
    return asyncio.create_task(writer.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _wait_down(writer: AuditWriter) -> None:
    async with asyncio.timeout(HANG):
        while True:
            if writer.database_down:
                return
            await asyncio.sleep(0.02)


async def test_batches_reach_the_tables(store: Store) -> None:
    m = Metrics()
    w = AuditWriter(store, m, batch_size=7)
    task = await _run(w)
    sid = uuid.uuid4().hex
    try:
        w.submit(_start(sid))
        for i in range(20):
            w.submit(_file(sid, i))
        w.submit(_end(sid, 3))
        assert await w.flush(timeout=HANG)
    finally:
        await _stop(task)
    evs = await _events(store, sid)
    assert [e["path"] for e in evs] == [f"/tmp/f{i}" for i in range(20)]
    row = await _session(store, sid)
    assert row is not None
    assert row.exit_status == 3 and row.bytes_in == 10 and row.bytes_out == 20
    assert row.ended_at is not None and row.ended_at.tzinfo is not None
    assert m.registry.get_sample_value("sshgw_audit_records_written_total") == 22


async def test_duplicate_row_is_dropped_loudly_and_the_rest_written(store: Store) -> None:
    m = Metrics()
    w = AuditWriter(store, m)
    task = await _run(w)
    sid = uuid.uuid4().hex
    try:
        w.submit(_start(sid))
        assert await w.flush(timeout=HANG)
        w.submit(_start(sid))  # primary key conflict: refused by the database
        w.submit(_file(sid, 1))
        assert await w.flush(timeout=HANG)
    finally:
        await _stop(task)
    assert (
        m.registry.get_sample_value("sshgw_audit_records_dropped_total", {"reason": "rejected"})
        == 1
    )
    assert [e["path"] for e in await _events(store, sid)] == ["/tmp/f1"]


@pytest.mark.postgres
async def test_postgres_outage_records_survive(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    assert parts.hostname and parts.port
    relay = Relay(parts.hostname, parts.port)
    await relay.start()
    direct = Store.from_url(pg_url)
    await direct.upgrade()
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{relay.port}"
    via_relay = Store.from_url(urlunsplit(parts._replace(netloc=netloc)))
    m = Metrics()
    w = AuditWriter(via_relay, m, retry_max=0.2, write_timeout=5)
    task = await _run(w)
    sid = uuid.uuid4().hex
    try:
        w.submit(_start(sid))
        assert await w.flush(timeout=HANG)
        await relay.cut()
        for i in range(50):
            w.submit(_file(sid, i))
        w.submit(_end(sid, 0))
        await _wait_down(w)
        assert w.pending == 51
        assert m.registry.get_sample_value("sshgw_audit_database_up") == 0
        await relay.restore()
        assert await w.flush(timeout=HANG)
        assert not w.database_down
    finally:
        await _stop(task)
        await relay.cut()
        await via_relay.close()
    evs = await _events(direct, sid)
    row = await _session(direct, sid)
    await direct.close()
    assert [e["path"] for e in evs] == [f"/tmp/f{i}" for i in range(50)]
    assert row is not None and row.ended_at is not None and row.exit_status == 0


async def test_sqlite_locked_records_survive(sqlite_url: str) -> None:
    s = Store.from_url(sqlite_url)
    await s.upgrade()
    m = Metrics()
    w = AuditWriter(s, m, retry_max=0.2, write_timeout=30)
    task = await _run(w)
    sid = uuid.uuid4().hex
    path = sqlite_url.split("///", 1)[1]
    locker = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        w.submit(_start(sid))
        assert await w.flush(timeout=HANG)
        locker.execute("BEGIN EXCLUSIVE")
        for i in range(30):
            w.submit(_file(sid, i))
        w.submit(_end(sid, 7))
        await _wait_down(w)
        assert w.pending == 31
        locker.execute("COMMIT")
        assert await w.flush(timeout=HANG)
    finally:
        with contextlib.suppress(sqlite3.Error):
            locker.execute("ROLLBACK")
        locker.close()
        await _stop(task)
    evs = await _events(s, sid)
    row = await _session(s, sid)
    await s.close()
    assert [e["path"] for e in evs] == [f"/tmp/f{i}" for i in range(30)]
    assert row is not None and row.exit_status == 7
