"""asyncssh's SFTP request loop, paced by the client's socket and bounded.

:func:`run_sftp_server` serves the sftp subsystem with :class:`PacedSFTPHandler`: the next
request is read only while the connection's socket has room (:class:`WriteFlow`), open handles
are limited, and the ``copy-data`` extension copies a bounded amount per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import Protocol

import asyncssh
from asyncssh import SFTPBadMessage, SFTPFailure, SFTPInvalidHandle, SFTPNoConnection
from asyncssh.constants import FXP_OPEN, FXP_OPENDIR
from asyncssh.packet import Byte, PacketDecodeError, SSHPacket, UInt32
from asyncssh.sftp import SFTPServerHandler

from gateway.sftp.compat import LenientSFTPHandler
from gateway.sftp.order import Order, Ticket, claim_of, normalizer

log = logging.getLogger(__name__)

# Server-side copies (the copy-data extension) go through the container: bounded per request.
COPY_DATA_MAX = 64 << 20
COPY_DATA_BLOCK = 256 << 10
# Replies written in one event-loop turn are joined up to this many bytes before they reach the
# channel: asyncssh cuts each write into packets of the client's maximum size (32 KiB for
# OpenSSH), so a 32 KiB read reply alone costs two SSH packets (32768 + 13 bytes), four joined
# replies five. Bounded: at most this much waits per session, for at most one turn.
SEND_BATCH = 128 << 10


class WriteFlow(Protocol):
    """Room in the connection's socket (``gateway.ssh.transport.CoalescingTransport``)."""

    @property
    def writable(self) -> bool: ...

    async def wait_writable(self) -> None: ...


class PacedSFTPHandler(LenientSFTPHandler):
    """asyncssh's SFTP server loop, taking the next request only while replies can leave
    (requests read as leniently as OpenSSH's sftp-server: :mod:`gateway.sftp.compat`).

    asyncssh handles one request at a time and writes each reply without waiting for the
    client's socket: a client that pipelines large reads and stops reading would have every
    reply pile up in the gateway. Here the next request is not read while more than the
    connection's high-water mark is queued, so at most one reply (<= 4 MiB) goes beyond it.
    """

    def __init__(
        self,
        server: asyncssh.SFTPServer,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
        sftp_version: int,
        flow: WriteFlow | None,
        max_handles: int = 128,
    ) -> None:
        super().__init__(server, reader, writer, sftp_version)
        self._flow = flow
        self._max_handles = max_handles
        self._out: list[bytes] = []
        self._out_len = 0
        self._out_scheduled = False
        self._opening = 0  # OPEN/OPENDIR requests running (their handles are not counted yet)
        start_dir = getattr(server, "start_dir", None)
        self._normalize = normalizer(start_dir if callable(start_dir) else lambda: None)

    def send_packet(self, pkttype: int, pktid: int | None, *args: bytes) -> None:
        """asyncssh's ``send_packet``, but replies of one turn leave joined (:data:`SEND_BATCH`)."""
        writer = self._writer
        if not writer:
            raise SFTPNoConnection("Connection not open")
        if writer.channel.is_closing():
            return
        payload = Byte(pkttype) + b"".join(args)
        self._out.append(UInt32(len(payload)))
        self._out.append(payload)
        self._out_len += 4 + len(payload)
        self.log_sent_packet(pkttype, pktid, payload)
        if self._out_len >= SEND_BATCH:
            self._flush_out()
        elif not self._out_scheduled:
            self._out_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._out_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._out_len = 0
        writer = self._writer
        if writer and not writer.channel.is_closing():
            # the channel may have closed for sending meanwhile: nobody left to answer
            with contextlib.suppress(OSError):
                writer.write(data)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self._flush_out()  # the last replies, before asyncssh closes the channel

    def _check_handles(self) -> None:
        """asyncssh keeps every handle a client opens (directories cost nothing to open):
        at most ``max_handles`` files and directories at once (opens still running count)."""
        held = len(self._file_handles) + len(self._dir_handles) + self._opening
        if held >= self._max_handles:
            raise SFTPFailure(f"too many open handles (at most {self._max_handles})")

    async def _process_open_bounded(self, packet: SSHPacket) -> bytes:
        self._check_handles()
        self._opening += 1
        try:
            handle: bytes = await SFTPServerHandler._process_open(self, packet)
        finally:
            self._opening -= 1
        return handle

    async def _process_opendir_bounded(self, packet: SSHPacket) -> bytes:
        self._check_handles()
        self._opening += 1
        try:
            handle: bytes = await SFTPServerHandler._process_opendir(self, packet)
        finally:
            self._opening -= 1
        return handle

    def _handle_path(self, handle: bytes) -> bytes | None:
        file_obj = self._file_handles.get(handle)
        if file_obj is None:
            return None
        path_of = getattr(self._server, "handle_path", None)
        path = path_of(file_obj) if callable(path_of) else None
        return self._normalize(path) if isinstance(path, bytes) else None

    async def recv_packets(self) -> None:
        """asyncssh's request loop, but requests that cannot see each other's effects run at
        the same time (:mod:`gateway.sftp.order`); the others keep their order. The session
        ends (``_cleanup``) only after every request read before the end has been answered."""
        order = Order()
        room = asyncio.Event()
        finished: dict[Ticket, asyncio.Event] = {}
        tasks: set[asyncio.Task[None]] = set()

        async def serve(ticket: Ticket, pkttype: int, pktid: int, packet: SSHPacket) -> None:
            try:
                for earlier in ticket.after:
                    ev = finished.get(earlier)
                    if ev is not None:
                        await ev.wait()
                await self._process_packet(pkttype, pktid, packet)
            except (OSError, asyncssh.Error) as exc:  # the reply could not leave
                log.debug("SFTP request %d ended: %r", pktid, exc)
            finally:
                order.finish(ticket)
                finished.pop(ticket).set()
                room.set()

        failure: Exception | None = None
        try:
            while self._reader:
                packet = await self.recv_packet()
                pkttype = packet.get_byte()
                pktid = packet.get_uint32()
                self.log_received_packet(pkttype, pktid, packet)
                body = memoryview(packet.get_full_payload())[5:]
                claim = claim_of(pkttype, body, self._handle_path, self._normalize)
                while not order.has_room(claim.cost):
                    room.clear()
                    await room.wait()
                ticket = order.admit(claim)
                finished[ticket] = asyncio.Event()
                task = asyncio.create_task(serve(ticket, pkttype, pktid, packet))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except PacketDecodeError as exc:
            failure = SFTPBadMessage(str(exc))
        except EOFError:
            failure = None
        except (OSError, asyncssh.Error) as exc:
            failure = exc
        except BaseException:  # cancelled (kill, revocation, shutdown): nothing is answered
            await _cancel_all(tasks)
            raise
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            await _cancel_all(tasks)
            raise
        await self._cleanup(failure)

    async def recv_packet(self) -> SSHPacket:
        flow = self._flow
        if flow is not None and not flow.writable:
            await flow.wait_writable()
        return await super().recv_packet()

    async def _process_copy_data_bounded(self, packet: SSHPacket) -> None:
        """The ``copy-data`` extension, bounded: at most :data:`COPY_DATA_MAX` bytes per request.

        asyncssh's own loop copies "to the end" (length 0) without limit, so a source that
        never ends (``/dev/zero``) would make one request run and write forever. Here the copy
        stops with an error at the bound, and when the channel closes; the session's end
        (kill, revocation, shutdown) cancels it between blocks.
        """
        src_handle = packet.get_string()
        src_offset = packet.get_uint64()
        length = packet.get_uint64()
        dst_handle = packet.get_string()
        dst_offset = packet.get_uint64()
        packet.check_end()
        src = self._file_handles.get(src_handle)
        dst = self._file_handles.get(dst_handle)
        if not src or not dst:
            raise SFTPInvalidHandle("Invalid file handle")
        if length > COPY_DATA_MAX:
            raise SFTPFailure(f"copy-data: at most {COPY_DATA_MAX} bytes per request")
        to_end = length == 0
        left = COPY_DATA_MAX if to_end else length
        while left:
            if self._writer is None or self._writer.channel.is_closing():
                raise SFTPFailure("copy-data: the session ended")
            size = min(left, COPY_DATA_BLOCK)
            read = self._server.read(src, src_offset, size)
            data = await read if inspect.isawaitable(read) else read
            written = self._server.write(dst, dst_offset, data)
            if inspect.isawaitable(written):
                await written
            if len(data) < size:
                return
            src_offset += size
            dst_offset += size
            left -= size
        if to_end:
            raise SFTPFailure(f"copy-data: stopped after {COPY_DATA_MAX} bytes (the bound)")

    _packet_handlers = {  # noqa: RUF012 (asyncssh's own table, with copy-data replaced)
        **SFTPServerHandler._packet_handlers,
        b"copy-data": _process_copy_data_bounded,  # type: ignore[dict-item]
        FXP_OPEN: _process_open_bounded,  # type: ignore[dict-item]
        FXP_OPENDIR: _process_opendir_bounded,  # type: ignore[dict-item]
    }


async def _cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_sftp_server(
    server: asyncssh.SFTPServer,
    reader: asyncssh.SSHReader[bytes],
    writer: asyncssh.SSHWriter[bytes],
    sftp_version: int,
    flow: WriteFlow | None = None,
    max_handles: int = 128,
) -> None:
    """Serve the sftp subsystem like ``asyncssh.sftp.run_sftp_server``, paced by ``flow``."""
    reader.logger.info("Starting SFTP server")
    await PacedSFTPHandler(server, reader, writer, sftp_version, flow, max_handles).run()
