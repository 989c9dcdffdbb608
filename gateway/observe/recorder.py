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
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, BinaryIO

FLUSH_INTERVAL = 1.0
_BUFFER = 64 * 1024
SPOOL_SUFFIX = ".part"
_SPOOL_MAGIC = b"SSHGWREC1\n"
# Frame header: seconds since the start (float64), event code (one ASCII byte), payload length.
_FRAME = struct.Struct("<dcI")


def spool_path(cast_path: Path) -> Path:
    return cast_path.with_name(cast_path.name + SPOOL_SUFFIX)


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
    ) -> None:
        self.path = path
        self.spool = spool_path(path)
        self.record_input = record_input
        self._t0 = time.monotonic()
        self._last_flush = self._t0
        self._file: BinaryIO | None = None
        self._converted = False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            raise FileExistsError(f"recording exists: {path}")
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
        self._file.write(_SPOOL_MAGIC + json.dumps(header).encode() + b"\n")

    @property
    def closed(self) -> bool:
        return self._file is None

    def _frame(self, code: bytes, data: bytes) -> None:
        f = self._file
        if f is None:
            return
        now = time.monotonic()
        f.write(_FRAME.pack(now - self._t0, code, len(data)))
        f.write(data)
        if now - self._last_flush >= FLUSH_INTERVAL:
            self._last_flush = now
            f.flush()

    def output(self, data: bytes) -> None:
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
            convert_spool(self.spool, self.path)
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


def convert_orphans(directory: Path) -> list[Path]:
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
            done.append(convert_spool(spool))
    return done


def convert_spool(spool: Path, cast: Path | None = None) -> Path:
    """Write the asciicast v2 file for a recording spool, then remove the spool.

    A spool cut short (a crash) ends at its last whole frame. The cast is written under a
    temporary name and renamed, so a reader never sees half a file.
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
            with os.fdopen(fd, "wb", buffering=_BUFFER) as out:
                out.write(header)
                while True:
                    head = src.read(_FRAME.size)
                    if len(head) < _FRAME.size:
                        break
                    t, code, n = _FRAME.unpack(head)
                    data = src.read(n)
                    if len(data) < n:
                        break
                    last = t
                    dec = decoders.get(code)
                    text = dec.decode(data) if dec is not None else data.decode("ascii", "replace")
                    if text:
                        out.write(_event_line(t, code.decode("ascii"), text))
                for code, dec in decoders.items():
                    tail = dec.decode(b"", final=True)
                    if tail:
                        out.write(_event_line(last, code.decode("ascii"), tail))
            os.replace(tmp, cast)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    spool.unlink(missing_ok=True)
    return cast


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
