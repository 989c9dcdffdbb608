"""The web terminal: a shell in a container, in the browser, as the same session SSH gives.

``ssh alice@gw web web1`` prints ``SSHGW_HTTP_PUBLIC_URL/web/login#TOKEN`` (see
:meth:`gateway.ssh.channel.GatewaySession._web_link`; the token is in the fragment, so it reaches
neither a log nor a ``Referer``). The login page posts it to ``POST /web/login``, which redeems the
link once (:mod:`gateway.store.weblinks`) and sets a short-lived ``HttpOnly; Secure;
SameSite=Strict`` cookie; the terminal page (``/web/``, xterm.js from ``static/``) opens the
WebSocket ``/web/ws`` with it, once. Both requests must come from the public URL's origin.

The WebSocket is then one session through the SSH path's own pieces: the credential the link was
asked with is registered with the observer (revocation ends it), the grants are read and decided
again (:func:`gateway.ssh.channel.grants_and_container`, :func:`~gateway.ssh.channel.authorize`),
and :func:`gateway.ssh.bridge.run_exec` runs the shell with :class:`WebSession` as its channel
(:mod:`gateway.web.termio`): recording, audit (``via: web``), ``sessions kill`` and limits as
for ``ssh -t alice+web1@gw``. Binary frames carry terminal bytes both ways, JSON text frames the
rest (``resize`` from the page; ``exit`` and ``error`` from the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.errors import AccessDenied, ContainerNotRunning, GatewayError
from gateway.observe import SessionInfo
from gateway.observe.logs import conn_id_var, session_id_var
from gateway.routing import Target
from gateway.ssh.auth import Credential
from gateway.ssh.bridge import run_exec
from gateway.ssh.channel import authorize, grants_and_container
from gateway.ssh.context import ByteWriter, Gateway, Identity, SessionContext
from gateway.ssh.pacing import EventQueueCap
from gateway.store import AuthUser
from gateway.store.weblinks import COOKIE_TTL, WebGrant, digest
from gateway.vocab import EndReason, SessionKind
from gateway.web.termio import MAX_SIZE, WebInput, WebOutput, parse_control

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
COOKIE = "sshgw_web"
VIA = "web"  # how the session's audit events are marked
TERM = "xterm-256color"
MAX_FRAME = 64 * 1024  # the largest frame taken from a browser
HEARTBEAT = 20.0  # seconds between the gateway's pings
AGAIN = "open a new link: ssh USER@gw web CONTAINER"


def add_routes(app: web.Application, gw: Gateway) -> None:
    """The terminal's pages, assets and WebSocket; none while SSHGW_HTTP_PUBLIC_URL is unset."""
    origin = gw.settings.http_public_url
    if origin is None:
        return
    site = Terminal(gw, origin)
    app.router.add_get("/web/login", site.login_page)
    app.router.add_post("/web/login", site.redeem)
    app.router.add_get("/web/", site.term_page)
    app.router.add_get("/web/ws", site.websocket)
    app.router.add_static("/web/static", STATIC)


class Terminal:
    """The terminal's handlers, for the origin ``origin`` (scheme://host[:port])."""

    def __init__(self, gw: Gateway, origin: str) -> None:
        self.gw = gw
        self.origin = origin
        self.live: dict[str, int] = {}  # open web sessions per user (max_sessions each)

    def _same_origin(self, request: web.Request) -> None:
        if request.headers.get("Origin") != self.origin:
            raise web.HTTPForbidden(text=f"requests must come from {self.origin}")

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "login.html")

    async def term_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "term.html")

    async def redeem(self, request: web.Request) -> web.StreamResponse:
        """``POST /web/login`` with ``{"token": …}``: the link's cookie, once."""
        self._same_origin(request)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise web.HTTPBadRequest(text="no token")
        cookie = await self.gw.store.redeem_web_link(token, COOKIE_TTL)
        if cookie is None:
            log.info("web: a used, expired or unknown link from %s", request.remote)
            raise web.HTTPForbidden(text=f"this link was used or has expired; {AGAIN}")
        resp = web.HTTPNoContent()
        resp.set_cookie(
            COOKIE,
            cookie,
            max_age=int(COOKIE_TTL),
            path="/web",
            httponly=True,
            secure=True,
            samesite="Strict",
        )
        return resp

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``/web/ws``: the session, for the cookie a link was redeemed for (once)."""
        self._same_origin(request)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, compress=False)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="not a WebSocket request")
        grant = await self.gw.store.open_web_session(request.cookies.get(COOKIE, ""))
        if grant is None:
            raise web.HTTPForbidden(text=f"no terminal session; {AGAIN}")
        cols, rows = _size(request.query)
        await ws.prepare(request)
        session = WebSession(self.gw, request.remote or "-", grant, ws, cols, rows)
        count = self.live.get(grant.user, 0)
        if count >= self.gw.settings.max_sessions:
            self.gw.observer.channel_refused("max_sessions")
            await session.refuse(f"too many web terminals open ({count}); close one first")
            return ws
        self.live[grant.user] = count + 1
        try:
            await session.serve()
        finally:
            left = self.live[grant.user] - 1
            if left:
                self.live[grant.user] = left
            else:
                del self.live[grant.user]
        return ws


def _size(query: Mapping[str, str]) -> tuple[int, int]:
    """The page's terminal size at open (``?cols=&rows=``), within bounds; else 80x24."""
    size = []
    for name in ("cols", "rows"):
        text = query.get(name, "")
        if not (text.isascii() and text.isdigit() and len(text) <= 4):
            return 80, 24
        size.append(int(text))
    cols, rows = size
    if not (1 <= cols <= MAX_SIZE and 1 <= rows <= MAX_SIZE):
        return 80, 24
    return cols, rows


class WebSession:
    """One browser's session: the channel :func:`~gateway.ssh.bridge.run_exec` serves (an
    :class:`~gateway.ssh.bridge.ExecSession`), and the peer the checks are made for (a
    :class:`~gateway.ssh.channel.Peer`)."""

    def __init__(
        self,
        gw: Gateway,
        remote: str,
        grant: WebGrant,
        ws: web.WebSocketResponse,
        cols: int,
        rows: int,
    ) -> None:
        self.gw = gw
        self.remote = remote
        self.grant = grant
        self.ws = ws
        self.conn_id = "web" + uuid.uuid4().hex[:9]
        self.session_id = uuid.uuid4().hex
        self.accepted_at = time.monotonic()
        self.gone = asyncio.Event()
        self.events = EventQueueCap(1)  # a browser sends no signals
        self.input = WebInput(cols, rows)
        self.output = WebOutput(ws)

    # What the bridge reads from its channel and session (gateway.ssh.bridge.ExecSession).
    @property
    def chan(self) -> WebSession:
        return self

    def get_environment(self) -> Mapping[str, str]:
        return {}

    def get_terminal_type(self) -> str:
        return TERM

    def get_terminal_size(self) -> tuple[int, int, int, int]:
        cols, rows = self.input.size
        return cols, rows, 0, 0

    def take_newest_size(self, fallback: tuple[int, int]) -> tuple[int, int]:
        cols, rows = self.input.size
        return rows, cols

    def dropped(self, what: str) -> None:
        return None

    def say(self, writer: ByteWriter, message: str, pty: bool) -> None:
        if not self.gone.is_set():
            with contextlib.suppress(ConnectionError):
                writer.write(f"sshgw: {message}\r\n".encode("utf-8", "replace"))

    # The session ---------------------------------------------------------------------------

    async def refuse(self, message: str) -> None:
        sender = asyncio.ensure_future(self.output.run())
        self.say(self.output, message, True)
        self.output.control(type="error", message=message)
        await self._finish(sender)

    async def serve(self) -> None:
        conn_id_var.set(self.conn_id)
        session_id_var.set(self.session_id[:12])
        sender = asyncio.ensure_future(self.output.run())
        reader = asyncio.ensure_future(self._read_socket())
        try:
            status = await self._run()
            self.output.control(type="exit", status=status)
        except GatewayError as exc:
            if exc.public_message != exc.user_message:
                log.warning("conn %s: %s", self.conn_id, exc.user_message)
            self.say(self.output, exc.public_message, True)
            self.output.control(type="error", message=exc.public_message)
        except Exception:
            log.exception("conn %s: web session %s failed", self.conn_id, self.session_id[:8])
            self.output.control(type="error", message="internal error (logged on the gateway)")
        finally:
            self.gw.observer.connection_closed(self.conn_id)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._finish(sender)

    async def _finish(self, sender: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(5.0):
                await self.output.flush()
        except TimeoutError:
            pass
        self.output.close()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await self.ws.close()

    async def _run(self) -> int:
        g, gw = self.grant, self.gw
        user = await gw.store.auth_user(g.user)
        if user is None:
            raise AccessDenied("access revoked (user removed)")
        cred = _credential(g, user)
        gw.observer.connection_opened(self.conn_id, self.remote)
        gw.observer.connection_authenticated(
            self.conn_id,
            g.user,
            self.remote,
            cred.method,
            self._close,
            key=cred.key,
            password_hash=cred.password_hash,
        )
        target = Target(g.user, g.container, g.login)
        ident = Identity(g.user, user.groups, target, cred, via=VIA)
        kind = SessionKind.SHELL
        grants, container = await grants_and_container(self, ident, kind, g.container)
        decision = authorize(self, ident, grants, container, kind)
        if not container.running:
            raise ContainerNotRunning(container.name, container.state)
        login = decision.login or container.user or "root"
        cols, rows = self.input.size
        info = SessionInfo(
            id=self.session_id,
            conn_id=self.conn_id,
            user=g.user,
            container=container.name,
            container_id=container.id,
            login=login,
            kind=kind,
            command=None,
            remote=self.remote,
            pty=True,
            term=TERM,
            cols=cols,
            rows=rows,
            record=decision.record,
            connected_at=self.accepted_at,
            via=VIA,
        )
        track = gw.observer.session_started(info)
        out = self.output
        ctx = SessionContext(
            ident, kind, None, container, login, decision, track, True, self.input, out, out
        )
        try:
            return await run_exec(self, ctx)
        except GatewayError as exc:
            track.end(exc.exit_status, EndReason.ERROR)
            raise
        except BaseException:
            track.end(None, EndReason.ERROR)
            raise

    async def _read_socket(self) -> None:
        """Keystrokes and resizes from the page, only as fast as the container takes them."""
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    self.input.feed(msg.data)
                    await self.input.room()
                elif msg.type == WSMsgType.TEXT:
                    size = parse_control(msg.data)
                    if size is not None:
                        self.input.resize(*size)
                else:
                    break
        finally:
            self.input.eof()
            self.gone.set()
            self.output.close()

    def _close(self) -> None:
        """The observer ends a revoked session's connection: the socket closes."""
        self.gone.set()
        self.gw.tasks.spawn(self.ws.close(code=WSCloseCode.POLICY_VIOLATION), name="web-close")


def _credential(grant: WebGrant, user: AuthUser) -> Credential:
    """The credential the link was asked with, as the observer re-checks it: the key's
    fingerprint, or the user's password hash while it is still the one the link was made
    with (another hash, or none, fails the re-check: "password changed")."""
    if grant.method == "password":
        current = user.password_hash or ""
        same = bool(current) and digest(current) == grant.credential
        return Credential("password", password_hash=current if same else None)
    return Credential(grant.method, key=grant.credential or None)
