"""The SFTP loop's reply batching (gateway.sftp.loop.PacedSFTPHandler.send_packet), with a
recording stand-in for asyncssh's channel writer: which bytes reach the channel, in which
writes, when."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import asyncssh
from asyncssh.logging import logger

from gateway.sftp.loop import SEND_BATCH, PacedSFTPHandler

FXP_DATA = 103


class Channel:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


class Writer:
    """Records every write the handler makes on the channel."""

    def __init__(self) -> None:
        self.channel = Channel()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class Reader:
    logger = logger


def handler() -> tuple[PacedSFTPHandler, Writer]:
    w = Writer()
    h = PacedSFTPHandler(asyncssh.SFTPServer(None), Reader(), w, 3, None)  # type: ignore[arg-type]
    return h, w


def packets(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        out.append((data[4], data[5 : 4 + n]))
        data = data[4 + n :]
    return out


def reply(h: PacedSFTPHandler, i: int, size: int) -> bytes:
    body = bytes([i % 256]) * size
    h.send_packet(FXP_DATA, i, struct.pack(">I", i), struct.pack(">I", size) + body)
    return body


async def test_replies_of_one_turn_reach_the_channel_as_one_write() -> None:
    h, w = handler()
    for i in range(3):
        reply(h, i, 1000)
    assert w.writes == []  # held until the end of the turn
    await asyncio.sleep(0)
    assert len(w.writes) == 1
    got = packets(w.writes[0])
    assert [(t, struct.unpack(">I", p[:4])[0]) for t, p in got] == [(FXP_DATA, i) for i in range(3)]


async def test_a_full_batch_leaves_at_once_and_order_is_kept() -> None:
    h, w = handler()
    n = SEND_BATCH // 32768 + 2
    bodies = [reply(h, i, 32768) for i in range(n)]
    assert len(w.writes) == 1 and len(w.writes[0]) >= SEND_BATCH  # not held past the bound
    held = sum(len(b) for b in h._out)
    assert held < SEND_BATCH
    await asyncio.sleep(0)
    got = packets(b"".join(w.writes))
    assert [p[8:] for _, p in got] == bodies


async def test_nothing_is_written_on_a_closing_channel() -> None:
    h, w = handler()
    reply(h, 1, 10)
    w.channel.closing = True
    await asyncio.sleep(0)
    reply(h, 2, 10)
    await asyncio.sleep(0)
    assert w.writes == []


def test_send_after_the_writer_is_gone_is_an_error() -> None:
    h, _ = handler()
    h._writer = None
    try:
        h.send_packet(FXP_DATA, 1, b"")
    except asyncssh.SFTPNoConnection:
        return
    raise AssertionError("no error")


async def test_the_last_replies_leave_when_the_loop_ends(monkeypatch: Any) -> None:
    h, w = handler()

    async def serve_once(self: Any) -> None:
        reply(self, 7, 100)  # a reply written just before the loop returns

    monkeypatch.setattr(asyncssh.sftp.SFTPServerHandler, "run", serve_once)
    await h.run()
    assert len(w.writes) == 1 and packets(w.writes[0])[0][0] == FXP_DATA
