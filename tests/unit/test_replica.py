"""The replica's heartbeat tick and the drain's notice (pure logic over a fake store), and the
settings of several replicas (one clear line for a bad value)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import pytest

from gateway.config import Settings
from gateway.errors import InvalidInput, StoreUnavailable
from gateway.observe.drain import Drain
from gateway.observe.replica import Replica, default_name
from gateway.store.replicas import LostSession


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, bool] = {}
        self.reopened: list[list[str]] = []
        self.marked: list[tuple[str, float]] = []
        self.orphans: list[str] = []
        self.fail = False

    async def replica_beat(
        self, name: str, *, address: str | None, pid: int, started_at: datetime, draining: bool
    ) -> bool:
        if self.fail:
            raise StoreUnavailable("database unavailable (test)")
        existed = name in self.rows
        self.rows[name] = draining
        return existed

    async def replica_leave(self, name: str) -> None:
        self.rows.pop(name, None)

    async def mark_lost(self, me: str, bound: float) -> list[LostSession]:
        self.marked.append((me, bound))
        return [LostSession("a" * 32, "alice", "web1", None, "gw-dead")]

    async def end_orphans(self, me: str) -> list[LostSession]:
        self.orphans.append(me)
        return []

    async def reopen_lost(self, me: str, ids: Sequence[str]) -> int:
        self.reopened.append(list(ids))
        return len(ids)

    async def prune_auth_failures(self, forget: float) -> int:
        return 0


async def test_a_tick_beats_marks_and_reopens_only_after_being_taken_for_dead() -> None:
    store = FakeStore()
    r = Replica(store, name=None, interval=0.5)
    assert r.bound == 1.5
    await r.register()
    assert store.orphans == []  # a generated name has no earlier process
    assert list(store.rows) == [r.name]
    await r.tick(lambda: ["s1"])
    assert store.marked == [(r.name, 1.5)]
    assert store.reopened == []  # the row was there and the last beat recent
    # The others removed our row (we were silent too long): our live sessions are reopened.
    store.rows.clear()
    await r.tick(lambda: ["s1", "s2"])
    assert store.reopened == [["s1", "s2"]]
    # A gap longer than the bound (frozen process) also reopens, even with the row present.
    r._last_ok = time.monotonic() - 10
    await r.tick(lambda: ["s3"])
    assert store.reopened[-1] == ["s3"]
    # Nothing to reopen without live sessions.
    store.rows.clear()
    await r.tick(list)
    assert len(store.reopened) == 2
    r.draining = True
    await r.tick(list)
    assert store.rows[r.name] is True
    await r.leave()
    assert store.rows == {}


async def test_a_fixed_name_ends_its_orphans_first_and_a_failing_leave_is_logged() -> None:
    store = FakeStore()
    r = Replica(store, name="gw-a", interval=10)
    await r.register()
    assert store.orphans == ["gw-a"]
    store.fail = True
    with pytest.raises(StoreUnavailable):
        await r.tick(list)
    store.rows["gw-a"] = False

    async def broken(name: str) -> None:
        raise StoreUnavailable("database unavailable (test)")

    store.replica_leave = broken  # type: ignore[method-assign]
    await r.leave()  # logged, not raised


def test_default_names_are_new_for_every_process_and_safe() -> None:
    a, b = default_name(), default_name()
    assert a != b
    Settings(replica_name=a)  # valid as a setting too


def test_the_drain_notice_counts_down() -> None:
    d = Drain()
    assert not d.active
    d.until = time.monotonic() + 29.2
    assert d.active
    assert d.notice() == "this gateway is shutting down; this session ends in 30 s"
    d.until = time.monotonic() - 1
    assert d.notice().endswith("ends in 0 s")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("drain_timeout", -1, "drain_timeout must be 0-86400 seconds"),
        ("heartbeat_interval", 0, "heartbeat_interval must be 0.1-15 seconds"),
        ("heartbeat_interval", 30, "heartbeat_interval must be 0.1-15 seconds"),
        ("replica_name", "-x", "replica_name '-x'"),
        ("replica_name", "a b", "replica_name 'a b'"),
        ("replica_name", "x" * 65, "replica_name"),
    ],
)
def test_bad_replica_settings_are_one_clear_line(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Settings(**{field: value})


def test_replica_settings_defaults() -> None:
    s = Settings()
    assert (s.drain_timeout, s.replica_name, s.heartbeat_interval) == (30.0, None, 10.0)
    assert Settings(drain_timeout=0).drain_timeout == 0
