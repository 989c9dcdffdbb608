"""The web listener: one aiohttp application for the admin API and the web terminal.

``SSHGW_HTTP_LISTEN`` turns it on (off by default); TLS with ``SSHGW_HTTP_TLS_CERT``/``_KEY``,
or plain HTTP behind a reverse proxy whose ``X-Forwarded-For``/``-Proto`` are believed only from
``SSHGW_HTTP_PROXY_FROM`` (:mod:`gateway.web.forwarded`). It is not the ``/metrics`` listener
(:mod:`gateway.observe.http`).

Every response gets the security headers (:data:`SECURITY_HEADERS`, through
``on_response_prepare``, so errors, static files and WebSocket upgrades too); every error is
JSON in one shape (:mod:`gateway.web.problems`), never a traceback. Bodies are bounded by
:data:`MAX_BODY`.

The parts of the site add their own routes: :func:`parts` lists each part's
``add_routes(app, gw)``; ``request.app[GATEWAY]`` is the :class:`~gateway.ssh.context.Gateway`
(settings, store, engine, observer, tasks) and ``request.remote`` / ``request.secure`` are the
client's as a trusted proxy reported them.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from gateway.errors import GatewayError
from gateway.observe.http import serve
from gateway.ssh.context import Gateway
from gateway.web import problems
from gateway.web.forwarded import client_of

log = logging.getLogger(__name__)

RouteAdder = Callable[[web.Application, Gateway], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
SECURE = "sshgw.secure"  # request key: HTTPS as a trusted proxy reported it

# Request bodies (JSON of the API): far more than any key or grant needs.
MAX_BODY = 128 * 1024

# No script but the site's own files, no inline script or style, never in a frame, no referrer.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000"


def parts() -> tuple[RouteAdder, ...]:
    """Each part of the site, as its ``add_routes(app, gw)``: one line per part."""
    from gateway.web.api import add_routes as api_routes
    from gateway.web.terminal import add_routes as terminal_routes

    return (
        api_routes,  # /api/v1 (gateway.web.api)
        terminal_routes,  # /web/ (gateway.web.terminal)
    )


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[_client_middleware(gw), _errors_middleware]
    )
    app[GATEWAY] = gw
    app.on_response_prepare.append(_security_headers)
    for add_routes in parts():
        add_routes(app, gw)
    return app


# Middlewares ------------------------------------------------------------------------------


def _client_middleware(gw: Gateway) -> Middleware:
    trusted = gw.settings.http_proxy_networks

    @web.middleware
    async def client(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted:
            found = client_of(
                request.remote,
                request.headers.getall("X-Forwarded-For", []),
                request.headers.getall("X-Forwarded-Proto", []),
                trusted,
            )
            if found.remote != request.remote or found.scheme:
                # on_response_prepare sees the request as it came; tell it the scheme.
                request[SECURE] = found.scheme == "https"
                request = request.clone(remote=found.remote, scheme=found.scheme or request.scheme)
        return await handler(request)

    return client


def json_error(
    status: int, code: str, message: str, field: str | None = None, **headers: str
) -> web.Response:
    return web.json_response(problems.body(code, message, field), status=status, headers=headers)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and "\n" not in exc.text.strip() else exc.reason
        message = (message or exc.reason).strip().removeprefix(f"{exc.status}: ")
        resp = json_error(exc.status, problems.code_for(exc.status), message)
        for name in ("Allow", "WWW-Authenticate", "Retry-After"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except GatewayError as exc:
        status, doc = problems.from_error(exc)
        return web.json_response(doc, status=status)
    except Exception:
        log.exception("web: %s %r failed", request.method, request.path[:200])
        return json_error(500, "internal", "internal error (see the gateway's log)")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.get(SECURE, request.secure):
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    response.headers["Server"] = "sshgw"


# The listener -----------------------------------------------------------------------------


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a client's garbage: a NUL in a header, a bad
    request line) at ERROR with a traceback; that is no news for an administrator and its
    bytes are the client's. One DEBUG line of ours instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.debug("web: refused a malformed request (%s)", exc.__class__.__name__)
            return False
        return True


_BAD_REQUESTS = _BadRequestFilter()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise GatewayError(
            f"cannot load the web listener's TLS certificate {cert} and key {key}: {reason}"
        ) from None
    return ctx


class WebListener:
    """The web listener's lifecycle: :meth:`start` binds (port 0: any free port, then
    :attr:`port` is the real one), :meth:`stop` closes it and every connection on it."""

    def __init__(self, gw: Gateway) -> None:
        address = gw.settings.http_address
        if address is None:
            raise GatewayError("the web listener is off (SSHGW_HTTP_LISTEN is not set)")
        self.host, self.port = address
        self._gw = gw
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        cfg = self._gw.settings
        ctx = None
        if cfg.http_tls_cert is not None and cfg.http_tls_key is not None:
            ctx = tls_context(str(cfg.http_tls_cert), str(cfg.http_tls_key))
        logging.getLogger("aiohttp.server").addFilter(_BAD_REQUESTS)  # once: a set
        self._runner, self.port = await serve(
            build_app(self._gw), self.host, self.port, "HTTP", ssl_context=ctx, shutdown_timeout=2.0
        )
        scheme = "https" if ctx else "http"
        log.info("web listener on %s://%s:%d/ (API under /api/v1)", scheme, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def start_web(gw: Gateway) -> WebListener | None:
    """The web listener, started, when ``SSHGW_HTTP_LISTEN`` is set; else None."""
    if gw.settings.http_address is None:
        return None
    listener = WebListener(gw)
    await listener.start()
    return listener
