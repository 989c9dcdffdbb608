"""The exec stream protocol: HTTP head, frame parsing, joining, flow control (no engine)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from gateway.engines.attach import (
    JOIN_MAX,
    LAG_SECONDS,
    READ_AHEAD_BUDGET,
    READ_AHEAD_MAX,
    READ_AHEAD_MIN,
    STDERR,
    STDOUT,
    AttachError,
    AttachProtocol,
    ReadAheadBudget,
)

UPGRADED = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = False
        self.closed = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


def make(
    tty: bool = False, budget: ReadAheadBudget | None = None
) -> tuple[AttachProtocol, FakeTransport]:
    proto = AttachProtocol(tty, budget or ReadAheadBudget(READ_AHEAD_BUDGET))
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, transport


async def read_all(proto: AttachProtocol) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while (msg := await proto.read()) is not None:
        out.append(msg)
    return out


async def test_frames_split_anywhere_come_out_whole() -> None:
    payload = frame(STDOUT, b"hello ") + frame(STDERR, b"oops\n") + frame(STDOUT, b"world\n")
    for cut in range(len(payload) + 1):
        proto, _ = make()
        proto.data_received(UPGRADED)
        await proto.head
        proto.data_received(payload[:cut])
        proto.data_received(payload[cut:])
        proto.eof_received()
        msgs = await read_all(proto)
        out = b"".join(d for k, d in msgs if k == STDOUT)
        err = b"".join(d for k, d in msgs if k == STDERR)
        assert (out, err) == (b"hello world\n", b"oops\n"), cut


async def test_head_and_first_frames_in_one_chunk_byte_by_byte() -> None:
    proto, _ = make()
    data = UPGRADED + frame(STDOUT, bytes(range(256)))
    for i in range(len(data)):
        proto.data_received(data[i : i + 1])
    proto.eof_received()
    await proto.head
    assert await read_all(proto) == [(STDOUT, bytes(range(256)))]


async def test_consecutive_frames_of_one_stream_are_joined_in_order() -> None:
    proto, _ = make()
    proto.data_received(UPGRADED)
    proto.data_received(
        frame(STDOUT, b"a") + frame(STDOUT, b"b") + frame(STDERR, b"E") + frame(STDOUT, b"c")
    )
    proto.eof_received()
    assert await read_all(proto) == [(STDOUT, b"ab"), (STDERR, b"E"), (STDOUT, b"c")]


async def test_join_stops_near_join_max() -> None:
    proto, _ = make()
    proto.data_received(UPGRADED)
    chunk = b"x" * 32768
    n = 2 * JOIN_MAX // len(chunk) + 3
    proto.data_received(b"".join(frame(STDOUT, chunk) for _ in range(n)))
    proto.eof_received()
    msgs = await read_all(proto)
    assert sum(len(d) for _, d in msgs) == n * len(chunk)
    assert all(len(d) <= JOIN_MAX + len(chunk) for _, d in msgs)
    assert len(msgs) >= 2


async def test_engine_error_frames_are_stderr_and_empty_frames_vanish() -> None:
    proto, _ = make()
    proto.data_received(UPGRADED + frame(3, b"engine says no") + frame(STDOUT, b""))
    proto.eof_received()
    assert await read_all(proto) == [(STDERR, b"engine says no")]


async def test_tty_stream_is_raw() -> None:
    proto, _ = make(tty=True)
    raw = frame(STDOUT, b"not a frame") + b"\x00\x01\x02"
    proto.data_received(b"HTTP/1.1 200 OK\r\n\r\n" + raw[:5])
    proto.data_received(raw[5:])
    proto.eof_received()
    msgs = await read_all(proto)
    assert b"".join(d for _, d in msgs) == raw
    assert {k for k, _ in msgs} == {STDOUT}


@pytest.mark.parametrize(
    ("response", "status", "message"),
    [
        (
            b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 56\r\n\r\n"
            b'{"message":"Container abc is not running"}\n' + b" " * 13,
            409,
            "Container abc is not running",
        ),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno such x",
            404,
            "no such x",
        ),
    ],
    ids=["409-json", "404-text"],
)
async def test_error_status_gives_the_engines_message(
    response: bytes, status: int, message: str
) -> None:
    proto, transport = make()
    for i in range(0, len(response), 7):
        proto.data_received(response[i : i + 7])
    with pytest.raises(AttachError) as err:
        await proto.head
    assert (err.value.status, err.value.message) == (status, message)
    assert transport.closed


async def test_error_without_length_ends_with_the_connection() -> None:
    proto, _ = make()
    proto.data_received(b"HTTP/1.1 500 Internal Server Error\r\n\r\nsomething broke")
    proto.connection_lost(None)
    with pytest.raises(AttachError, match="something broke"):
        await proto.head


@pytest.mark.parametrize("garbage", [b"SSH-2.0-nope\r\n\r\n", b"x" * 70000], ids=["status", "long"])
async def test_garbage_head_is_an_error_not_a_crash(garbage: bytes) -> None:
    proto, _ = make()
    proto.data_received(garbage)
    with pytest.raises(AttachError):
        await proto.head


async def test_connection_closed_before_answer() -> None:
    proto, _ = make()
    proto.connection_lost(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        await proto.head
    assert await proto.read() is None


async def test_reading_pauses_above_the_limit_and_resumes_when_drained() -> None:
    proto, transport = make()
    proto.data_received(UPGRADED)
    chunk = frame(STDOUT, b"y" * 65536)
    fed = 0
    while not transport.paused:
        proto.data_received(chunk)
        fed += 65536
        assert fed <= READ_AHEAD_MIN + 65536
    assert fed > READ_AHEAD_MIN
    got = 0
    while transport.paused:
        msg = await proto.read()
        assert msg is not None
        got += len(msg[1])
    assert got > 0
    proto.eof_received()
    rest = await read_all(proto)
    assert got + sum(len(d) for _, d in rest) == fed


def fill(proto: AttachProtocol, transport: FakeTransport, chunk: bytes) -> int:
    """Feed ``chunk`` until the socket is paused; returns the bytes fed."""
    fed = 0
    while not transport.paused:
        proto.data_received(chunk)
        fed += len(chunk)
    return fed


async def run_dry(proto: AttachProtocol, transport: FakeTransport, chunk: bytes) -> int:
    """A fast consumer: takes a paused stream back at once, then waits (runs dry)."""
    fill(proto, transport, chunk)
    while transport.paused:
        assert await proto.read() is not None
    while proto._frames:
        await proto.read()
    reader = asyncio.ensure_future(proto.read())
    await asyncio.sleep(0)
    proto.data_received(chunk)
    assert await reader is not None
    return proto.read_ahead


async def test_read_ahead_grows_while_the_consumer_keeps_running_dry() -> None:
    proto, transport = make()
    proto.data_received(UPGRADED)
    chunk = frame(STDOUT, b"z" * 16384)
    assert proto.read_ahead == READ_AHEAD_MIN
    limits = []
    for _ in range(8):
        limits.append(await run_dry(proto, transport, chunk))
    assert limits == sorted(limits) and limits[0] == 2 * READ_AHEAD_MIN
    assert limits[-1] == READ_AHEAD_MAX
    # Still bounded: paused one chunk past the largest read-ahead at most.
    fill(proto, transport, chunk)
    assert READ_AHEAD_MAX < proto._buffered <= READ_AHEAD_MAX + 16384


async def test_read_ahead_shrinks_when_the_consumer_lags() -> None:
    budget = ReadAheadBudget(READ_AHEAD_BUDGET)
    proto, transport = make(budget=budget)
    proto.data_received(UPGRADED)
    proto._limit = READ_AHEAD_MIN + budget.take(READ_AHEAD_MAX - READ_AHEAD_MIN)
    chunk = frame(STDOUT, b"s" * 65536)
    for _ in range(6):
        fill(proto, transport, chunk)
        await asyncio.sleep(LAG_SECONDS * 1.5)  # a slow client: the stream stays paused
        while transport.paused:
            assert await proto.read() is not None
    assert proto.read_ahead == READ_AHEAD_MIN
    assert proto._buffered <= READ_AHEAD_MIN
    assert budget.free == budget.total  # what it gave up is there for other streams


async def test_all_streams_together_read_ahead_within_one_budget() -> None:
    # 500 fast streams each grew to READ_AHEAD_MAX: 500 MiB held between engine and clients.
    budget = ReadAheadBudget(3 * READ_AHEAD_MIN)
    chunk = frame(STDOUT, b"f" * 16384)
    streams = [make(budget=budget) for _ in range(4)]
    for proto, _ in streams:
        proto.data_received(UPGRADED)
    for _ in range(6):
        for proto, transport in streams:
            await run_dry(proto, transport, chunk)
    limits = [proto.read_ahead for proto, _ in streams]
    assert sum(limits) <= 4 * READ_AHEAD_MIN + budget.total
    assert max(limits) > READ_AHEAD_MIN  # growth still happens, within the budget
    assert min(limits) == READ_AHEAD_MIN  # the last one found it spent
    # A stream that ends gives its growth back, and a waiting one can take it.
    first, _ = streams[0]
    grown = first.read_ahead - READ_AHEAD_MIN
    first.connection_lost(None)
    first.connection_lost(None)  # once only
    assert budget.free == grown
    proto, transport = streams[3]
    assert await run_dry(proto, transport, chunk) > READ_AHEAD_MIN


async def test_read_waits_for_data() -> None:
    proto, _ = make()
    proto.data_received(UPGRADED)
    reader = asyncio.ensure_future(proto.read())
    await asyncio.sleep(0)
    assert not reader.done()
    proto.data_received(frame(STDOUT, b"late"))
    assert await asyncio.wait_for(reader, 1) == (STDOUT, b"late")


async def test_input_write_eof_and_close() -> None:
    proto, transport = make()
    proto.data_received(UPGRADED)
    await proto.write(b"input")
    proto.write_eof()
    assert bytes(transport.written) == b"input" and transport.eof
    proto.close()
    with pytest.raises(ConnectionResetError):
        await proto.write(b"more")
