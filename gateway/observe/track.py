"""One running session as the observer sees it: :class:`SessionInfo` (what the SSH server says
about it) and :class:`SessionTrack` (bytes, metrics, recording, audit, kill request and end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.observe import audit as _audit
from gateway.observe.metrics import label_or_other, short_label
from gateway.observe.recorder import Recorder, RecordingStopped
from gateway.store.models import utcnow
from gateway.vocab import EndReason, SessionKind

if TYPE_CHECKING:
    from gateway.observe.observer import Observer

log = logging.getLogger(__name__)

# Label values of sshgw_sessions_ended{result}; anything else is counted as "other".
_END_RESULTS: frozenset[str] = frozenset(EndReason)


@dataclass(slots=True)
class SessionInfo:
    id: str  # uuid4 hex, made by the caller
    conn_id: str
    user: str
    container: str | None  # None for the 'list' kind
    container_id: str | None
    login: str | None
    kind: SessionKind
    command: str | None
    remote: str  # "ip:port"
    pty: bool
    term: str | None
    cols: int
    rows: int
    record: bool  # the deciding grant allows recording
    connected_at: float  # time.monotonic() at TCP accept
    port: int | None = None  # a forward's port in the container
    via: str | None = None  # "proxyjump": the session came through a jump (gateway.ssh.jump)


def session_event(info: SessionInfo, kind: str, /, **detail: Any) -> _audit.Record:
    """An audit event about the session ``info``: who, where, from where, which session (and
    ``via: proxyjump`` for a session that came through a jump)."""
    if info.via is not None:
        detail["via"] = info.via
    return _audit.event(
        kind,
        user=info.user,
        container=info.container,
        remote=info.remote,
        session_id=info.id,
        **detail,
    )


class SessionTrack:
    """One running session as the observer sees it. Every method is cheap and never raises."""

    def __init__(self, observer: Observer, info: SessionInfo, recorder: Recorder | None) -> None:
        self.info = info
        self.killed = asyncio.Event()
        # What an end for KILLED is recorded as: an administrator's kill, or a revocation.
        self.kill_reason = EndReason.KILLED
        self.bytes_in = 0
        self.bytes_out = 0
        self.exit_status: int | None = None
        self.end_reason: EndReason | None = None
        self.started_at: datetime = utcnow()
        self.recorder = recorder
        self._recording_path = recorder.path if recorder is not None else None
        self._obs = observer
        self._t0 = time.monotonic()
        self._first_byte = False
        self._ended = False
        # Notices to the user (the drain's deadline): where they go, and the last one given.
        self._say: Callable[[str], None] | None = None
        self._notice: str | None = None
        m = observer.metrics
        labels = m.kind_labels(info.kind, info.container)
        self._labels = labels
        self._m_in = m.bytes_to_container.labels(**labels)
        self._m_out = m.bytes_from_container.labels(**labels)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def recording_path(self) -> Path | None:
        return self._recording_path

    @property
    def ended(self) -> bool:
        return self._ended

    def listen(self, say: Callable[[str], None]) -> None:
        """Where notices to the user go (a shell's or a command's stderr). File sessions and
        forwards have nowhere to say anything and never call this."""
        self._say = say
        if self._notice is not None:
            self.notify(self._notice)

    def notify(self, text: str) -> None:
        """Tell the user ``text`` (one line), now or as soon as the session can be told."""
        self._notice = text
        if self._say is not None and not self._ended:
            try:
                self._say(text)
            except Exception as exc:  # a notice is a courtesy
                log.debug("session %s: notice: %r", self.id, exc)

    def kill(self, reason: EndReason = EndReason.KILLED) -> None:
        """Ask the session to end (it ends its process, tells the user and closes)."""
        if not self.killed.is_set():
            self.kill_reason = reason
            self.killed.set()

    def to_container(self, n: int) -> None:
        if n > 0:
            self.bytes_in += n
            self._m_in.inc(n)

    def from_container(self, data: bytes) -> None:
        n = len(data)
        if not n:
            return
        self.bytes_out += n
        self._m_out.inc(n)
        if not self._first_byte:
            self._first_byte = True
            self._obs.metrics.first_byte.labels(**self._labels).observe(
                max(0.0, time.monotonic() - self.info.connected_at)
            )
        if self.recorder is not None:
            try:
                self.recorder.output(data)
            except (OSError, ValueError, RecordingStopped) as exc:
                self._recording_failed(exc)

    def input(self, data: bytes) -> None:
        if self.recorder is not None and self.recorder.record_input:
            try:
                self.recorder.input(data)
            except (OSError, ValueError, RecordingStopped) as exc:
                self._recording_failed(exc)

    def resize(self, cols: int, rows: int) -> None:
        if self.recorder is not None:
            try:
                self.recorder.resize(cols, rows)
            except (OSError, ValueError, RecordingStopped) as exc:
                self._recording_failed(exc)

    def file_op(self, op: str, path: str, nbytes: int, result: str, seconds: float) -> None:
        try:
            m = self._obs.metrics
            op_l = short_label(op)
            m.sftp_ops.labels(op=op_l, result=short_label(result, 16)).inc()
            m.sftp_seconds.labels(op=op_l).observe(max(0.0, seconds))
            i = self.info
            self._obs.submit(
                session_event(
                    i,
                    _audit.FILE,
                    op=op,
                    path=path,
                    bytes=nbytes,
                    result=result,
                    seconds=round(seconds, 6),
                    via=i.kind,
                )
            )
        except Exception:  # never into the data path
            log.exception("file_op bookkeeping failed")

    def end(self, exit_status: int | None, reason: EndReason) -> None:
        """The session ended, for ``reason``; only the first call counts."""
        if self._ended:
            return
        self._ended = True
        try:
            self._end(exit_status, reason)
        except Exception:
            log.exception("session end bookkeeping failed")

    def _end(self, exit_status: int | None, reason: EndReason) -> None:
        if reason == EndReason.KILLED:
            reason = self.kill_reason
        self.exit_status = exit_status
        self.end_reason = reason
        duration = max(0.0, time.monotonic() - self._t0)
        m = self._obs.metrics
        m.sessions_ended.labels(**self._labels, result=label_or_other(reason, _END_RESULTS)).inc()
        m.sessions_active.labels(**self._labels).dec()
        m.session_duration.labels(**self._labels).observe(duration)
        if self.recorder is not None:
            rec, self.recorder = self.recorder, None
            try:
                rec.close()
            except (OSError, ValueError) as exc:
                self._obs.metrics.recording_errors.inc()
                log.error("session recording incomplete: %s", exc)
            self._obs.convert_later(rec)
        ended_at = utcnow()
        i = self.info
        self._obs.session_ended(self)
        self._obs.submit(
            _audit.Record(
                "session_end",
                {
                    "id": i.id,
                    "ended_at": ended_at,
                    "bytes_in": self.bytes_in,
                    "bytes_out": self.bytes_out,
                    "exit_status": exit_status,
                    "end_reason": reason,
                },
            )
        )
        self._obs.submit(
            session_event(
                i,
                _audit.SESSION_END,
                kind=i.kind,
                login=i.login,
                command=i.command,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                exit_status=exit_status,
                reason=reason,
                duration=round(duration, 3),
            )
        )
        log.info(
            "session ended: %s %s@%s status=%s reason=%s in=%d out=%d %.1fs",
            i.kind,
            i.user,
            i.container or "-",
            exit_status,
            reason,
            self.bytes_in,
            self.bytes_out,
            duration,
        )

    def _recording_failed(self, exc: BaseException) -> None:
        """The recording ends here (the session goes on): an error, low disk space, or the size
        cap. Counted as a recording error unless it is the size cap; audited either way."""
        rec, self.recorder = self.recorder, None
        if isinstance(exc, RecordingStopped) and not exc.low_disk:
            log.warning("session recording stopped: %s (the session goes on)", exc)
        else:
            self._obs.metrics.recording_errors.inc()
            log.error("session recording stopped: %s", exc)
        i = self.info
        self._obs.submit(
            session_event(
                i,
                _audit.RECORDING_STOPPED,
                reason=str(exc),
                recording=str(self._recording_path) if self._recording_path else None,
            )
        )
        if rec is not None:
            with contextlib.suppress(OSError, ValueError):
                rec.close()
            self._obs.convert_later(rec)  # keep what was recorded until then
