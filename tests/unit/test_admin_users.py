"""gateway.admin.users: argon2 hashes (64 MiB each) run two at a time, however many requests
ask at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.admin import users


async def test_hashes_run_two_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    running = peak = 0
    lock = threading.Lock()

    def slow_hash(password: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return "$argon2id$" + password

    monkeypatch.setattr(users, "hash_password", slow_hash)
    out = await asyncio.gather(*(users.hashed(f"pw{i}") for i in range(8)))
    assert out == [f"$argon2id$pw{i}" for i in range(8)]
    assert peak == 2
    assert await users.hashed(None) is None
