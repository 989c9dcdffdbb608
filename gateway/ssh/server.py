"""Per-connection SSH server: login routing and authentication.

Identity is decided here and carried on the connection object (``GatewayConnection.identity``);
sessions read it from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from gateway.errors import BadLogin, GatewayError, StoreUnavailable
from gateway.observe.logs import conn_id_var
from gateway.routing import Target, parse_login
from gateway.ssh.limits import (
    AuthTries,
    Digest,
    FailureDigest,
    FailureThrottle,
    StartupGate,
    parse_max_startups,
)
from gateway.ssh.transport import coalesce_writes
from gateway.store import AuthUser, verify_password

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.engines import DockerEngine
    from gateway.observe import Observer
    from gateway.ssh.session import GatewaySession
    from gateway.store import Store

log = logging.getLogger(__name__)


class TaskSet:
    """Owner of background tasks: every task is tracked and cancelled/awaited at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed: %r", task.get_name(), task.exception())

    async def close(self, timeout: float = 5.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)


TOO_MANY_FAILURES = "Too many authentication failures"  # what OpenSSH's sshd says


class Limits:
    """What peers that have not authenticated may make the whole gateway hold or do.

    One per gateway (see :mod:`gateway.ssh.limits` and docs/SECURITY.md, "Unauthenticated
    peers"): the startup gate, the failure throttle, the slots for password checks, and the
    audit digest of failed logins with the timer that writes it.
    """

    # A refused connection is logged at debug level; a summary at most this often.
    warn_interval = 60.0

    def __init__(self, settings: Settings, observer: Observer) -> None:
        self.settings = settings
        self.observer = observer
        self.gate = StartupGate(
            parse_max_startups(settings.max_startups), settings.max_startups_per_source
        )
        self.throttle = FailureThrottle()
        self.digest = FailureDigest()
        self.password_slots = asyncio.Semaphore(settings.max_password_checks)
        self.password_waiting = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused_since_warn = 0
        self._warned_at = -self.warn_interval
        # Connections holding failures not yet written (written at shutdown at the latest).
        self.pending: set[GatewayConnection] = set()

    # Startups -------------------------------------------------------------------------------

    def enter(self, source: str) -> str | None:
        """A new connection from ``source``: None when it may start, else why not."""
        reason = self.gate.enter(source)
        if reason is None:
            self.observer.unauthenticated(self.gate.count)
            return None
        self.observer.startup_refused(reason)
        self._refused_since_warn += 1
        now = time.monotonic()
        if now - self._warned_at >= self.warn_interval:
            log.warning(
                "refusing new connections: %d unauthenticated open (max_startups %s, "
                "%d from one source at most); %d refused since the last warning",
                self.gate.count,
                self.settings.max_startups,
                self.settings.max_startups_per_source,
                self._refused_since_warn,
            )
            self._warned_at = now
            self._refused_since_warn = 0
        return reason

    def leave(self, source: str) -> None:
        self.gate.leave(source)
        self.observer.unauthenticated(self.gate.count)

    # Password checks ------------------------------------------------------------------------

    async def check_password(self, stored: str | None, password: str) -> bool:
        """argon2 verification in a worker thread, at most ``max_password_checks`` at once."""
        self.password_waiting += 1
        self.observer.password_checks_waiting(self.password_waiting)
        try:
            await self.password_slots.acquire()
        finally:
            self.password_waiting -= 1
            self.observer.password_checks_waiting(self.password_waiting)
        try:
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(None, verify_password, stored, password)
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                # The client replaced its request: the thread still runs, and keeps its slot.
                await asyncio.wait({job})
                raise
        finally:
            self.password_slots.release()

    # Audit of failed logins -----------------------------------------------------------------

    def login_failed(
        self, source: str, user: str | None, remote: str, method: str, reason: str, count: int
    ) -> None:
        """A failed-login event: written now, or summed into the source's digest."""
        write, due = self.digest.admit(source, user, method, count)
        if write:
            self.observer.login_failed(user, remote, method, reason, count)
        for d in due:
            self._write(d)
        self._schedule()

    def _write(self, d: Digest) -> None:
        users = list(d.users)
        self.observer.login_failed(
            users[0] if len(users) == 1 else None,
            d.source,
            ",".join(sorted(d.methods)),
            "repeated failures from this source",
            d.count,
            users=users,
            window=self.digest.window,
        )

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        at = self.digest.next_due()
        if at is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, at - time.monotonic()) + 0.01, self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        for d in self.digest.due():
            self._write(d)
        self._schedule()

    def close(self) -> None:
        """At shutdown: write every failure held back (connections' and digests')."""
        for conn in list(self.pending):
            conn.write_failures()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for d in self.digest.drain():
            self._write(d)


@dataclass
class Gateway:
    """Everything a connection needs, shared by the whole process."""

    settings: Settings
    store: Store
    engine: DockerEngine
    observer: Observer
    tasks: TaskSet = field(default_factory=TaskSet)
    motd: str | None = None
    # Set when the gateway shuts down: live sessions end their processes and say why.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings, self.observer)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who authenticated, and what they asked for in the login name."""

    user: str
    groups: frozenset[str]
    target: Target
    method: str


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.conn_id = uuid.uuid4().hex[:12]
        self.accepted_at = time.monotonic()
        self.remote = "-"
        self.conn: asyncssh.SSHServerConnection | None = None
        self.identity: Identity | None = None
        self._target: Target | None = None
        self._user: AuthUser | None = None
        self._method = ""
        self._closed = False
        # Limits (gateway.ssh.limits): the startup slot this connection holds until it
        # authenticates, its failed attempts, and its open session channels.
        self.source = "-"  # the peer's address, without the port
        self._slot = False
        self._tries = AuthTries(gw.settings.max_auth_tries)
        self._too_many = False
        self._failed_first: str | None = None  # method of the failure written at once
        self._failed_more = 0  # failures after it, written summed
        self._failed_methods: set[str] = set()
        self._keys_rejected = 0
        self._sessions: set[GatewaySession] = set()

    # Connection lifecycle -----------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.source = str(host)
            self.remote = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        reason = self.gw.limits.enter(self.source)
        if reason is not None:
            # Too many unauthenticated connections: closed before our banner and the key
            # exchange (asyncssh sends its banner only after this returns).
            log.debug("conn %s: refused from %s (%s)", self.conn_id, self.remote, reason)
            conn.abort()
            return
        self._slot = True
        _count_auth_failures(conn, self._auth_failure)
        coalesce_writes(conn, self.gw.settings.write_buffer_high)
        self.gw.observer.connection_opened(self.conn_id, self.remote)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._release()
        self.write_failures()
        if self.identity is None and exc is not None:
            self.gw.observer.handshake_failed(self.remote, exc.__class__.__name__)
        self.gw.observer.connection_closed(self.conn_id)

    def _release(self) -> None:
        """Give the startup slot back (authenticated, or gone)."""
        if self._slot:
            self._slot = False
            self.gw.limits.leave(self.source)

    # Authentication -------------------------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        conn_id_var.set(self.conn_id)
        self._user = None
        self._target = None
        try:
            self._target = parse_login(username)
        except BadLogin as exc:
            self._banner(f"sshgw: {exc.user_message} (expected USER+CONTAINER[+LOGIN])")
            return True
        try:
            self._user = await self.gw.store.auth_user(self._target.user)
        except StoreUnavailable:
            log.error("conn %s: database unavailable during authentication", self.conn_id)
            self._banner("sshgw: the gateway cannot reach its database; try again later")
        return True

    def _banner(self, text: str) -> None:
        if self.conn is not None:
            try:
                self.conn.send_auth_banner(text + "\r\n")
            except Exception as exc:  # the banner is a courtesy
                log.debug("auth banner: %r", exc)

    def _usable_user(self) -> AuthUser | None:
        user = self._user
        if user is None or user.disabled:
            return None
        return user

    def public_key_auth_supported(self) -> bool:
        return True

    def _user_name(self, username: str) -> str:
        """The gateway user an attempt is for (the raw login name when it does not parse)."""
        return self._target.user if self._target is not None else username[:64]

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self._usable_user()
        fingerprint = key.get_fingerprint("sha256")
        accepted = False
        if user is not None:
            for k in user.keys:
                if k.fingerprint != fingerprint:
                    continue
                if not k.expired():
                    accepted = True
                break
        # asyncssh asks this for a query and for a signed attempt alike: a refused key counts
        # once (gateway.ssh.limits.AuthTries), and is no audit event of its own — an agent
        # offering its keys in turn is normal. A login that fails with keys only is one event
        # when the connection ends.
        self._tries.key(fingerprint, accepted)
        if accepted:
            self._method = "publickey"
            self._accepted_key = fingerprint
            return True
        self._keys_rejected += 1
        self.gw.observer.auth_attempt(
            "publickey",
            False,
            self._target.user if self._target else None,
            self.remote,
            "key not accepted",
            audit=False,
        )
        return False

    def password_auth_supported(self) -> bool:
        return self.gw.settings.password_auth

    async def validate_password(self, username: str, password: str) -> bool:
        if not self._tries.password():
            # Only a client that replaced pending checks by new requests gets here.
            self._too_many_failures()
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, TOO_MANY_FAILURES
            )
        user = self._usable_user()
        stored = user.password_hash if user is not None else None
        limits = self.gw.limits
        keys = (("source", self.source), ("user", self._user_name(username)))
        # Earlier failures from this source or for this user: the attacker's connection
        # waits; the gateway does no work meanwhile (no thread, no hash).
        delay = limits.throttle.delay(*keys)
        if delay > 0:
            self.gw.observer.auth_throttled()
            await asyncio.sleep(delay)
        ok = await limits.check_password(stored, password)
        ok = ok and user is not None
        if ok:
            self._method = "password"
            return True
        limits.throttle.failed(*keys)
        self.gw.observer.auth_attempt(
            "password",
            False,
            self._target.user if self._target else None,
            self.remote,
            "bad password",
            audit=False,
        )
        self._login_failed("password")
        return False

    # Failed attempts ------------------------------------------------------------------------

    def _auth_failure(self) -> bool:
        """asyncssh is about to answer "failure". True: disconnect instead (MaxAuthTries)."""
        if not self._tries.failure():
            return False
        self._too_many_failures()
        return True

    def _too_many_failures(self) -> None:
        if self._too_many:
            return
        self._too_many = True
        self.gw.observer.auth_too_many()
        log.info(
            "conn %s: disconnected after %d failed authentication attempts from %s",
            self.conn_id,
            self._tries.failures,
            self.remote,
        )

    def _login_failed(self, method: str) -> None:
        """Audit of failed attempts: the first of a connection is written at once, the rest
        summed into one event when the connection authenticates or ends."""
        if self._failed_first is None:
            self._failed_first = method
            self.gw.limits.login_failed(
                self.source,
                self._target.user if self._target else None,
                self.remote,
                method,
                "bad password" if method == "password" else "key not accepted",
                1,
            )
            return
        self._failed_more += 1
        self._failed_methods.add(method)
        self.gw.limits.pending.add(self)

    def write_failures(self) -> None:
        """Write what is held back: further failures, or a login that failed with keys only."""
        self.gw.limits.pending.discard(self)
        user = self._target.user if self._target else None
        reason = "too many authentication failures" if self._too_many else ""
        if self._failed_more:
            count, self._failed_more = self._failed_more, 0
            self.gw.limits.login_failed(
                self.source,
                user,
                self.remote,
                ",".join(sorted(self._failed_methods)),
                reason or "further failed attempts",
                count,
            )
        if (
            self._closed
            and self.identity is None
            and self._failed_first is None
            and self._keys_rejected
        ):
            self._failed_first = "publickey"
            self.gw.limits.login_failed(
                self.source,
                user,
                self.remote,
                "publickey",
                reason or "key not accepted",
                self._keys_rejected,
            )

    def auth_completed(self) -> None:
        self._release()
        self.write_failures()
        user = self._usable_user()
        assert user is not None and self._target is not None
        self.identity = Identity(user.name, user.groups, self._target, self._method)
        self.gw.observer.auth_attempt(self._method, True, user.name, self.remote)
        # Re-checked for every channel and by the revocation poller while the connection lives.
        fp = getattr(self, "_accepted_key", None) if self._method == "publickey" else None
        close = self.conn.close if self.conn is not None else (lambda: None)
        self.gw.observer.connection_authenticated(
            self.conn_id,
            user.name,
            self.remote,
            self._method,
            close,
            key=fp,
            password_hash=user.password_hash if self._method == "password" else None,
        )
        log.info(
            "conn %s: %s authenticated by %s from %s",
            self.conn_id,
            user.name,
            self._method,
            self.remote,
        )
        if self._method == "publickey":
            fp = getattr(self, "_accepted_key", None)
            if fp:
                self.gw.tasks.spawn(self._touch_key(fp), name="key-used")

    async def _touch_key(self, fingerprint: str) -> None:
        try:
            await self.gw.store.key_used(fingerprint)
        except GatewayError as exc:
            log.warning("could not record key use: %s", exc.user_message)

    # Sessions -------------------------------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        if self.identity is None:
            return False
        limit = self.gw.settings.max_sessions
        if len(self._sessions) >= limit:
            self.gw.observer.channel_refused("max_sessions")
            log.info(
                "conn %s: session refused: %d open on this connection (max_sessions)",
                self.conn_id,
                len(self._sessions),
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"too many sessions on this connection (at most {limit})",
            )
        from gateway.ssh.session import GatewaySession

        session = GatewaySession(self)
        self._sessions.add(session)
        return session

    def session_closed(self, session: GatewaySession) -> None:
        """A session channel closed: its place under ``max_sessions`` is free again."""
        self._sessions.discard(session)

    # No forwarding of any kind (yet): deny by default.
    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False


def _count_auth_failures(conn: asyncssh.SSHServerConnection, failed: Callable[[], bool]) -> None:
    """Call ``failed()`` before asyncssh answers an authentication request with "failure";
    when it returns True, disconnect with "Too many authentication failures" instead.

    asyncssh has no MaxAuthTries and no hook for a failed attempt (a refused query, a bad
    signature on an accepted key, "none", an unsupported method never reach the server
    object); every one of them is answered through ``send_userauth_failure``, which is
    wrapped here for this connection.
    """
    original = getattr(conn, "send_userauth_failure", None)
    if not callable(original):  # an asyncssh that changed: fail loudly in the log, not open
        log.error("asyncssh has no send_userauth_failure: max_auth_tries is not enforced")
        return

    def send_userauth_failure(partial_success: bool) -> None:
        if failed():
            conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, TOO_MANY_FAILURES)
            return
        original(partial_success)

    setattr(conn, "send_userauth_failure", send_userauth_failure)  # noqa: B010
