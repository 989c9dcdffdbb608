"""CoalescingTransport: packets of one loop turn are joined, and all connections together never
queue much more than TURN_PENDING_MAX in one turn."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.ssh.transport import TURN_PENDING_MAX, CoalescingTransport


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


async def test_one_fast_connection_keeps_one_write_per_turn() -> None:
    inner = Inner()
    t = CoalescingTransport(inner, asyncio.get_running_loop())
    packet = b"x" * (32 * 1024 + 52)
    for _ in range(32):  # 1 MiB: what one session may queue before it must wait
        t.write(packet)
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [packet * 32]
    assert CoalescingTransport.pending_all == 0


async def test_all_connections_together_queue_at_most_the_turn_budget() -> None:
    # 500 sessions writing 1 MB each in one turn held all of it until the turn's end.
    loop = asyncio.get_running_loop()
    packet = b"y" * (32 * 1024 + 52)
    conns = [(inner := Inner(), CoalescingTransport(inner, loop)) for _ in range(60)]
    for _ in range(8):
        for _, t in conns:
            t.write(packet)
            assert CoalescingTransport.pending_all <= TURN_PENDING_MAX + len(packet)
    assert 60 * 8 * len(packet) > 1.5 * TURN_PENDING_MAX
    assert any(inner.writes for inner, _ in conns), "nothing was written during the turn"
    await asyncio.sleep(0)
    for inner, _ in conns:
        assert b"".join(inner.writes) == packet * 8  # in order, nothing lost or repeated
    assert CoalescingTransport.pending_all == 0
