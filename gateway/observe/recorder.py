"""Session recordings in asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/).

A recording is one JSON header line, then one JSON array per event: ``[seconds, "o", text]`` for
output, ``[seconds, "i", text]`` for input (only when input recording is on) and
``[seconds, "r", "COLSxROWS"]`` for a terminal resize.

Two steps keep the data path cheap:

1. While the session runs, :class:`Recorder` appends raw frames (a 13-byte header and the bytes
   as they came) to ``<id>.cast.part`` through a buffered file: about a memory copy per chunk.
2. When the session ends, :func:`convert_spool` turns that spool into ``<id>.cast`` (decoding the
   bytes with an incremental UTF-8 decoder — a character split across reads stays whole, invalid
   bytes become U+FFFD — and JSON-escaping them) and removes the spool. The observer runs this in
   a worker thread; spools left by a crash are converted at the next start.

The session's own bytes are never decoded: only the recording is text.

Bounds (``recording_max_bytes``, ``recording_min_free``): a :class:`Budget` decides how many bytes
the spool may still take and when the file system's free space is looked at again (at the start,
then every :data:`FREE_CHECK_EVERY` bytes). When the cap is reached, or the free space is below
the minimum, the recorder writes one marker frame (``[sshgw: recording truncated at N bytes]`` or
``[sshgw: recording stopped: low disk space]``), records nothing more and raises
:class:`RecordingStopped` once; the session itself goes on. :func:`convert_spool` holds the
asciicast file to the same cap (JSON escaping can make text longer than the raw bytes): the cast
is at most ``max_bytes`` plus its one marker event.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

FLUSH_INTERVAL = 1.0
_BUFFER = 64 * 1024
SPOOL_SUFFIX = ".part"
_SPOOL_MAGIC = b"SSHGWREC1\n"
# Frame header: seconds since the start (float64), event code (one ASCII byte), payload length.
_FRAME = struct.Struct("<dcI")
# Spool-only event code: the recording's end marker (written out as an "o" event).
_MARK = b"m"
# Bytes written between two looks at the file system's free space.
FREE_CHECK_EVERY = 4 << 20
LOW_DISK = "recording stopped: low disk space"


def spool_path(cast_path: Path) -> Path:
    return cast_path.with_name(cast_path.name + SPOOL_SUFFIX)


def truncated_reason(max_bytes: int) -> str:
    return f"recording truncated at {max_bytes} bytes"


def marker_text(reason: str) -> str:
    """The visible end of a recording that was cut short, as the player shows it."""
    return f"\r\n[sshgw: {reason}]\r\n"


def disk_free(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


class RecordingStopped(Exception):
    """The recording ended early (size cap or low disk space); the session goes on."""

    def __init__(self, reason: str, *, low_disk: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.low_disk = low_disk


@dataclass(slots=True)
class Budget:
    """The size and free-space rule of one recording, without I/O.

    ``max_bytes`` None: no size cap; ``min_free`` 0: free space is never looked at.
    """

    max_bytes: int | None = None
    min_free: int = 0
    check_every: int = FREE_CHECK_EVERY
    used: int = 0
    _since_check: int = 0
    _checked_once: bool = False

    def room(self) -> int | None:
        """Bytes the recording may still take (None: unbounded)."""
        if self.max_bytes is None:
            return None
        return max(0, self.max_bytes - self.used)

    def fits(self, n: int) -> bool:
        room = self.room()
        return room is None or n <= room

    def take(self, n: int) -> None:
        """Count ``n`` bytes as written."""
        self.used += n
        self._since_check += n

    def needs_free_check(self) -> bool:
        """True when the free space should be looked at before the next write."""
        if self.min_free <= 0:
            return False
        return not self._checked_once or self._since_check >= self.check_every

    def free_ok(self, free: int) -> bool:
        """Record a look at the free space; False when it is below the minimum."""
        self._checked_once = True
        self._since_check = 0
        return free >= self.min_free


class Recorder:
    """Records one session into a spool file. Not thread-safe; one per session."""

    def __init__(
        self,
        path: Path,
        *,
        cols: int,
        rows: int,
        term: str | None = None,
        title: str | None = None,
        record_input: bool = False,
        env: Mapping[str, str] | None = None,
        started_at: float | None = None,
        max_bytes: int | None = None,
        min_free: int = 0,
        free_space: Callable[[Path], int] = disk_free,
    ) -> None:
        self.path = path
        self.spool = spool_path(path)
        self.record_input = record_input
        self.max_bytes = max_bytes
        # Set once the recording has ended early (it then takes nothing more).
        self.stopped: RecordingStopped | None = None
        self._budget = Budget(max_bytes=max_bytes, min_free=min_free)
        self._free_space = free_space
        self._t0 = time.monotonic()
        self._last_flush = self._t0
        self._file: BinaryIO | None = None
        self._converted = False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            raise FileExistsError(f"recording exists: {path}")
        b = self._budget
        low_disk = b.needs_free_check() and not b.free_ok(free_space(path.parent))
        fd = os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        # Held while recording: crash recovery leaves a spool alone while someone writes it.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)
        header: dict[str, Any] = {
            "version": 2,
            "width": cols if cols > 0 else 80,
            "height": rows if rows > 0 else 24,
            "timestamp": int(started_at if started_at is not None else time.time()),
        }
        header_env = dict(env or {})
        if term:
            header_env.setdefault("TERM", term)
        if header_env:
            header["env"] = header_env
        if title:
            header["title"] = title
        head = json.dumps(header).encode() + b"\n"
        self._file.write(_SPOOL_MAGIC + head)
        self._budget.take(len(head))
        if low_disk:  # no room from the start: only the marker (the caller sees ``stopped``)
            with contextlib.suppress(RecordingStopped):
                self._stop(LOW_DISK, low_disk=True)

    @property
    def closed(self) -> bool:
        return self._file is None

    def _check_free(self) -> None:
        b = self._budget
        if b.needs_free_check() and not b.free_ok(self._free_space(self.path.parent)):
            self._stop(LOW_DISK, low_disk=True)

    def _stop(self, reason: str, *, low_disk: bool) -> NoReturn:
        """Write the marker frame, take nothing more, and tell the caller (once)."""
        stop = RecordingStopped(reason, low_disk=low_disk)
        self.stopped = stop
        f = self._file
        if f is not None:
            mark = marker_text(reason).encode()
            f.write(_FRAME.pack(time.monotonic() - self._t0, _MARK, len(mark)))
            f.write(mark)
            f.flush()
        raise stop

    def _frame(self, code: bytes, data: bytes) -> None:
        f = self._file
        if f is None or self.stopped is not None:
            return
        b = self._budget
        self._check_free()
        n = _FRAME.size + len(data)
        if not b.fits(n):
            # Keep what fits of output and input; a resize is all or nothing.
            room = (b.room() or 0) - _FRAME.size
            if room > 0 and code != b"r":
                self._write(f, code, data[:room])
            self._stop(truncated_reason(b.max_bytes or 0), low_disk=False)
        self._write(f, code, data)

    def _write(self, f: BinaryIO, code: bytes, data: bytes) -> None:
        now = time.monotonic()
        f.write(_FRAME.pack(now - self._t0, code, len(data)))
        f.write(data)
        self._budget.take(_FRAME.size + len(data))
        if now - self._last_flush >= FLUSH_INTERVAL:
            self._last_flush = now
            f.flush()

    def output(self, data: bytes) -> None:
        """Record output. Raises :class:`RecordingStopped` once, when the recording ends early
        (the marker is written then); later calls do nothing."""
        if data:
            self._frame(b"o", data)

    def input(self, data: bytes) -> None:
        if data and self.record_input:
            self._frame(b"i", data)

    def resize(self, cols: int, rows: int) -> None:
        if cols > 0 and rows > 0:
            self._frame(b"r", f"{cols}x{rows}".encode())

    def close(self) -> None:
        """Close the spool (cheap); :meth:`convert` then writes the asciicast file."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.flush()
        finally:
            f.close()

    def convert(self) -> Path:
        """Close, then turn the spool into the asciicast file (CPU work: run it off the loop)."""
        self.close()
        if not self._converted:
            convert_spool(self.spool, self.path, max_bytes=self.max_bytes)
            self._converted = True
        return self.path


def spool_in_use(spool: Path) -> bool:
    """True while a recorder (in any process on this machine) still writes the spool."""
    try:
        fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def convert_orphans(directory: Path, max_bytes: int | None = None) -> list[Path]:
    """Convert the spools nobody writes any more (left by a crash) under ``directory``."""
    done: list[Path] = []
    if not directory.is_dir():
        return done
    # A spool is locked a moment after it is made: leave very young ones alone.
    cutoff = time.time() - 5.0
    for spool in sorted(directory.rglob("*.cast" + SPOOL_SUFFIX)):
        try:
            if spool.stat().st_mtime > cutoff or spool_in_use(spool):
                continue
        except FileNotFoundError:
            continue
        with contextlib.suppress(FileNotFoundError):  # converted by someone else meanwhile
            done.append(convert_spool(spool, max_bytes=max_bytes))
    return done


def convert_spool(spool: Path, cast: Path | None = None, *, max_bytes: int | None = None) -> Path:
    """Write the asciicast v2 file for a recording spool, then remove the spool.

    A spool cut short (a crash) ends at its last whole frame. The cast is written under a
    temporary name and renamed, so a reader never sees half a file. With ``max_bytes`` the
    cast holds at most that many bytes plus one marker event (see :class:`_CastOut`).
    """
    if cast is None:
        if not spool.name.endswith(SPOOL_SUFFIX):
            raise CastError(f"not a recording spool: {spool}")
        cast = spool.with_name(spool.name[: -len(SPOOL_SUFFIX)])
    tmp = cast.with_name(f".{cast.name}.{os.getpid()}.tmp")
    decoders = {
        b"o": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        b"i": codecs.getincrementaldecoder("utf-8")(errors="replace"),
    }
    last = 0.0
    with spool.open("rb") as src:
        if src.read(len(_SPOOL_MAGIC)) != _SPOOL_MAGIC:
            raise CastError(f"not a recording spool: {spool}")
        header = src.readline()
        try:
            json.loads(header)
        except ValueError:
            raise CastError(f"recording spool has a bad header: {spool}") from None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=_BUFFER) as f:
                f.write(header)
                out = _CastOut(f, max_bytes, len(header))
                marker: str | None = None
                while out.open:
                    head = src.read(_FRAME.size)
                    if len(head) < _FRAME.size:
                        break
                    t, code, n = _FRAME.unpack(head)
                    data = src.read(n)
                    if len(data) < n:
                        break
                    last = t
                    if code == _MARK:
                        marker = data.decode("utf-8", "replace")
                        break
                    dec = decoders.get(code)
                    text = dec.decode(data) if dec is not None else data.decode("ascii", "replace")
                    if text:
                        out.event(t, code.decode("ascii"), text)
                for code, dec in decoders.items():
                    tail = dec.decode(b"", final=True)
                    if tail:
                        out.event(last, code.decode("ascii"), tail)
                if marker is not None:
                    out.mark(last, marker)
            os.replace(tmp, cast)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    spool.unlink(missing_ok=True)
    return cast


class _CastOut:
    """Event lines into an asciicast file, at most ``max_bytes`` in all (the header included).

    The event that would pass the cap is cut to what fits, then the truncation marker is written
    (the only bytes past the cap) and everything after it is dropped.
    """

    def __init__(self, f: BinaryIO, max_bytes: int | None, written: int) -> None:
        self._f = f
        self._max = max_bytes
        self.written = written
        self.open = True

    def event(self, t: float, code: str, text: str) -> None:
        if not self.open:
            return
        line = _event_line(t, code, text)
        if self._max is None or self.written + len(line) <= self._max:
            self._f.write(line)
            self.written += len(line)
            return
        k = fitting_prefix(t, code, text, self._max - self.written)
        if k:
            line = _event_line(t, code, text[:k])
            self._f.write(line)
            self.written += len(line)
        self.mark(t, marker_text(truncated_reason(self._max)))

    def mark(self, t: float, text: str) -> None:
        if self.open:
            self.open = False
            self._f.write(_event_line(t, "o", text))


def fitting_prefix(t: float, code: str, text: str, room: int) -> int:
    """The longest prefix of ``text`` (in characters) whose event line fits in ``room`` bytes."""
    lo, hi = 0, min(len(text), max(0, room))  # a character takes at least one byte
    if room <= 0 or len(_event_line(t, code, "")) > room:
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_event_line(t, code, text[:mid])) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _event_line(t: float, code: str, text: str) -> bytes:
    # Hand-assembled (json.dumps on a list costs twice as much per event); the string is escaped
    # by the json module's own C encoder. Decoded text never holds lone surrogates.
    return f'[{t:.6f}, "{code}", {encode_basestring(text)}]\n'.encode()


@dataclass(frozen=True, slots=True)
class CastHeader:
    width: int
    height: int
    timestamp: int | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CastEvent:
    time: float
    code: str
    data: str


class CastError(ValueError):
    pass


def read_cast(path: Path) -> tuple[CastHeader, Iterator[CastEvent]]:
    """Parse an asciicast v2 file: the header, and a lazy iterator over its events.

    Raises :class:`CastError` on a malformed header; a malformed event line raises when reached.
    A recording cut short (a gateway crash) may end in a partial line: that line is ignored.
    """
    f = path.open("rb")
    try:
        first = f.readline()
        header = json.loads(first)
    except (OSError, ValueError) as exc:
        f.close()
        raise CastError(f"not an asciicast v2 file: {path}") from exc
    if not isinstance(header, dict) or header.get("version") != 2:
        f.close()
        raise CastError(f"not an asciicast v2 file: {path}")
    hdr = CastHeader(
        width=int(header.get("width", 80)),
        height=int(header.get("height", 24)),
        timestamp=header.get("timestamp"),
        raw=header,
    )

    def events() -> Iterator[CastEvent]:
        with f:
            for lineno, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    if not line.endswith(b"\n"):
                        return  # cut short by a crash: stop at the last whole event
                    raise CastError(f"{path}: line {lineno} is not JSON") from None
                if (
                    not isinstance(ev, list)
                    or len(ev) != 3
                    or not isinstance(ev[0], int | float)
                    or not isinstance(ev[1], str)
                    or not isinstance(ev[2], str)
                ):
                    raise CastError(f"{path}: line {lineno} is not an asciicast event")
                yield CastEvent(float(ev[0]), ev[1], ev[2])

    return hdr, events()
