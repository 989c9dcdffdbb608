"""Per-connection SSH server: login routing and authentication.

Identity is decided here and carried on the connection object (``GatewayConnection.identity``);
sessions read it from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncssh

from gateway.errors import GatewayError
from gateway.observe.logs import conn_id_var
from gateway.ssh.admission import HELD_SLOT
from gateway.ssh.auth import (
    Credential,
    LoginRequest,
    begin_login,
    key_credential,
    password_credential,
)
from gateway.ssh.channel import GatewaySession
from gateway.ssh.context import Gateway, Identity
from gateway.ssh.forward import forward_requested
from gateway.ssh.limits import AuthTries
from gateway.ssh.transport import coalesce_writes

__all__ = ["Gateway", "GatewayConnection", "Identity"]

log = logging.getLogger(__name__)


TOO_MANY_FAILURES = "Too many authentication failures"  # what OpenSSH's sshd says
REMOTE_FORWARD_REFUSED = (
    "sshgw: remote port forwarding (ssh -R) is not supported; use ssh -L or ssh -D"
)


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.conn_id = uuid.uuid4().hex[:12]
        self.accepted_at = time.monotonic()
        self.remote = "-"
        self.conn: asyncssh.SSHServerConnection | None = None
        self.identity: Identity | None = None
        # The user name being authenticated, and what the last successful check returned.
        self._login: LoginRequest | None = None
        self._credential: Credential | None = None
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
        # Its open channels (sessions; ProxyJump channels and the sessions inside them, which
        # share this set): what max_sessions counts.
        self.open_channels: set[object] = set()
        self.via: str | None = None  # "proxyjump" for a connection served inside a jump channel

    def __repr__(self) -> str:
        if self._closed:
            state = "CLOSED"
        elif self.identity is not None:
            state = "AUTHENTICATED"
        elif self.conn is None:
            state = "NEW"
        elif not self._slot:
            state = "REFUSED"  # too many unauthenticated connections
        else:
            state = "AUTHENTICATING"
        user = self.identity.user if self.identity is not None else self._user_name()
        peer = f"{user}@{self.remote}" if user else self.remote
        return f"<GatewayConnection {self.conn_id[:4]}… {peer} [{state}]>"

    # Connection lifecycle -----------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.source = str(host)
            self.remote = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        # Behind a balancer (gateway.ssh.proxied), the peer is the client the PROXY header named
        # and the slot taken while it was read moves to that address.
        held = conn.get_extra_info(HELD_SLOT)
        reason = self.gw.limits.enter(self.source, held if isinstance(held, str) else None)
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
        self._login = None
        self._credential = None
        self._login, banner = await begin_login(self.gw.store, self.conn_id, username)
        if banner is not None:
            self._banner(banner)
        return True

    def _banner(self, text: str) -> None:
        if self.conn is not None:
            try:
                self.conn.send_auth_banner(text + "\r\n")
            except Exception as exc:  # the banner is a courtesy
                log.debug("auth banner: %r", exc)

    def public_key_auth_supported(self) -> bool:
        return True

    def _user_name(self) -> str | None:
        """The gateway user the attempts are for, as audited."""
        return self._login.user_name if self._login is not None else None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        credential = key_credential(self._login, fingerprint)
        accepted = credential is not None
        # asyncssh asks this for a query and for a signed attempt alike: a refused key counts
        # once (gateway.ssh.limits.AuthTries), and is no audit event of its own — an agent
        # offering its keys in turn is normal. A login that fails with keys only is one event
        # when the connection ends.
        self._tries.key(fingerprint, accepted)
        if credential is not None:
            self._credential = credential
            return True
        self._keys_rejected += 1
        self.gw.observer.auth_attempt(
            "publickey",
            False,
            self._user_name(),
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
        login = self._login or LoginRequest(username)
        user = login.usable
        stored = user.password_hash if user is not None else None
        limits = self.gw.limits
        # Earlier failures from this source or for this user (on any replica): the attacker's
        # connection waits; the gateway does no work meanwhile (no thread, no hash).
        delay = await limits.auth_delay(self.source, login.throttle_name)
        if delay > 0:
            self.gw.observer.auth_throttled()
            await asyncio.sleep(delay)
        credential = password_credential(user, await limits.check_password(stored, password))
        if credential is not None:
            self._credential = credential
            return True
        await limits.auth_failed(self.source, login.throttle_name)
        self.gw.observer.auth_attempt(
            "password",
            False,
            self._user_name(),
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
                self._user_name(),
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
        user = self._user_name()
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
        login, credential = self._login, self._credential
        user = login.usable if login is not None else None
        assert login is not None and login.target is not None
        assert user is not None and credential is not None
        self.identity = Identity(user.name, user.groups, login.target, credential)
        self.gw.observer.auth_attempt(credential.method, True, user.name, self.remote)
        # Re-checked for every channel and by the revocation poller while the connection lives.
        close = self.conn.close if self.conn is not None else (lambda: None)
        self.gw.observer.connection_authenticated(
            self.conn_id,
            user.name,
            self.remote,
            credential.method,
            close,
            key=credential.key,
            password_hash=credential.password_hash,
        )
        log.info(
            "conn %s: %s authenticated by %s from %s",
            self.conn_id,
            user.name,
            credential.method,
            self.remote,
        )
        if credential.key:
            self.gw.tasks.spawn(self._touch_key(credential.key), name="key-used")

    async def _touch_key(self, fingerprint: str) -> None:
        try:
            await self.gw.store.key_used(fingerprint)
        except GatewayError as exc:
            log.warning("could not record key use: %s", exc.user_message)

    # Sessions -------------------------------------------------------------------------------

    def channel_room(self, what: str) -> None:
        """Refuse a new channel (``what``: session, proxyjump …) when ``max_sessions`` are open:
        :class:`asyncssh.ChannelOpenError`, counted and logged."""
        limit = self.gw.settings.max_sessions
        if len(self.open_channels) < limit:
            return
        self.gw.observer.channel_refused("max_sessions")
        log.info(
            "conn %s: %s refused: %d open on this connection (max_sessions)",
            self.conn_id,
            what,
            len(self.open_channels),
        )
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"too many sessions on this connection (at most {limit})",
        )

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        if self.identity is None:
            return False
        self.channel_room("session")
        session = GatewaySession(self)
        self.open_channels.add(session)
        return session

    def session_closed(self, session: GatewaySession) -> None:
        """A session channel closed: its place under ``max_sessions`` is free again."""
        self.open_channels.discard(session)

    # Forwarding: direct-tcpip only (ProxyJump, or -L/-D into the container); the rest is refused.
    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool | Awaitable[asyncssh.SSHTCPSession[bytes]]:
        jumps, jump_port = self.gw.jumps, self.gw.settings.jump_port
        if jumps is not None and jump_port and dest_port == jump_port:
            return jumps.open(self, dest_host)  # ProxyJump (gateway.ssh.jump)
        if self.identity is None:
            return False
        # ssh -L / ssh -D: into the login's container only (gateway.ssh.forward).
        return forward_requested(self, dest_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # ssh -R: a listener inside the container would need a relay per accepted connection
        # (docs/ARCHITECTURE.md). The global request's failure carries no text: say why in a
        # debug message (OpenSSH shows it with -v).
        if self.conn is not None:
            try:
                self.conn.send_debug(REMOTE_FORWARD_REFUSED, always_display=True)
            except Exception as exc:  # a courtesy
                log.debug("debug message: %r", exc)
        log.info("conn %s: remote forwarding (-R) refused", self.conn_id)
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
