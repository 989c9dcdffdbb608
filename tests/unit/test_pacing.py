"""Pacing of channel requests (gateway.ssh.pacing): token buckets, env budget, event queue cap."""

from __future__ import annotations

import pytest

from gateway.ssh.pacing import EnvBudget, EventQueueCap, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    b = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    assert b.wait_time() == pytest.approx(0.5)
    clock.now += 0.5
    assert b.take() is True
    assert b.take() is False
    clock.now += 100  # a long pause refills only up to the burst
    assert sum(b.take() for _ in range(10)) == 3


def test_bucket_wait_time_is_zero_with_a_token() -> None:
    b = TokenBucket(rate=1.0, burst=1.0, clock=Clock())
    assert b.wait_time() == 0.0
    assert b.take()
    assert b.wait_time() == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bucket_refuses_nonsense(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


def test_env_budget_counts_entries() -> None:
    env = EnvBudget(max_entries=2, max_bytes=1000)
    assert env.admit(b"A", b"1")
    assert env.admit(b"B", b"2")
    assert not env.admit(b"C", b"3")
    # setting a name again replaces it and is not a new entry
    assert env.admit(b"A", b"again")


def test_env_budget_counts_bytes_and_replacement_frees_them() -> None:
    env = EnvBudget(max_entries=100, max_bytes=10)
    assert env.admit(b"K", b"12345678")  # 9 bytes
    assert not env.admit(b"L", b"12")  # would be 12
    assert env.admit(b"K", b"1")  # replaced: 2 bytes
    assert env.admit(b"L", b"1234567")  # 2 + 8 = 10
    assert not env.admit(b"M", b"")


def test_env_budget_refuses_one_huge_value() -> None:
    env = EnvBudget(max_entries=10, max_bytes=64)
    assert not env.admit(b"X", b"v" * 100)
    assert env.admit(b"X", b"v")


def test_event_queue_cap() -> None:
    q = EventQueueCap(limit=2)
    assert q.admit() and q.admit()
    assert not q.admit()
    q.done()
    assert q.admit()
    q.done()
    q.done()
    q.done()  # never below zero
    assert q.pending == 0
