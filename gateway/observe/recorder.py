"""Session recordings in asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/).

A file is one JSON header line, then one JSON array per event: ``[seconds, "o", text]`` for
output, ``[seconds, "i", text]`` for input (only when input recording is on) and
``[seconds, "r", "COLSxROWS"]`` for a terminal resize. asciicast stores text, so the output bytes
are decoded here with an incremental UTF-8 decoder (a character split across two reads stays
whole; invalid bytes become U+FFFD) — only for the recording, the session's bytes are untouched.

Writes go through a buffered file (page cache), so a recording never waits on the disk; the buffer
is flushed at least every :data:`FLUSH_INTERVAL` seconds of session time and at the end.
"""

from __future__ import annotations

import codecs
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, BinaryIO

FLUSH_INTERVAL = 1.0
_BUFFER = 64 * 1024


class Recorder:
    """Writes one asciicast v2 file. Not thread-safe; one per session."""

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
        self.record_input = record_input
        self._t0 = time.monotonic()
        self._last_flush = self._t0
        self._out = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._in = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._file: BinaryIO | None = None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
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
        self._write_line(header)

    @property
    def closed(self) -> bool:
        return self._file is None

    def _write_line(self, obj: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        self._file.write(b"\n")

    def _event(self, code: str, text: str) -> None:
        # Hand-assembled (json.dumps on a list costs twice as much per event); the string is
        # escaped by the json module's own C encoder. Decoded text never holds lone surrogates.
        f = self._file
        if f is None:
            return
        now = time.monotonic()
        f.write(f'[{now - self._t0:.6f}, "{code}", {encode_basestring(text)}]\n'.encode())
        if now - self._last_flush >= FLUSH_INTERVAL:
            self._last_flush = now
            f.flush()

    def output(self, data: bytes) -> None:
        text = self._out.decode(data)
        if text:
            self._event("o", text)

    def input(self, data: bytes) -> None:
        if not self.record_input:
            return
        text = self._in.decode(data)
        if text:
            self._event("i", text)

    def resize(self, cols: int, rows: int) -> None:
        if cols > 0 and rows > 0:
            self._event("r", f"{cols}x{rows}")

    def close(self) -> None:
        if self._file is None:
            return
        tail = self._out.decode(b"", final=True)
        if tail:
            self._event("o", tail)
        f, self._file = self._file, None
        try:
            f.flush()
        finally:
            f.close()


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
