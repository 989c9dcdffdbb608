"""The web terminal's side of the bridge: a browser's WebSocket as the bridge sees a channel.

:class:`WebInput` is the session's stdin (keystrokes from binary frames; a resize from a JSON
frame arrives as ``asyncssh.TerminalSizeChanged``, the way an SSH channel's reader reports it),
:class:`WebOutput` its stdout and stderr (binary frames, and the JSON control frames in order
with them). Both are bounded: the input is read from the socket only while less than
:data:`IN_HIGH` bytes wait for the container, and ``drain`` holds the bridge's output while
:data:`OUT_HIGH` bytes wait for the browser (whose socket aiohttp writes with back-pressure).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any, Protocol

import asyncssh

IN_HIGH = 64 * 1024  # keystrokes (pasted text) waiting for the container
OUT_HIGH = 256 * 1024  # output waiting for the browser
MAX_SIZE = 1000  # columns or rows a resize may ask for


class FrameSink(Protocol):
    """What :class:`WebOutput` sends through (``aiohttp.web.WebSocketResponse``)."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_str(self, data: str) -> None: ...


def parse_control(text: str) -> tuple[int, int] | None:
    """A JSON control frame from the page: ``{"type": "resize", "cols": C, "rows": R}`` →
    (cols, rows); None for anything else (ignored)."""
    if len(text) > 256:
        return None
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("type") != "resize":
        return None
    cols, rows = msg.get("cols"), msg.get("rows")
    if not isinstance(cols, int) or not isinstance(rows, int) or isinstance(cols, bool):
        return None
    if isinstance(rows, bool) or not (1 <= cols <= MAX_SIZE and 1 <= rows <= MAX_SIZE):
        return None
    return cols, rows


class WebInput:
    """Keystrokes and resizes from the browser, read by the bridge like an SSH channel."""

    def __init__(self, cols: int, rows: int) -> None:
        self.size = (cols, rows)
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._resized = False
        self._eof = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= IN_HIGH:
            self._room.clear()
        self._wake.set()

    def resize(self, cols: int, rows: int) -> None:
        """The newest size wins; the reader sees one resize for several quick ones."""
        self.size = (cols, rows)
        self._resized = True
        self._wake.set()

    def eof(self) -> None:
        self._eof = True
        self._wake.set()
        self._room.set()

    async def room(self) -> None:
        """Wait until the container took enough input to read more from the socket."""
        await self._room.wait()

    async def read(self, n: int = -1) -> bytes:
        while True:
            if self._resized:
                self._resized = False
                cols, rows = self.size
                raise asyncssh.TerminalSizeChanged(cols, rows, 0, 0)
            if self._chunks:
                data = self._chunks.popleft()
                if 0 < n < len(data):
                    data, rest = data[:n], data[n:]
                    self._chunks.appendleft(rest)
                self._queued -= len(data)
                if self._queued < IN_HIGH:
                    self._room.set()
                return data
            if self._eof:
                return b""
            self._wake.clear()
            await self._wake.wait()


class WebOutput:
    """Output for the browser: frames queued in order, sent by :meth:`run`."""

    def __init__(self, ws: FrameSink) -> None:
        self._ws = ws
        self._items: deque[bytes | str] = deque()
        self._queued = 0
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._busy = False
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("the browser went away")
        if data:
            self._items.append(bytes(data))
            self._queued += len(data)
            if self._queued >= OUT_HIGH:
                self._room.clear()
            self._more.set()

    def control(self, **msg: Any) -> None:
        """A JSON control frame (exit status, error), after the output written before it."""
        if not self.closed:
            self._items.append(json.dumps(msg))
            self._more.set()

    async def drain(self) -> None:
        await self._room.wait()
        if self.closed:
            raise ConnectionError("the browser went away")

    def close(self) -> None:
        """Nothing more is sent (the socket is gone); waiting writers are let go."""
        self.closed = True
        self._items.clear()
        self._queued = 0
        self._room.set()
        self._more.set()
        self._idle.set()

    async def flush(self) -> None:
        """Wait until everything queued was sent (or the socket went away)."""
        while (self._items or self._busy) and not self.closed:
            self._idle.clear()
            await self._idle.wait()

    async def run(self) -> None:
        """Send what is queued, in order, as fast as the browser's socket takes it."""
        try:
            while not self.closed:
                await self._more.wait()
                self._more.clear()
                self._busy = True
                while self._items and not self.closed:
                    item = self._items.popleft()
                    if isinstance(item, str):
                        await self._ws.send_str(item)
                        continue
                    await self._ws.send_bytes(item)  # waits while the socket's buffer is full
                    self._queued -= len(item)  # counted until sent
                    if self._queued < OUT_HIGH:
                        self._room.set()
                self._busy = False
                self._idle.set()
        finally:
            self.close()
