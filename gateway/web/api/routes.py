"""The admin API's routes (``/api/v1``)."""

from __future__ import annotations

from aiohttp import web

from gateway.ssh.context import Gateway


def add_routes(app: web.Application, gw: Gateway) -> None:
    """Add the API's routes to the web listener's application."""
    app.router.add_get("/api/v1/openapi.json", _openapi)


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response({"openapi": "3.1.0", "info": {"title": "sshgw", "version": "1"}})
