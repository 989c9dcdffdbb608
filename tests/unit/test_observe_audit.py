"""The audit buffer: bounded, never blocking, never losing records silently.

The database here is a stand-in (these are unit tests of the buffering logic); the same writer
against real SQLite and PostgreSQL is in tests/integration/test_audit_writer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from gateway.observe import audit
from gateway.observe.audit import AuditWriter, Record
from gateway.observe.metrics import Metrics


class _Conn:
    def __init__(self, sink: list[tuple[str, Any]]) -> None:
        self.sink = sink

    async def execute(self, stmt: Any, params: Any = None) -> None:
        self.sink.append((str(stmt).split()[0], params))


class FakeEngine:
    """``begin()`` behaves like a database that is up, hangs, or is unreachable."""

    def __init__(self) -> None:
        self.mode = "up"  # up | hang | down | reject
        self.sink: list[tuple[str, Any]] = []
        self.calls = 0

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[_Conn]:
        self.calls += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "down":
            raise sa_exc.OperationalError("connect", {}, ConnectionRefusedError("refused"))
        if self.mode == "reject":
            raise sa_exc.IntegrityError("insert", {}, ValueError("duplicate key"))
        yield _Conn(self.sink)


class FakeStore:
    def __init__(self) -> None:
        self._engine = FakeEngine()

    @property
    def engine(self) -> Any:
        return self._engine

    async def ping(self) -> None:
        return None


def _sample(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def _ev(i: int) -> Record:
    return audit.event(audit.LOGIN, user=f"u{i}", remote="127.0.0.1:1", method="password")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_submit_never_blocks_while_the_database_hangs() -> None:
    store = FakeStore()
    store.engine.mode = "hang"
    m = Metrics()
    w = AuditWriter(store, m, max_buffer=100, write_timeout=3600)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.sleep(0)
        for i in range(1000):  # synchronous: would deadlock here if submit ever waited
            w.submit(_ev(i))
        assert w.pending == 100
        assert _sample(m, "sshgw_audit_records_dropped_total", reason="buffer_full") == 900
        assert _sample(m, "sshgw_audit_records_buffered") == 100
    finally:
        await _cancel(task)


async def test_buffer_full_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.engine.mode = "hang"
    w = AuditWriter(store, Metrics(), max_buffer=3)
    with caplog.at_level(logging.ERROR, logger="gateway.observe.audit"):
        for i in range(10):
            w.submit(_ev(i))
    full = [r for r in caplog.records if "audit buffer full" in r.getMessage()]
    assert len(full) == 1


async def test_database_down_then_back_keeps_order_and_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.engine.mode = "down"
    m = Metrics()
    w = AuditWriter(store, m, max_buffer=1000, retry_max=0.05)
    task = asyncio.create_task(w.run())
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.observe.audit"):
            for i in range(10):
                w.submit(_ev(i))
            for _ in range(200):
                if store.engine.calls >= 3:
                    break
                await asyncio.sleep(0.01)
            assert w.database_down
            assert _sample(m, "sshgw_audit_database_up") == 0
            assert _sample(m, "sshgw_audit_write_errors_total") >= 1
            assert w.pending == 10
            store.engine.mode = "up"
            assert await w.flush(timeout=10)
        assert not w.database_down
        assert _sample(m, "sshgw_audit_database_up") == 1
        assert _sample(m, "sshgw_audit_records_written_total") == 10
        users = [row["user_name"] for _, params in store.engine.sink for row in params]
        assert users == [f"u{i}" for i in range(10)]
        msgs = [r.getMessage() for r in caplog.records]
        assert sum("unreachable" in x for x in msgs) == 1
        assert sum("reachable again" in x for x in msgs) == 1
    finally:
        await _cancel(task)


async def test_rejected_record_is_dropped_and_counted_not_retried_forever() -> None:
    store = FakeStore()
    store.engine.mode = "reject"
    m = Metrics()
    w = AuditWriter(store, m)
    task = asyncio.create_task(w.run())
    try:
        w.submit(_ev(1))
        w.submit(_ev(2))
        assert await w.flush(timeout=10)
        assert _sample(m, "sshgw_audit_records_dropped_total", reason="rejected") == 2
    finally:
        await _cancel(task)


async def test_batches_are_grouped_starts_before_ends() -> None:
    store = FakeStore()
    w = AuditWriter(store, Metrics(), batch_size=500)
    w.submit(
        Record(
            "session_end",
            {
                "id": "s1",
                "ended_at": None,
                "bytes_in": 0,
                "bytes_out": 0,
                "exit_status": 0,
                "end_reason": "exit",
            },
        )
    )
    w.submit(Record("session_start", {"id": "s1"}))
    task = asyncio.create_task(w.run())
    try:
        assert await w.flush(timeout=10)
    finally:
        await _cancel(task)
    kinds = [k for k, _ in store.engine.sink]
    assert kinds == ["INSERT", "UPDATE"]


async def test_spool_at_shutdown_and_reload(tmp_path: Path) -> None:
    spool = tmp_path / "audit-spool.jsonl"
    store = FakeStore()
    store.engine.mode = "down"
    w = AuditWriter(store, Metrics(), spool_path=spool)
    for i in range(5):
        w.submit(_ev(i))
    w.submit(Record("session_start", {"id": "abc", "started_at": audit.utcnow()}))
    assert w.spool() == 6
    assert w.pending == 0
    lines = spool.read_text().splitlines()
    assert len(lines) == 6
    json.loads(lines[0])

    store2 = FakeStore()
    w2 = AuditWriter(store2, Metrics(), spool_path=spool)
    assert w2.load_spool() == 6
    assert not spool.exists()
    task = asyncio.create_task(w2.run())
    try:
        assert await w2.flush(timeout=10)
    finally:
        await _cancel(task)
    rows = [row for _, params in store2.engine.sink for row in params]
    assert {r.get("user_name") for r in rows if "user_name" in r} == {f"u{i}" for i in range(5)}
    start = next(r for r in rows if r.get("id") == "abc")
    assert start["started_at"].tzinfo is not None


def test_transient_classification() -> None:
    assert audit._transient(OSError("x"))
    assert audit._transient(TimeoutError())
    assert audit._transient(sa_exc.OperationalError("s", {}, Exception("x")))
    assert audit._transient(sa_exc.InterfaceError("s", {}, Exception("x")))
    assert not audit._transient(sa_exc.IntegrityError("s", {}, Exception("x")))
    assert not audit._transient(sa_exc.DataError("s", {}, Exception("x")))
