"""Replica heartbeats, lost sessions and the shared failure counts, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from gateway.store import Store
from gateway.store.audit import AUDIT, SESSIONS
from gateway.store.models import utcnow
from gateway.store.replicas import LOST, REPLICAS
from gateway.store.throttle import BUCKETS, FAILURES, failure_bucket


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


async def _session(store: Store, replica: str | None, user: str = "alice") -> str:
    sid = uuid.uuid4().hex
    async with store.engine.begin() as conn:
        await conn.execute(
            SESSIONS.insert().values(
                id=sid,
                user_name=user,
                container="web1",
                kind="shell",
                remote_addr="192.0.2.1:5555",
                started_at=utcnow(),
                replica=replica,
            )
        )
    return sid


async def _age(store: Store, replica: str, seconds: float) -> None:
    """Make the replica's last heartbeat ``seconds`` old."""
    async with store.engine.begin() as conn:
        await conn.execute(
            REPLICAS.update()
            .where(REPLICAS.c.name == replica)
            .values(last_seen=utcnow() - timedelta(seconds=seconds))
        )


async def _beat(store: Store, name: str) -> bool:
    return await store.replica_beat(name, address="h:22", pid=1, started_at=utcnow())


async def _lost_events(store: Store) -> list[dict[str, object]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(AUDIT.c.session_id, AUDIT.c.detail).where(AUDIT.c.kind == "session.end")
        )
        return [{"session": sid, **detail} for sid, detail in rows]


async def test_heartbeat_creates_refreshes_and_leaves(store: Store) -> None:
    assert await _beat(store, "gw-a") is False  # first beat: the row is new
    assert await _beat(store, "gw-a") is True
    [row] = await store.replicas()
    assert (row.name, row.address, row.pid, row.draining) == ("gw-a", "h:22", 1, False)
    assert await store.replica_alive("gw-a", 30)
    await _age(store, "gw-a", 60)
    assert not await store.replica_alive("gw-a", 30)
    await store.replica_leave("gw-a")
    assert await store.replicas() == []
    assert not await store.replica_alive("gw-a", 30)


async def test_the_sessions_of_a_silent_replica_are_marked_lost_once(store: Store) -> None:
    await _beat(store, "gw-dead")
    await _beat(store, "gw-live")
    dead = [await _session(store, "gw-dead") for _ in range(3)]
    live = await _session(store, "gw-live")
    older = await _session(store, None)  # written before replicas existed: left alone
    assert await store.mark_lost("gw-live", 30) == []  # nobody silent yet
    await _age(store, "gw-dead", 31)

    lost = await store.mark_lost("gw-live", 30)
    assert sorted(s.id for s in lost) == sorted(dead)
    assert {s.replica for s in lost} == {"gw-dead"}
    for sid in dead:
        row = await store.get_session(sid)
        assert row.ended_at is not None and row.end_reason == LOST
        assert row.replica == "gw-dead"
    for sid in (live, older):
        assert (await store.get_session(sid)).ended_at is None
    assert [r.name for r in await store.replicas()] == ["gw-live"]
    events = await _lost_events(store)
    assert sorted(str(e["session"]) for e in events) == sorted(dead)
    assert all(e["reason"] == LOST and e["marked_by"] == "gw-live" for e in events)
    gone = await store.audit_events(kind="replica.lost")
    assert [e.detail["replica"] for e in gone] == ["gw-dead"]
    # Nothing more to do the second time.
    assert await store.mark_lost("gw-live", 30) == []
    # Listed as ended, with the replica named.
    active = await store.list_sessions(active=True)
    assert {s.id for s in active} == {live, older}


async def test_two_replicas_marking_at_once_end_each_session_once(db_url: str) -> None:
    stores = [Store.from_url(db_url) for _ in range(3)]
    try:
        await stores[0].upgrade()
        for name in ("gw-dead", "gw-b", "gw-c"):
            await _beat(stores[0], name)
        dead = [await _session(stores[0], "gw-dead") for _ in range(40)]
        await _age(stores[0], "gw-dead", 100)
        results = await asyncio.gather(
            stores[1].mark_lost("gw-b", 30), stores[2].mark_lost("gw-c", 30)
        )
        ids = [s.id for r in results for s in r]
        assert sorted(ids) == sorted(dead)  # every one, none twice
        events = await _lost_events(stores[0])
        assert sorted(str(e["session"]) for e in events) == sorted(dead)
        assert len(await stores[0].audit_events(kind="replica.lost")) == 1
    finally:
        for s in stores:
            await s.close()


async def test_orphans_of_the_same_name_and_reopening(store: Store) -> None:
    old = await _session(store, "gw-fixed")
    other = await _session(store, "gw-other")
    assert [s.id for s in await store.end_orphans("gw-fixed")] == [old]
    assert (await store.get_session(old)).end_reason == LOST
    assert (await store.get_session(other)).ended_at is None
    # A replica taken for dead whose sessions still run reopens them (only its own, only lost).
    assert await store.reopen_lost("gw-fixed", [old, other]) == 1
    row = await store.get_session(old)
    assert row.ended_at is None and row.end_reason is None
    assert await store.reopen_lost("gw-fixed", []) == 0


async def test_kill_requests_per_replica(store: Store) -> None:
    a = await _session(store, "gw-a")
    b = await _session(store, "gw-b")
    for sid in (a, b):
        await store.request_kill(sid)
    assert sorted(await store.kill_requested()) == sorted([a, b])
    assert await store.kill_requested("gw-b") == [b]


# Failure counts ---------------------------------------------------------------------------------


async def test_failures_count_up_and_are_forgotten(store: Store) -> None:
    assert await store.auth_failures("alice", 300) == 0
    assert [await store.auth_failed("alice", 300) for _ in range(3)] == [1, 2, 3]
    assert await store.auth_failures("alice", 300) == 3
    other = next(
        n for n in (f"bob{i}" for i in range(100)) if failure_bucket(n) != failure_bucket("alice")
    )
    assert await store.auth_failures(other, 300) == 0
    # Quiet for longer than `forget`: counts as none, and counting starts again.
    async with store.engine.begin() as conn:
        await conn.execute(FAILURES.update().values(last_at=utcnow() - timedelta(seconds=400)))
    assert await store.auth_failures("alice", 300) == 0
    assert await store.auth_failed("alice", 300) == 1
    await store.auth_failed(other, 300)
    async with store.engine.begin() as conn:
        await conn.execute(
            FAILURES.update()
            .where(FAILURES.c.bucket == failure_bucket(other))
            .values(last_at=utcnow() - timedelta(seconds=400))
        )
    assert await store.prune_auth_failures(300) == 1
    assert await store.auth_failures("alice", 300) == 1


async def test_concurrent_failures_from_two_replicas_are_all_counted(db_url: str) -> None:
    stores = [Store.from_url(db_url) for _ in range(2)]
    try:
        await stores[0].upgrade()
        counts = await asyncio.gather(*(stores[i % 2].auth_failed("carol", 300) for i in range(20)))
        assert sorted(counts) == list(range(1, 21))  # atomic: no count seen twice
        assert await stores[1].auth_failures("carol", 300) == 20
    finally:
        for s in stores:
            await s.close()


async def test_a_flood_of_names_stays_within_the_buckets(store: Store) -> None:
    names = [f"x{i}-{uuid.uuid4().hex}" for i in range(300)]
    for n in names:
        await store.auth_failed(n, 300)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(FAILURES))).scalar_one()
    assert rows == len({failure_bucket(n) for n in names})
    assert all(0 <= failure_bucket(n) < BUCKETS for n in names)
    assert failure_bucket("alice") == failure_bucket("alice")
    # Names are never stored, only their bucket.
    async with store.engine.connect() as conn:
        cols = [
            c["name"]
            for c in await conn.run_sync(lambda c: sa.inspect(c).get_columns("auth_failures"))
        ]
    assert cols == ["bucket", "failures", "last_at"]
