"""The start of an exec's output, sans I/O: find the wrapper's PID marker, hold type-ahead.

Every shell and exec session starts with the wrapper (:mod:`gateway.ssh.wrapper`), which prints
``\\x1esshgw:NONCE:PID\\x1e`` before anything else: on stderr without a terminal, on the one
terminal stream with a PTY. Until that marker is seen (or known never to come), output is held:

- the marker's own stream is collected and scanned (:func:`~gateway.ssh.wrapper.scan_pid_mark`:
  only the first ``PID_MARK_MAX`` bytes, only with this session's nonce);
- output of the other stream is held back, up to :data:`HOLD_LIMIT` bytes; beyond that it is
  let through from then on (overflow), and the marker is still looked for on its own stream: the
  engine does not order stdout and stderr, and a fast command's first 64 KiB of stdout can come
  before the marker on stderr (seen with a 200 MB ``cat`` on a busy machine: the marker reached
  the client, and without the PID the process could not be ended);
- when the marker is found, what was held and what surrounded the marker is let through, without
  the marker; when it will not come, everything is let through except the engine's own
  "OCI runtime …" text (explained in one line by the session), and the first bytes are kept in
  :attr:`PidMarkScanner.start_output` for that explanation.

:meth:`PidMarkScanner.feed` takes one chunk and returns what may be written to the client now;
:meth:`PidMarkScanner.finish` says what was still held when the output ended.
"""

from __future__ import annotations

from gateway.ssh.wrapper import scan_pid_mark

HOLD_LIMIT = 64 * 1024  # bytes of the other stream held while the marker is awaited
START_OUTPUT_MAX = 4096  # bytes kept for the explanation of a process that did not start
ENGINE_ERROR_PREFIX = b"OCI runtime"  # the engine's text for an exec that could not start

Chunk = tuple[int, bytes]  # (stream, data)


class PidMarkScanner:
    """The marker protocol of one exec; streams are the engine's ids, passed in."""

    def __init__(self, nonce: str, *, pty: bool, stdout: int, stderr: int) -> None:
        self.nonce = nonce
        self.pty = pty
        self.stdout = stdout
        # With a terminal there is one stream (the engine sends it all as stdout).
        self.mark_stream = stdout if pty else stderr
        self.pid: int | None = None
        self.waiting = True  # the marker is still looked for
        self.overflowed = False  # more than HOLD_LIMIT held: the other stream flows
        self.missing = False  # the marker will not come (or the output ended without it)
        self.start_output = bytearray()
        self._held: list[Chunk] = []
        self._held_size = 0
        self._mark = bytearray()

    @property
    def held(self) -> list[Chunk]:
        """Output not yet let through (the other stream's), in arrival order."""
        return list(self._held)

    def feed(self, stream: int, data: bytes) -> list[Chunk]:
        """One chunk of output: what may be written to the client now, in order."""
        kind = self.stdout if self.pty else stream
        if not self.waiting:
            return [(kind, data)]
        if kind == self.mark_stream:
            self._mark += data
            # Only the first PID_MARK_MAX bytes of this exec's own output, and only a
            # marker with this session's nonce: the command cannot forge the PID.
            scan = scan_pid_mark(bytes(self._mark), self.nonce)
            if scan.state == "found":
                self.pid = scan.pid
                self.waiting = False
                before = bytes(self._mark[: scan.start])
                rest = bytes(self._mark[scan.end :])
                out = self._release()
                out += [(kind, part) for part in (before, rest) if part]
                return out
            if scan.state == "none":
                self.waiting = False
                self.missing = True
                self.start_output += self._mark[:START_OUTPUT_MAX]
                self._held.append((kind, bytes(self._mark)))
                # The engine's own start-up error is explained in one line by the session.
                return [(k, d) for k, d in self._release() if not d.startswith(ENGINE_ERROR_PREFIX)]
            return []
        if self.overflowed:
            return [(kind, data)]
        self._held.append((kind, data))
        self._held_size += len(data)
        if self._held_size > HOLD_LIMIT:
            self.overflowed = True
            return self._release()
        return []

    def finish(self) -> list[Chunk]:
        """The output ended: what was held and never let through (the session decides)."""
        if not self.waiting:
            return []
        self.waiting = False
        self.missing = True
        # Kept for the failure explanation.
        for _k, d in self._held:
            if len(self.start_output) < START_OUTPUT_MAX:
                self.start_output += d[:START_OUTPUT_MAX]
        self.start_output += self._mark[:START_OUTPUT_MAX]
        unsent = self._release()
        if self._mark:
            unsent.append((self.mark_stream, bytes(self._mark)))
        return unsent

    def _release(self) -> list[Chunk]:
        out, self._held, self._held_size = self._held, [], 0
        return out
