"""Per-connection SSH server: login routing and authentication.

Identity is decided here and carried on the connection object (``GatewayConnection.identity``);
sessions read it from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from gateway.errors import BadLogin, GatewayError, StoreUnavailable
from gateway.observe.logs import conn_id_var
from gateway.routing import Target, parse_login
from gateway.ssh.transport import coalesce_writes
from gateway.store import AuthUser, verify_password

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.engines import DockerEngine
    from gateway.observe import Observer
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

    # Connection lifecycle -----------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        coalesce_writes(conn, self.gw.settings.write_buffer_high)
        peer = conn.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.remote = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        self.gw.observer.connection_opened(self.conn_id, self.remote)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.identity is None and exc is not None:
            self.gw.observer.handshake_failed(self.remote, exc.__class__.__name__)
        self.gw.observer.connection_closed(self.conn_id)

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

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self._usable_user()
        fingerprint = key.get_fingerprint("sha256")
        if user is not None:
            for k in user.keys:
                if k.fingerprint != fingerprint:
                    continue
                if k.expired():
                    break
                self._method = "publickey"
                self._accepted_key = fingerprint
                return True
        self.gw.observer.auth_attempt(
            "publickey",
            False,
            self._target.user if self._target else None,
            self.remote,
            "key not accepted",
        )
        return False

    def password_auth_supported(self) -> bool:
        return self.gw.settings.password_auth

    async def validate_password(self, username: str, password: str) -> bool:
        user = self._usable_user()
        stored = user.password_hash if user is not None else None
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, verify_password, stored, password)
        ok = ok and user is not None
        if ok:
            self._method = "password"
            return True
        self.gw.observer.auth_attempt(
            "password",
            False,
            self._target.user if self._target else None,
            self.remote,
            "bad password",
        )
        return False

    def auth_completed(self) -> None:
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
        from gateway.ssh.session import GatewaySession

        return GatewaySession(self)

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
