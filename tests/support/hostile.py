"""Clients that stop reading: an asyncssh session that keeps what arrives, a way to stop
reading the socket under it, and raw SFTP packets to pipeline requests with.

The attack: a huge channel window, then ``stop_reading`` — the gateway sees a peer whose TCP
receive window is closed and must stop producing instead of buffering.
"""

from __future__ import annotations

import asyncio

import asyncssh

from tests.support.memory import rss, watch_growth

FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_READ, FXP_HANDLE = 1, 2, 3, 5, 102


class Sink(asyncssh.SSHClientSession[bytes]):
    """Keeps the first MiB of what arrives; tells when something did."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.received = 0
        self._event = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.received += len(data)
        if len(self.buf) < 1 << 20:
            self.buf += data
        self._event.set()

    async def wait_data(self, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not self.received:
                self._event.clear()
                await self._event.wait()

    async def sftp_packet(self, timeout: float = 30) -> tuple[int, bytes]:
        """The next SFTP packet: (type, body after the type byte)."""
        async with asyncio.timeout(timeout):
            while True:
                if len(self.buf) >= 4:
                    n = int.from_bytes(self.buf[:4], "big")
                    if len(self.buf) >= 4 + n:
                        pkt = bytes(self.buf[4 : 4 + n])
                        del self.buf[: 4 + n]
                        return pkt[0], pkt[1:]
                self._event.clear()
                await self._event.wait()


def stop_reading(conn: asyncssh.SSHClientConnection) -> None:
    """The client no longer reads its TCP socket (its receive window closes)."""
    transport = conn._transport  # the attack needs the raw socket
    assert transport is not None
    transport.pause_reading()


def sftp_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def sftp_packet(kind: int, body: bytes) -> bytes:
    payload = bytes([kind]) + body
    return len(payload).to_bytes(4, "big") + payload


async def growth_under_cat_zero(
    conn: asyncssh.SSHClientConnection,
    socket_of: asyncssh.SSHClientConnection,
    pid: int,
    seconds: float,
    window: int,
) -> int:
    """Run ``cat /dev/zero`` on ``conn`` with a channel ``window``; once output flows, stop
    reading the socket of ``socket_of`` (``conn`` itself, or the outer connection of a jump) and
    return how much the gateway ``pid`` grew in ``seconds``."""
    res = await conn.run("echo warm", encoding=None)  # one-time allocations in the base line
    assert res.stdout == b"warm\n", res
    await asyncio.sleep(0.5)
    base = rss(pid)
    _, sink = await conn.create_session(Sink, "cat /dev/zero", encoding=None, window=window)
    await sink.wait_data()
    stop_reading(socket_of)
    return await watch_growth(pid, base, seconds)
