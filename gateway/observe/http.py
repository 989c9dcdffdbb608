"""The metrics and health listener: ``/metrics``, ``/healthz``, ``/readyz`` (aiohttp).

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only when the database
and the Docker engine both answer, else 503 with one line per failing dependency; from SIGTERM on
(the drain) it answers 503 at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[list[str]]]
Exposition = Callable[[], Awaitable[bytes]]


async def serve(
    app: web.Application, host: str, port: int, what: str, **site: Any
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (``site``: more ``TCPSite`` options); the runner (to clean
    up) and the port it listens on (port 0 picks a free one). A port that cannot be had is one
    GatewayError line naming ``what``."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    tcp = web.TCPSite(runner, host, port, reuse_address=True, **site)
    try:
        await tcp.start()
    except OSError as exc:
        await runner.cleanup()
        raise GatewayError(
            f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sockets = getattr(tcp._server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1]) if sockets else port


class HttpListener:
    def __init__(
        self,
        host: str,
        port: int,
        exposition: Exposition,
        ready: ReadyCheck,
        details: Callable[[], list[str]] = list,
    ) -> None:
        self.host = host
        self._details = details  # lines after the verdict (one per engine of a fleet)
        self.port = port
        self._exposition = exposition
        self._ready = ready
        self._runner: web.AppRunner | None = None
        # SIGTERM: the gateway drains (gateway.observe.drain); not ready from then on.
        self.draining = False

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner, self.port = await serve(app, self.host, self.port, "metrics")
        log.info("metrics and health listening on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="not ready\ndraining: shutting down\n")
        problems = await self._ready()
        details = "".join(f"{d}\n" for d in self._details())
        if problems:
            return web.Response(
                status=503, text="not ready\n" + "".join(f"{p}\n" for p in problems) + details
            )
        return web.Response(text="ready\n" + details)
