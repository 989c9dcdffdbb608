"""SFTP requests parsed as leniently as OpenSSH's sftp-server, never more loosely.

asyncssh's server refuses a request when anything follows the fields it parses
(``SSH_FX_BAD_MESSAGE`` "Unexpected data at end of packet") and when an attribute block has
flags SFTP v3 does not define. OpenSSH's sftp-server ignores both: after a request it drops
what it did not read, and its attribute decoder reads only the fields it knows. Clients rely
on that: rclone (Go ``pkg/sftp``) sends the last, short write of an upload with bytes after the
data. :class:`LenientSFTPHandler` does the same as sftp-server:

- every request arrives as a :class:`LenientPacket`, whose ``check_end`` accepts (and logs)
  trailing bytes; a request that is too SHORT still fails cleanly ("Incomplete packet");
- in the requests that carry attributes (open, setstat, fsetstat, mkdir, lsetstat) the
  attribute flags SFTP v3 does not define are cleared before asyncssh decodes them, as
  sftp-server never looks at them;
- a STAT, LSTAT or SETSTAT of a file this session is creating (open for writing, still under
  its temporary name) acts on that open file, as with sftp-server (which creates the file at
  open): sshfs fails ``creat()`` with ENOENT otherwise, and ``cp -p`` its times.

- an OPEN, REMOVE or RENAME by path of such a file first gives it its final name
  (:meth:`~gateway.containerfs.WriteFile.publish`; it stays open and is written in place
  from then on): sshfs sends CLOSE from FUSE's asynchronous release, so ``open()`` right
  after ``close()`` can overtake it, and with sftp-server the file exists from OPEN on.

Nothing here touches paths, rights, handles or limits: the same handlers and the same
:class:`~gateway.sftp.server.ContainerSFTPServer` methods run on the same fields.
"""

from __future__ import annotations

import logging
import posixpath

from asyncssh.constants import (
    FILEXFER_ATTR_DEFINED_V3,
    FXP_EXTENDED,
    FXP_FSETSTAT,
    FXP_FSTAT,
    FXP_LSTAT,
    FXP_MKDIR,
    FXP_OPEN,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_SETSTAT,
    FXP_STAT,
)
from asyncssh.packet import PacketDecodeError, SSHPacket, String
from asyncssh.sftp import SFTPServerHandler

from gateway.containerfs import FSError, WriteFile

log = logging.getLogger(__name__)

# Fields before the attribute block of each request that has one ("s": string, "u": uint32).
_ATTRS_AFTER: dict[int | bytes, str] = {
    FXP_OPEN: "su",  # path, pflags
    FXP_SETSTAT: "s",  # path
    FXP_FSETSTAT: "s",  # handle
    FXP_MKDIR: "s",  # path
    b"lsetstat@openssh.com": "s",  # path
}


# Extended requests whose first path (after the request's name) is a file to rename.
_RENAMES = frozenset({b"posix-rename@openssh.com"})


class LenientPacket(SSHPacket):
    """An SFTP request whose unread tail is ignored, like sftp-server does."""

    def check_end(self) -> None:
        if self:
            log.debug(
                "sftp: ignoring %d byte(s) after the fields of a request of type %d",
                len(self.get_remaining_payload()),
                self.get_full_payload()[0],
            )


def _mask_attr_flags(packet: SSHPacket, fields: str) -> SSHPacket:
    """A copy of ``packet``, at the same position, with the attribute flags SFTP v3 does not
    define cleared. ``fields`` are what precedes the block from that position ("s": string,
    "u": uint32). A packet too short for them is returned as it was: asyncssh's own handler
    then answers it with its clean "Incomplete packet" status."""
    full = packet.get_full_payload()
    start = len(packet.get_consumed_payload())
    probe = SSHPacket(full)
    try:
        probe.get_bytes(start)
        for kind in fields:
            if kind == "s":
                probe.get_string()
            else:
                probe.get_uint32()
        at = len(probe.get_consumed_payload())
        flags = probe.get_uint32()
    except PacketDecodeError:
        return packet
    known = flags & FILEXFER_ATTR_DEFINED_V3
    if known == flags:
        return packet
    log.debug("sftp: ignoring undefined attribute flags 0x%08x", flags & ~known)
    fresh = LenientPacket(full[:at] + known.to_bytes(4, "big") + full[at + 4 :])
    fresh.get_bytes(start)
    return fresh


def _extended_name(packet: SSHPacket) -> bytes | None:
    """The name of an extended request, read from a copy (``packet`` stays where it is)."""
    probe = SSHPacket(packet.get_remaining_payload())
    try:
        return probe.get_string()
    except PacketDecodeError:
        return None


def _same_path(a: bytes, b: bytes) -> bool:
    return a == b or (
        a.startswith(b"/") and b.startswith(b"/") and posixpath.normpath(a) == posixpath.normpath(b)
    )


class LenientSFTPHandler(SFTPServerHandler):
    """asyncssh's SFTP server handler reading requests like OpenSSH's sftp-server."""

    def _created(self, path: bytes) -> tuple[bytes, WriteFile] | None:
        """The handle and file of a new file this session has open for writing at ``path``
        (still under its temporary name), or None. Only this session's own handles count,
        opened through the same path and write-right checks."""
        for handle, obj in self._file_handles.items():
            f = getattr(obj, "file", None)
            opened = getattr(obj, "path", None)
            if (
                isinstance(f, WriteFile)
                and not f.closed
                and f.temp
                and isinstance(opened, bytes)
                and _same_path(opened, path)
            ):
                return handle, f
        return None

    def _created_named(
        self, packet: SSHPacket, skip: int = 0
    ) -> tuple[bytes, WriteFile, bytes] | None:
        """The file this session is creating at the path a request names (after ``skip``
        leading strings, read from a copy): its handle, the file and the request's bytes
        after the path; or None."""
        if not self._file_handles:
            return None
        probe = SSHPacket(packet.get_remaining_payload())
        try:
            for _ in range(skip):
                probe.get_string()
            created = self._created(probe.get_string())
        except PacketDecodeError:
            return None
        return None if created is None else (*created, probe.get_remaining_payload())

    def _created_handle(self, packet: SSHPacket) -> tuple[bytes, bytes] | None:
        """For a stat, lstat or setstat naming a file this session is creating: its handle
        and the request's bytes after the path; or None.

        A new file lives under a temporary name until it is closed
        (:mod:`gateway.containerfs`), where sftp-server creates it at open. sshfs creates a
        file with OPEN and then asks for the path's attributes before it writes or closes
        (ENOENT there fails the creat() call), and ``cp -p`` sets the times by path before
        the close: such requests are answered like FSTAT / FSETSTAT on that handle.
        """
        created = self._created_named(packet)
        return None if created is None else (created[0], created[2])

    async def _publish_named(self, packet: SSHPacket, skip: int) -> None:
        """Before an OPEN, REMOVE or RENAME naming a file this session is creating (after
        ``skip`` leading strings): give that file its final name now. sshfs sends the CLOSE
        from FUSE's asynchronous release, so a program's open() right after its close() can
        overtake it; with sftp-server the file exists from OPEN on."""
        created = self._created_named(packet, skip)
        if created is not None:
            try:
                await created[1].publish()
            except FSError as exc:  # the request itself then fails as it would have
                log.info("could not put %r in place early: %s", created[1], exc)

    async def recv_packet(self) -> SSHPacket:
        packet = await super().recv_packet()
        return LenientPacket(packet.get_full_payload())

    async def _process_packet(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        if self._version == 3:
            if pkttype == FXP_EXTENDED:
                name = _extended_name(packet)
                if name in _RENAMES:
                    await self._publish_named(packet, 1)
                fields = _ATTRS_AFTER.get(name) if name is not None else None
                if fields is not None:
                    packet = _mask_attr_flags(packet, "s" + fields)  # the name, then fields
            else:
                if pkttype in (FXP_OPEN, FXP_REMOVE, FXP_RENAME):
                    await self._publish_named(packet, 0)
                elif pkttype in (FXP_STAT, FXP_LSTAT, FXP_SETSTAT):
                    created = self._created_handle(packet)
                    if created is not None:
                        handle, rest = created
                        if pkttype == FXP_SETSTAT:
                            pkttype, packet = FXP_FSETSTAT, LenientPacket(String(handle) + rest)
                        else:
                            pkttype, packet = FXP_FSTAT, LenientPacket(String(handle))
                fields = _ATTRS_AFTER.get(pkttype)
                if fields is not None:
                    packet = _mask_attr_flags(packet, fields)
        await super()._process_packet(pkttype, pktid, packet)


__all__ = ["LenientPacket", "LenientSFTPHandler"]
