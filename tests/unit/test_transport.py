"""CoalescingTransport: packets of one loop turn are joined, and never pile up past FLUSH_AT."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.ssh.transport import FLUSH_AT, CoalescingTransport


class Inner(asyncio.Transport):
    """Records each write the wrapper makes (a fake socket transport: pure logic under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0  # the socket took everything

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def test_small_writes_of_one_turn_are_joined_at_its_end() -> None:
    inner = Inner()
    t = CoalescingTransport(inner, asyncio.get_running_loop())
    for i in range(10):
        t.write(bytes([i]) * 100)
    assert inner.writes == []  # nothing before the end of the turn
    await asyncio.sleep(0)
    assert inner.writes == [b"".join(bytes([i]) * 100 for i in range(10))]
    await asyncio.sleep(0)
    assert len(inner.writes) == 1  # the scheduled flush found nothing more


async def test_a_turn_holds_at_most_flush_at_before_writing() -> None:
    # 500 sessions writing 1 MB in one turn held all of it until the turn's end.
    inner = Inner()
    t = CoalescingTransport(inner, asyncio.get_running_loop())
    packet = b"x" * (32 * 1024 + 52)
    for _ in range(32):
        t.write(packet)
        assert t.get_write_buffer_size() < FLUSH_AT + len(packet)
    assert inner.writes, "nothing was written during the turn"
    await asyncio.sleep(0)
    assert b"".join(inner.writes) == packet * 32
    assert all(len(w) >= FLUSH_AT for w in inner.writes[:-1])  # still few, large writes
