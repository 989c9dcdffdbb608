"""Which SFTP requests of one session may run at the same time. Pure (no I/O, no asyncio).

asyncssh serves a session's requests one after the other. Every file operation of sshgw is a
round trip into the container (milliseconds, not a system call's microseconds), so a client
that keeps several requests in flight — rclone runs 4 transfers over one SFTP session, lftp and
sshfs pipeline metadata — waits for the sum of them. Requests that cannot see each other's
effects may run together instead; everything else keeps the order it arrived in:

- every request names what it touches (:class:`Claim`): the handles it uses (with the path the
  handle was opened on), the paths it reads and the paths it changes;
- two requests conflict when they share a handle, or when one changes a path the other reads
  or changes — a path and everything under it count as one (renaming ``/a`` conflicts with a
  stat of ``/a/b``);
- a request this module cannot name (an unknown extension, a malformed packet, a relative path
  before the session knows its start directory) is a barrier: it waits for everything before
  it and everything after it waits for it;
- :class:`Order` admits requests in arrival order, each behind the earlier, still unfinished
  requests it conflicts with, and bounds how many (and how many bytes) are in flight.

Two names for one file (a symbolic link, a hard link) are not seen as one: requests on them
run in the order the container's file system gives them, as they would from two clients.
Replies may leave in another order than requests came, as the protocol allows (each carries
its request id); a client that waits for each reply before the next request sees no change.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncssh.constants import (
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_CLOSE,
    FXP_EXTENDED,
    FXP_FSETSTAT,
    FXP_FSTAT,
    FXP_LSTAT,
    FXP_MKDIR,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_READ,
    FXP_READDIR,
    FXP_READLINK,
    FXP_REALPATH,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_RMDIR,
    FXP_SETSTAT,
    FXP_STAT,
    FXP_SYMLINK,
    FXP_WRITE,
)

# Requests in flight per session (running or waiting for an earlier one), and their bytes (the
# request itself, plus what a READ asks for): a client cannot make the gateway hold more.
MAX_REQUESTS = 16
MAX_COST = 1 << 20
# What a READ can cost at most (the largest read a file answers: containerfs.files.MAX_READ).
READ_COST_CAP = 4 << 20

_MODIFYING_OPEN = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL

HandlePath = Callable[[bytes], "bytes | None"]
"""The path an open handle was opened on (absolute, normalized), or None (a directory handle,
or no such handle)."""

Normalize = Callable[[bytes], "bytes | None"]
"""A path as the client names it → absolute and normalized, or None when that cannot be known
yet (a relative path before the start directory is known)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one request touches."""

    handles: frozenset[bytes] = frozenset()
    reads: frozenset[bytes] = frozenset()
    writes: frozenset[bytes] = frozenset()
    barrier: bool = False
    cost: int = 0


BARRIER = Claim(barrier=True)


def _related(a: bytes, b: bytes) -> bool:
    """The same path, or one lies under the other (paths absolute and normalized)."""
    if a == b or a == b"/" or b == b"/":
        return True
    if len(a) < len(b):
        a, b = b, a
    return a.startswith(b) and a[len(b) : len(b) + 1] == b"/"


def _any_related(xs: frozenset[bytes], ys: frozenset[bytes]) -> bool:
    return any(_related(x, y) for x in xs for y in ys)


def conflicts(a: Claim, b: Claim) -> bool:
    """True when ``a`` and ``b`` must not run at the same time (and so keep their order)."""
    if a.barrier or b.barrier:
        return True
    if a.handles & b.handles:
        return True
    if a.writes and (_any_related(a.writes, b.writes) or _any_related(a.writes, b.reads)):
        return True
    return bool(b.writes) and _any_related(b.writes, a.reads)


class _Fields:
    """Reads the fields of a request's body (after type and id); ValueError when short."""

    def __init__(self, body: bytes | memoryview) -> None:
        self._body = body
        self._at = 0

    def string(self) -> bytes:
        (n,) = struct.unpack_from(">I", self._body, self._at)
        start = self._at + 4
        if start + n > len(self._body):
            raise ValueError("short string")
        self._at = start + n
        return bytes(self._body[start : start + n])

    def uint32(self) -> int:
        (v,) = struct.unpack_from(">I", self._body, self._at)
        self._at += 4
        return int(v)

    def uint64(self) -> int:
        (v,) = struct.unpack_from(">Q", self._body, self._at)
        self._at += 8
        return int(v)


# Requests by the shape of their body: one path read / one path changed / one handle.
_PATH_READ = {FXP_STAT, FXP_LSTAT, FXP_OPENDIR, FXP_REALPATH, FXP_READLINK}
_PATH_WRITE = {FXP_SETSTAT, FXP_REMOVE, FXP_MKDIR, FXP_RMDIR}
_TWO_PATHS_WRITE = {FXP_RENAME, FXP_SYMLINK}
_HANDLE = {FXP_CLOSE, FXP_WRITE, FXP_FSTAT, FXP_FSETSTAT, FXP_READDIR}
# Extensions: name → (shape, changes?). "p": one path, "pp": two paths, "h": one handle.
_EXTENDED: dict[bytes, tuple[str, bool]] = {
    b"posix-rename@openssh.com": ("pp", True),
    b"hardlink@openssh.com": ("pp", True),
    b"statvfs@openssh.com": ("p", False),
    b"lsetstat@openssh.com": ("p", True),
    b"expand-path@openssh.com": ("p", False),
    b"fstatvfs@openssh.com": ("h", False),
    b"fsync@openssh.com": ("h", True),
}


@dataclass(slots=True)
class _Builder:
    handle_path: HandlePath
    normalize: Normalize
    handles: set[bytes] = field(default_factory=set)
    reads: set[bytes] = field(default_factory=set)
    writes: set[bytes] = field(default_factory=set)
    unknown: bool = False

    def path(self, raw: bytes, changes: bool) -> None:
        p = self.normalize(raw)
        if p is None:
            self.unknown = True
        else:
            (self.writes if changes else self.reads).add(p)

    def handle(self, handle: bytes, changes: bool) -> None:
        self.handles.add(handle)
        p = self.handle_path(handle)
        if p is not None:
            (self.writes if changes else self.reads).add(p)

    def claim(self, cost: int) -> Claim:
        if self.unknown:
            return Claim(barrier=True, cost=cost)
        return Claim(
            frozenset(self.handles), frozenset(self.reads), frozenset(self.writes), False, cost
        )


def claim_of(
    pkttype: int, body: bytes | memoryview, handle_path: HandlePath, normalize: Normalize
) -> Claim:
    """What the request ``pkttype`` with ``body`` (the bytes after its id) touches."""
    b = _Builder(handle_path, normalize)
    f = _Fields(body)
    cost = len(body)
    try:
        if pkttype in _PATH_READ:
            b.path(f.string(), False)
        elif pkttype in _PATH_WRITE:
            b.path(f.string(), True)
        elif pkttype in _TWO_PATHS_WRITE:
            b.path(f.string(), True)
            b.path(f.string(), True)
        elif pkttype == FXP_OPEN:
            path = f.string()
            b.path(path, bool(f.uint32() & _MODIFYING_OPEN))
        elif pkttype == FXP_READ:
            b.handle(f.string(), False)
            f.uint64()
            cost += min(f.uint32(), READ_COST_CAP)
        elif pkttype in _HANDLE:
            b.handle(f.string(), pkttype != FXP_FSTAT)
        elif pkttype == FXP_EXTENDED:
            shape, changes = _EXTENDED.get(f.string(), ("", False))
            if not shape:
                return Claim(barrier=True, cost=cost)
            if shape == "h":
                b.handle(f.string(), changes)
            else:
                for _ in shape:
                    b.path(f.string(), changes)
        else:
            return Claim(barrier=True, cost=cost)
    except (ValueError, struct.error):
        return Claim(barrier=True, cost=cost)
    return b.claim(cost)


def normalizer(cwd: Callable[[], bytes | None]) -> Normalize:
    """Normalize client paths against the session's start directory (``cwd()``: None while it
    is not known yet)."""

    def normalize(raw: bytes) -> bytes | None:
        if b"\0" in raw:
            return None
        if not raw.startswith(b"/"):
            base = cwd()
            if base is None:
                return None
            raw = posixpath.join(base, raw) if raw else base
        return b"/" + posixpath.normpath(raw).lstrip(b"/")

    return normalize


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted request: what it claims, and the earlier unfinished ones it waits for."""

    claim: Claim
    after: list[Ticket]


class Order:
    """The requests of one session in flight, in arrival order, and their bounds."""

    def __init__(self, max_requests: int = MAX_REQUESTS, max_cost: int = MAX_COST) -> None:
        self._live: list[Ticket] = []
        self._cost = 0
        self._max_requests = max_requests
        self._max_cost = max_cost

    def __len__(self) -> int:
        return len(self._live)

    def has_room(self, cost: int) -> bool:
        """Whether a request of ``cost`` may be admitted now (one is always, alone)."""
        if not self._live:
            return True
        return len(self._live) < self._max_requests and self._cost + cost <= self._max_cost

    def admit(self, claim: Claim) -> Ticket:
        ticket = Ticket(claim, [t for t in self._live if conflicts(t.claim, claim)])
        self._live.append(ticket)
        self._cost += claim.cost
        return ticket

    def finish(self, ticket: Ticket) -> None:
        self._live.remove(ticket)
        self._cost -= ticket.claim.cost


__all__ = [
    "BARRIER",
    "MAX_COST",
    "MAX_REQUESTS",
    "Claim",
    "Order",
    "Ticket",
    "claim_of",
    "conflicts",
    "normalizer",
]
