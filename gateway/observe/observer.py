"""The :class:`Observer`: one per gateway, told everything that happens.

The SSH server reports what happens through one :class:`Observer`. Every method it calls on the
data path is synchronous, O(1) and never raises: metric updates are in-memory, audit records go
into a bounded buffer that one task batch-writes to the database, and recordings are appended to
a buffered file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from gateway.config import Settings
from gateway.engines import Engine
from gateway.errors import GatewayError
from gateway.observe import audit as _audit
from gateway.observe.audit import AuditWriter, StoreLike
from gateway.observe.drain import Drain
from gateway.observe.health import Health
from gateway.observe.http import HttpListener
from gateway.observe.metrics import PROXY_HEADER_REASONS, Metrics, label_or_other, short_label
from gateway.observe.recorder import Recorder, convert_orphans
from gateway.observe.replica import Replica
from gateway.observe.revoke import LiveConn, revocation
from gateway.observe.track import SessionInfo, SessionTrack, session_event
from gateway.policy import Right
from gateway.store import AuthUser
from gateway.store.models import utcnow
from gateway.vocab import DenyReason, EndReason, SessionKind

log = logging.getLogger(__name__)

__all__ = ["Observer", "SessionInfo", "SessionTrack"]

# Label values; anything else is counted as "other".
_DENY_REASONS: frozenset[str] = frozenset(DenyReason)
_KINDS: frozenset[str] = frozenset(SessionKind)
# The kind a refusal is counted under when the caller names only the right.
_RIGHT_KIND: dict[str, SessionKind] = {
    Right.SHELL: SessionKind.SHELL,
    Right.EXEC: SessionKind.EXEC,
    Right.SFTP_READ: SessionKind.SFTP,
    Right.SFTP_WRITE: SessionKind.SFTP,
}
_AUTH_METHODS = frozenset({"publickey", "password", "keyboard-interactive", "none", "hostbased"})
_STARTUP_REASONS = frozenset({"startups", "per_source"})
_PROXY_REASONS = frozenset(PROXY_HEADER_REASONS)
_CHANNEL_REASONS = frozenset({"max_sessions"})
_FORWARD_RESULTS = frozenset({"ok", "denied", "unreachable", "refused", "error"})


class Observer:
    """Metrics, audit trail, recordings, health listener and the kill poller of one gateway."""

    kill_poll_interval = 1.0
    # Seconds between the end of a session and writing its asciicast file.
    convert_delay = 0.5

    def __init__(
        self,
        settings: Settings,
        store: StoreLike,
        engine: Engine,
        replica: Replica | None = None,
    ) -> None:
        self.settings = settings
        # This process among the replicas (heartbeat, lost sessions); the drain on SIGTERM.
        self.replica = replica
        self.drain = Drain()
        self.store = store
        self.engine = engine
        self.metrics = Metrics(container_label=settings.metrics_container_label)
        self.audit_enabled = settings.audit
        self.writer = AuditWriter(
            store,
            self.metrics,
            spool_path=settings.data_dir / "audit-spool.jsonl",
        )
        host, port = settings.metrics_address
        self.health = Health(store.ping, engine, self.metrics)
        self.http = HttpListener(
            host, port, self.health.exposition, self.health.check_ready, self.health.engine_lines
        )
        self._tracks: dict[str, SessionTrack] = {}
        self._conns: set[str] = set()
        self._live: dict[str, LiveConn] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._conversions: set[asyncio.Task[None]] = set()
        self._started = False
        self._pid = os.getpid()

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        await self.http.start()
        self._started = True
        self._track_conversion(asyncio.to_thread(self._convert_orphans))
        if self.audit_enabled:
            self.writer.load_spool()
            self._tasks.append(asyncio.create_task(self.writer.run(), name="sshgw-audit-writer"))
        self._tasks.append(asyncio.create_task(self._kill_poller(), name="sshgw-kill-poller"))
        if self.replica is not None:
            try:
                await self.replica.register()
            except GatewayError as exc:  # the heartbeat tries again
                log.warning("replica %s: %s", self.replica.name, exc.user_message)
            beat = self.replica.run(lambda: list(self._tracks))
            self._tasks.append(asyncio.create_task(beat, name="sshgw-heartbeat"))

    async def stop(self) -> None:
        for track in list(self._tracks.values()):
            track.end(None, EndReason.SHUTDOWN)
        if self._conversions:
            await asyncio.wait(set(self._conversions), timeout=60.0)
        if self.audit_enabled and self._started and not await self.writer.flush(timeout=5.0):
            log.warning("audit: database did not take all records before shutdown")
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("observer task %s failed", t.get_name())
        if self.audit_enabled:
            self.writer.spool()
        if self.replica is not None:
            await self.replica.leave()
        await self.http.stop()
        self._started = False

    @property
    def metrics_port(self) -> int:
        return self.http.port

    # Connections and authentication ------------------------------------------------------------

    def connection_opened(self, conn_id: str, remote: str) -> None:
        if conn_id in self._conns:
            return
        self._conns.add(conn_id)
        self.metrics.connections_opened.inc()
        self.metrics.connections_open.set(len(self._conns))

    def connection_authenticated(
        self,
        conn_id: str,
        user: str,
        remote: str,
        method: str,
        close: Callable[[], None],
        *,
        key: str | None = None,
        password_hash: str | None = None,
    ) -> None:
        """Remember what the connection authenticated with: it is re-checked while it lives."""
        if conn_id in self._conns:
            self._live[conn_id] = LiveConn(conn_id, user, remote, method, key, password_hash, close)

    def connection_closed(self, conn_id: str) -> None:
        self._live.pop(conn_id, None)
        if conn_id not in self._conns:
            return
        self._conns.discard(conn_id)
        self.metrics.connections_open.set(len(self._conns))

    def handshake_failed(self, remote: str, reason: str) -> None:
        self.metrics.handshake_failures.inc()
        log.info("handshake failed from %s: %s", remote, reason)

    def auth_attempt(
        self,
        method: str,
        ok: bool,
        user: str | None,
        remote: str,
        reason: str = "",
        *,
        audit: bool = True,
    ) -> None:
        """One authentication attempt: always counted; an audit event unless ``audit`` is
        False (failures are then written by :meth:`login_failed`, summed)."""
        result = "success" if ok else "failure"
        self.metrics.auth_attempts.labels(
            method=label_or_other(method, _AUTH_METHODS), result=result
        ).inc()
        if audit:
            self._login_event(user, remote, method, result, reason)

    def login_failed(
        self,
        user: str | None,
        remote: str,
        method: str,
        reason: str,
        count: int = 1,
        **detail: Any,
    ) -> None:
        """One audit event for ``count`` failed attempts (their metrics were counted already)."""
        self._login_event(user, remote, method, "failure", reason, count=count, **detail)

    def _login_event(
        self, user: str | None, remote: str, method: str, result: str, reason: str, **detail: Any
    ) -> None:
        self.submit(
            _audit.event(
                _audit.LOGIN,
                user=user,
                remote=remote,
                method=method,
                result=result,
                reason=reason or None,
                **detail,
            )
        )

    # Limits for unauthenticated peers and channels (gateway.ssh.limits) -------------------

    def proxy_header_refused(self, remote: str, reason: str, detail: str) -> None:
        """A connection from a trusted balancer closed without a good PROXY protocol header."""
        label = label_or_other(reason, _PROXY_REASONS)
        self.metrics.proxy_header_refused.labels(reason=label).inc()
        # A plain TCP health check closes first: not worth a warning every few seconds.
        level = logging.INFO if label == "closed" else logging.WARNING
        log.log(level, "PROXY protocol header from %s refused (%s): %s", remote, label, detail)

    def startup_refused(self, reason: str) -> None:
        self.metrics.startups_refused.labels(reason=label_or_other(reason, _STARTUP_REASONS)).inc()

    def unauthenticated(self, count: int) -> None:
        self.metrics.unauthenticated.set(count)

    def auth_throttled(self) -> None:
        self.metrics.auth_throttled.inc()

    def auth_too_many(self) -> None:
        self.metrics.auth_too_many.inc()

    def password_checks_waiting(self, count: int) -> None:
        self.metrics.password_checks_waiting.set(count)

    def channel_refused(self, reason: str) -> None:
        self.metrics.channels_refused.labels(reason=label_or_other(reason, _CHANNEL_REASONS)).inc()

    def forward_opened(self, result: str, via: str | None = None) -> None:
        """A forwarded connection was asked for (``via``: direct, or ``relay (TOOL)``)."""
        label = "relay" if via and via.startswith("relay") else ("direct" if via else "none")
        self.metrics.forward_opens.labels(
            result=label_or_other(result, _FORWARD_RESULTS), via=label
        ).inc()

    def access_denied(
        self,
        reason: DenyReason,
        user: str,
        container: str | None,
        right: str,
        remote: str,
        kind: SessionKind | None = None,
    ) -> None:
        """A refused session; ``kind`` is the session's kind when known (a refused scp is
        counted as scp, not as the right it lacked)."""
        m = self.metrics
        m.access_denied.labels(reason=label_or_other(reason, _DENY_REASONS)).inc()
        label = (
            label_or_other(kind, _KINDS) if kind is not None else _RIGHT_KIND.get(right, "other")
        )
        m.sessions_started.labels(**m.kind_labels(label, container), result="denied").inc()
        self.submit(
            _audit.event(
                _audit.DENIED,
                user=user,
                container=container,
                remote=remote,
                reason=reason,
                right=right,
            )
        )
        log.info("access denied: %s -> %s (%s, %s)", user, container or "-", right, reason)

    def docker_error(self, op: str) -> None:
        self.metrics.docker_errors.labels(op=short_label(op)).inc()

    def exec_started(self, seconds: float) -> None:
        self.metrics.exec_start.observe(max(0.0, seconds))

    # Sessions -------------------------------------------------------------------------------

    def session_started(self, info: SessionInfo) -> SessionTrack:
        recorder = None
        if (
            info.pty
            and info.record
            and self.settings.recording
            and info.kind in (SessionKind.SHELL, SessionKind.EXEC)
        ):
            recorder = self._open_recorder(info)
        track = SessionTrack(self, info, recorder)
        m = self.metrics
        labels = m.kind_labels(info.kind, info.container)
        m.sessions_started.labels(**labels, result="ok").inc()
        m.sessions_active.labels(**labels).inc()
        self._tracks[info.id] = track
        self.submit(
            _audit.Record(
                "session_start",
                {
                    "id": info.id,
                    "user_name": info.user,
                    "container": info.container or "",
                    "container_id": info.container_id,
                    "login": info.login,
                    "kind": info.kind,
                    "command": info.command,
                    "remote_addr": info.remote,
                    "started_at": track.started_at,
                    "recording_path": str(recorder.path) if recorder else None,
                    "kill_requested": False,
                    "gateway_pid": self._pid,
                    "replica": self._replica_name,
                },
            )
        )
        self.submit(
            session_event(
                info,
                _audit.SESSION_START,
                kind=info.kind,
                login=info.login,
                command=info.command,
                pty=info.pty,
                recording=str(recorder.path) if recorder else None,
                **({"port": info.port} if info.port is not None else {}),
            )
        )
        if self.drain.active:  # on a connection open before the drain began
            track.notify(self.drain.notice())
        if recorder is not None and recorder.stopped is not None:  # no room from the start
            track._recording_failed(recorder.stopped)
        log.info(
            "session started: %s %s@%s login=%s%s",
            info.kind,
            info.user,
            info.container or "-",
            info.login or "-",
            " (recorded)" if recorder else "",
        )
        return track

    def _open_recorder(self, info: SessionInfo) -> Recorder | None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        path = self.settings.effective_recordings_dir / day / f"{info.id}.cast"
        title = f"{info.user}+{info.container}" + (f"+{info.login}" if info.login else "")
        if info.command:
            title += f": {info.command}"
        try:
            rec = Recorder(
                path,
                cols=info.cols,
                rows=info.rows,
                term=info.term,
                title=title,
                record_input=self.settings.record_input,
                max_bytes=self.settings.recording_max_bytes,
                min_free=self.settings.recording_min_free,
            )
        except OSError as exc:
            self.metrics.recording_errors.inc()
            log.error("cannot start session recording at %s: %s", path, exc)
            return None
        self.metrics.recordings_started.inc()
        return rec

    # Recordings: the spool becomes an asciicast file in a worker thread -------------------

    def convert_later(self, rec: Recorder) -> None:
        """Write the asciicast file of a finished recording off the event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools, tests): do it now
            self._convert(rec)
            return
        self._track_conversion(self._convert_soon(rec))

    async def _convert_soon(self, rec: Recorder) -> None:
        # Let the session finish closing first: the conversion competes for the interpreter.
        await asyncio.sleep(self.convert_delay)
        await asyncio.to_thread(self._convert, rec)

    def _track_conversion(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="sshgw-recording")
        self._conversions.add(task)
        task.add_done_callback(self._conversions.discard)

    def _convert(self, rec: Recorder) -> None:
        try:
            rec.convert()
        except (OSError, ValueError) as exc:
            self.metrics.recording_errors.inc()
            log.error("cannot write recording %s: %s", rec.path, exc)

    def _convert_orphans(self) -> None:
        try:
            done = convert_orphans(
                self.settings.effective_recordings_dir, self.settings.recording_max_bytes
            )
        except (OSError, ValueError) as exc:
            self.metrics.recording_errors.inc()
            log.error("cannot convert recordings left by an earlier run: %s", exc)
            return
        if done:
            log.info("converted %d recordings left by an earlier run", len(done))

    def session_ended(self, track: SessionTrack) -> None:
        self._tracks.pop(track.id, None)

    @property
    def _replica_name(self) -> str | None:
        return self.replica.name if self.replica is not None else None

    @property
    def active_sessions(self) -> list[SessionTrack]:
        return list(self._tracks.values())

    def submit(self, record: _audit.Record) -> None:
        if self.audit_enabled:
            self.writer.submit(record)

    # Revocation: what a live connection authenticated with must stay valid ------------------

    async def recheck(self, conn_id: str, user: str) -> str | None:
        """Re-read the connection's user and credential; revoke it and say why when invalid.

        Called for every new channel. Raises :class:`StoreUnavailable` when the database
        cannot answer (the channel is then refused: nothing is granted unchecked).
        """
        live = self._live.get(conn_id)
        if live is None:
            # Not registered as authenticated (or already closed): nothing vouches for it.
            return "connection not authenticated"
        if live.revoked is not None:
            return live.revoked
        current = await self.store.auth_user(user)
        reason = revocation(live, current)
        if reason is not None:
            self.revoke(conn_id, reason)
        return reason

    def revoke(self, conn_id: str, reason: str) -> None:
        """End the connection: its sessions end (reason REVOKED), then it is closed."""
        live = self._live.get(conn_id)
        if live is None or live.revoked is not None:
            return
        live.revoked = reason
        tracks = [t for t in self._tracks.values() if t.info.conn_id == conn_id]
        log.warning(
            "conn %s: %s's access revoked (%s); ending %d session(s) and the connection",
            conn_id,
            live.user,
            reason,
            len(tracks),
        )
        self.submit(
            _audit.event(
                _audit.REVOKED,
                user=live.user,
                remote=live.remote,
                reason=reason,
                conn=conn_id,
                method=live.method,
                key=live.key,
                sessions=[t.id for t in tracks],
            )
        )
        for t in tracks:
            t.kill(EndReason.REVOKED)
        self._track_conversion(self._close_after(live, tracks))

    async def _close_after(self, live: LiveConn, tracks: list[SessionTrack]) -> None:
        # The sessions end their processes and tell the user first; then the connection goes.
        deadline = time.monotonic() + self.settings.kill_grace + 3.0
        while any(not t.ended for t in tracks) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        try:
            live.close()
        except Exception as exc:
            log.debug("closing revoked connection %s: %r", live.conn_id, exc)

    def _revocations(self, users: dict[str, AuthUser]) -> None:
        now = utcnow()
        for live in list(self._live.values()):
            if live.revoked is None:
                reason = revocation(live, users.get(live.user), now)
                if reason is not None:
                    self.revoke(live.conn_id, reason)

    # Live sessions: kill requests and revocations arrive through the database --------------

    async def _kill_poller(self) -> None:
        while True:
            await asyncio.sleep(self.kill_poll_interval)
            if self._live:
                try:
                    async with asyncio.timeout(5.0):
                        users = await self.store.auth_users(_names(self._live.values()))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("revocation poller: %s", exc.__class__.__name__)
                else:
                    self._revocations(users)
            if not self._tracks or not self.audit_enabled:
                continue
            try:
                async with asyncio.timeout(5.0):
                    ids = await self.store.kill_requested(self._replica_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("kill poller: %s", exc.__class__.__name__)
                continue
            for sid in ids:
                track = self._tracks.get(sid)
                if track is not None and not track.killed.is_set():
                    log.warning("session %s: ended on administrator request", sid)
                    track.kill()
                    self._kill_forwards(track.info.conn_id)

    def _kill_forwards(self, conn_id: str) -> None:
        """A session killed by an administrator takes its connection's forwards with it: they
        would otherwise keep the connection (and the access) alive."""
        for t in list(self._tracks.values()):
            forward = t.info.kind == SessionKind.FORWARD
            if forward and t.info.conn_id == conn_id and not t.killed.is_set():
                log.warning("session %s: forward ended with its connection's session", t.id)
                t.kill()


def _names(conns: Iterable[LiveConn]) -> set[str]:
    return {c.user for c in conns if c.revoked is None}
