"""The byte stream of one attached exec: our own protocol on the hijacked engine connection.

``POST /exec/{id}/start`` with ``Upgrade: tcp`` turns the HTTP connection into the process's
stdin (our writes) and its output (the engine's writes): raw bytes for a TTY exec, otherwise
frames of an 8-byte header (stream 1 = stdout, 2 = stderr, 3 = an engine error; 4-byte
big-endian length) and the payload.

This replaces aiodocker's generic stream for the hot path of every session and file transfer:
- frames are parsed straight out of each received chunk (no intermediate buffer per frame, no
  queue item and no task switch per frame);
- a reader gets everything of one stream that is already here, joined (up to ``JOIN_MAX``), so
  a fast producer yields large writes on the SSH side;
- output is read ahead before the socket is paused, so the engine keeps producing while the
  consumer is busy (aiodocker paused at 128 KiB). The read-ahead adapts: it starts at
  ``READ_AHEAD_MIN``, doubles (up to ``READ_AHEAD_MAX``) each time the consumer ran dry after
  the socket had been paused (the pause cost throughput), and halves each time the consumer
  took longer than ``LAG_SECONDS`` to take the paused stream back down (a slow client: more
  read-ahead only holds memory). Thousands of streams to slow clients thus hold 64 KiB each, one
  fast stream reads ahead as far as it helps. Read-ahead above the minimum comes from one
  budget for the whole gateway (``READ_AHEAD_BUDGET``), so that hundreds of fast streams do not
  hold 1 MiB each: a stream that finds the budget spent keeps the read-ahead it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque

from gateway.engines.base import STDERR, STDOUT

log = logging.getLogger(__name__)

_ENGINE_ERROR = 3

READ_AHEAD_MIN = 64 * 1024
READ_AHEAD_MAX = 1024 * 1024
READ_AHEAD_BUDGET = 64 * 1024 * 1024  # all streams' read-ahead above READ_AHEAD_MIN, together
LAG_SECONDS = 0.02
JOIN_MAX = 256 * 1024
HEAD_MAX = 64 * 1024
_HEADER = 8


class AttachError(Exception):
    """The engine refused to start the exec: HTTP status and the engine's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ReadAheadBudget:
    """Read-ahead above ``READ_AHEAD_MIN``, shared by the streams that use it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total

    def take(self, want: int) -> int:
        """Up to ``want`` bytes of it (what is left, perhaps nothing)."""
        got = max(0, min(want, self.free))
        self.free -= got
        return got

    def give(self, n: int) -> None:
        self.free = min(self.total, self.free + max(n, 0))

    def __repr__(self) -> str:
        return f"<ReadAheadBudget {self.total - self.free} of {self.total} in use>"


#: The gateway's one budget: every stream takes its growth from it and gives it back.
READ_AHEAD = ReadAheadBudget(READ_AHEAD_BUDGET)


class AttachProtocol(asyncio.Protocol):
    def __init__(self, tty: bool, budget: ReadAheadBudget = READ_AHEAD) -> None:
        self.tty = tty
        self._budget = budget
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        # Response head (then, on an error status, its body).
        self.head: asyncio.Future[None] = self._loop.create_future()
        self._head_buf = bytearray()
        self._status = 0
        self._error_body: bytearray | None = None
        self._error_len: int | None = None
        # Output.
        self._frames: deque[tuple[int, bytes]] = deque()
        self._buffered = 0
        self._partial = bytearray()
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._limit = READ_AHEAD_MIN  # read-ahead: pause the socket above this
        self._paused_at = 0.0
        self._pressed = False  # paused since the consumer last ran dry
        # Input.
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._error_body is not None:
            if not self.head.done():
                self._error_body += data
                self._check_error_body()
            return
        if not self.head.done():
            self._head_received(data)
            return
        if self.tty:
            if data:
                self._push(STDOUT, data)
        elif self._partial:
            self._partial += data
            used = self._parse(self._partial)
            del self._partial[:used]
        else:
            used = self._parse(data)
            if used < len(data):
                self._partial += memoryview(data)[used:]
        if self._buffered > self._limit and not self._paused and self.transport is not None:
            self._paused = True
            self._pressed = True
            self._paused_at = self._loop.time()
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._finish(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the engine closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # Response head ----------------------------------------------------------------------

    def _head_received(self, data: bytes) -> None:
        self._head_buf += data
        end = self._head_buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head_buf) > HEAD_MAX:
                self._fail_head(AttachError(502, "unreadable answer from the engine"))
            return
        head = bytes(self._head_buf[:end]).decode("latin-1")
        rest = bytes(self._head_buf[end + 4 :])
        self._head_buf = bytearray()
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        try:
            self._status = int(parts[1])
        except (IndexError, ValueError):
            self._fail_head(AttachError(502, "unreadable answer from the engine"))
            return
        if self._status in (101, 200):
            self.head.set_result(None)
            if rest:
                self.data_received(rest)
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._error_body = bytearray(rest)
        length = headers.get("content-length", "")
        self._error_len = int(length) if length.isdigit() else None
        self._check_error_body()

    def _check_error_body(self) -> None:
        body = self._error_body
        assert body is not None
        if self._error_len is not None and len(body) >= self._error_len:
            self._fail_head(AttachError(self._status, _error_message(bytes(body), self._status)))
        elif len(body) > HEAD_MAX:
            self._fail_head(AttachError(self._status, f"HTTP {self._status}"))

    def _fail_head(self, exc: BaseException) -> None:
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # marked retrieved: the starter may have gone already
        if self.transport is not None:
            self.transport.close()

    # Output -----------------------------------------------------------------------------

    def _parse(self, buf: bytes | bytearray) -> int:
        """Take every whole frame out of ``buf``; returns how many bytes were used."""
        pos = 0
        n = len(buf)
        view = memoryview(buf)
        try:
            while n - pos >= _HEADER:
                size = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                end = pos + _HEADER + size
                if end > n:
                    break
                kind = buf[pos]
                if size:
                    self._push(
                        STDERR if kind == _ENGINE_ERROR else kind, bytes(view[pos + 8 : end])
                    )
                pos = end
        finally:
            view.release()
        return pos

    def _push(self, kind: int, data: bytes) -> None:
        self._frames.append((kind, data))
        self._buffered += len(data)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self.head.done():
            if self._error_body is not None:
                message = _error_message(bytes(self._error_body), self._status)
                self._fail_head(AttachError(self._status, message))
            else:
                self._fail_head(
                    exc or AttachError(502, "the engine closed the connection before answering")
                )
        self._eof = True
        self._exc = exc
        self._budget.give(self._limit - READ_AHEAD_MIN)  # no more reading ahead
        self._limit = READ_AHEAD_MIN
        self._wake()

    async def read(self) -> tuple[int, bytes] | None:
        """The next output: all that is buffered of one stream, joined; None at the end."""
        while not self._frames:
            if self._eof:
                if self._exc is not None:
                    log.debug("attach: stream ended with %r", self._exc)
                return None
            if self._pressed:
                # Ran dry after a pause: a larger read-ahead would have kept the engine going.
                self._pressed = False
                want = min(self._limit * 2, READ_AHEAD_MAX) - self._limit
                self._limit += self._budget.take(want)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        kind, data = self._frames.popleft()
        if self._frames and self._frames[0][0] == kind and len(data) < JOIN_MAX:
            parts = [data]
            size = len(data)
            while self._frames and self._frames[0][0] == kind and size < JOIN_MAX:
                more = self._frames.popleft()[1]
                parts.append(more)
                size += len(more)
            data = b"".join(parts)
        self._buffered -= len(data)
        if self._paused and self._buffered <= self._limit // 2 and self.transport is not None:
            self._paused = False
            if self._loop.time() - self._paused_at > LAG_SECONDS:
                # The consumer lags (a slow client): read-ahead would only hold memory.
                smaller = max(self._limit // 2, READ_AHEAD_MIN)
                self._budget.give(self._limit - smaller)
                self._limit = smaller
            self.transport.resume_reading()
        return kind, data

    @property
    def read_ahead(self) -> int:
        """The current read-ahead: output buffered above this pauses the engine's socket."""
        return self._limit

    # Input ------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the engine closed the connection")
        transport.write(data)
        if self._write_paused:
            if self._drain is None or self._drain.done():
                self._drain = self._loop.create_future()
            await self._drain

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _error_message(body: bytes, status: int) -> str:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace").strip()
    return message.strip() or f"HTTP {status}"


async def start_attached(
    loop: asyncio.AbstractEventLoop,
    exec_id: str,
    tty: bool,
    *,
    unix_path: str | None = None,
    host: str | None = None,
    port: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> AttachProtocol:
    """Open a connection to the engine, start the exec on it and return its stream."""
    proto: AttachProtocol
    if unix_path is not None:
        _, proto = await loop.create_unix_connection(lambda: AttachProtocol(tty), unix_path)
    else:
        assert host is not None and port is not None
        _, proto = await loop.create_connection(
            lambda: AttachProtocol(tty), host, port, ssl=ssl_context
        )
    body = json.dumps({"Detach": False, "Tty": tty}).encode()
    request = (
        f"POST /exec/{exec_id}/start HTTP/1.1\r\n"
        f"Host: docker\r\n"
        f"Content-Type: application/json\r\n"
        f"Connection: Upgrade\r\n"
        f"Upgrade: tcp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    assert proto.transport is not None
    proto.transport.write(request)
    try:
        await asyncio.wait_for(asyncio.shield(proto.head), timeout)
    except BaseException:
        proto.close()
        raise
    return proto
