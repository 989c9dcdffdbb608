"""The admin API under ``/api/v1``: the route table, and the one wrapper every route runs in.

The wrapper authenticates (``Authorization: Bearer``; a missing, unknown, expired or removed
token is 401, a read token on a write route 403), validates the path, the query and the JSON
body against the route's models (bad input: 400/422 naming the field), calls the handler and
answers with the response model. Errors come out in the listener's one shape
(:mod:`gateway.web.problems`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.errors import GatewayError, NotFound
from gateway.routing import valid_user_name
from gateway.ssh.context import Gateway
from gateway.store.tokens import Scope, TokenInfo
from gateway.web import problems
from gateway.web.api import activity, people
from gateway.web.api.base import PREFIX, Call, Route
from gateway.web.api.openapi import document

ROUTES: tuple[Route, ...] = (*people.ROUTES, *activity.ROUTES)
MAX_ID = 2**31 - 1
MAX_REF = 64


class Problem(Exception):
    """An HTTP error with the listener's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(
            problems.body(problems.code_for(self.status), self.message, self.field),
            status=self.status,
            headers=self.headers,
        )


def add_routes(app: web.Application, gw: Gateway) -> None:
    """Add the API's routes to the web listener's application."""
    spec = json.dumps(document(ROUTES, PREFIX), indent=1).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get(PREFIX + "/openapi.json", openapi)
    for route in ROUTES:
        app.router.add_route(route.method, PREFIX + route.path, _wrap(route, gw))


# Authentication -----------------------------------------------------------------------------

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sshgw"'}


async def authenticate(request: web.Request, gw: Gateway) -> TokenInfo:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Problem(401, "an API token is required (Authorization: Bearer TOKEN)",
                      headers=_CHALLENGE)  # fmt: skip
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "use Authorization: Bearer TOKEN", headers=_CHALLENGE)
    info = await gw.store.check_token(token.strip())
    if info is None:
        raise Problem(
            401,
            "unknown, expired or removed API token",
            headers={"WWW-Authenticate": 'Bearer realm="sshgw", error="invalid_token"'},
        )
    return info


# Input --------------------------------------------------------------------------------------


def _path(route: Route, request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind in route.params.items():
        raw = request.match_info[name]
        if kind == "id":
            if (
                len(raw) > 10
                or not raw.isascii()
                or not raw.isdigit()
                or not 1 <= int(raw) <= MAX_ID
            ):
                raise NotFound(f"no such {route.tag.rstrip('s')}: {raw[:20]!r}")
            out[name] = int(raw)
        elif kind == "name":
            if not valid_user_name(raw):
                raise NotFound(f"no such {route.path.split('/')[1].rstrip('s')}: {raw[:70]!r}")
            out[name] = raw
        else:
            if len(raw) > MAX_REF or not raw.isprintable():
                raise NotFound(f"no such {route.tag.rstrip('s')}: {raw[:MAX_REF]!r}")
            out[name] = raw
    return out


def _invalid(exc: ValidationError, where: str) -> Problem:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"])
    return Problem(422, f"{where} {loc}: {message}" if loc else f"{where}: {message}", loc or None)


def _query(route: Route, request: web.Request) -> Any:
    if route.query is None:
        if request.query:
            raise Problem(422, f"unknown query parameter {next(iter(request.query))!r}",
                          next(iter(request.query)))  # fmt: skip
        return None
    try:
        return route.query.model_validate(dict(request.query))
    except ValidationError as exc:
        raise _invalid(exc, "query parameter") from None


async def _body(route: Route, request: web.Request) -> Any:
    raw = await request.read()  # bounded by the application's client_max_size (413)
    if route.body is None:
        if raw.strip():
            raise Problem(400, "this request takes no body")
        return None
    if not raw.strip():
        data: Any = {}
    else:
        if request.content_type != "application/json":
            raise Problem(415, "send the body as JSON (Content-Type: application/json)")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise Problem(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Problem(422, "the body must be a JSON object")
    try:
        return route.body.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, "field") from None


# The wrapper --------------------------------------------------------------------------------


def _wrap(route: Route, gw: Gateway) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        resp = await answer(request)
        resp.headers["Cache-Control"] = "no-store"  # answers hold what only admins may see
        return resp

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            token = await authenticate(request, gw)
            if route.write and token.scope != Scope.ADMIN:
                raise Problem(403, f"token {token.name} may only read (scope read)")
            call = Call(
                request=request,
                gw=gw,
                token=token,
                path=_path(route, request),
                query=_query(route, request),
                body=await _body(route, request),
            )
            result = await route.handler(call)
        except Problem as exc:
            return exc.response()
        except GatewayError as exc:
            status, doc = problems.from_error(exc)
            return web.json_response(doc, status=status)
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, BaseModel):
            return web.Response(
                status=route.status, body=result.model_dump_json().encode(),
                content_type="application/json",
            )  # fmt: skip
        return web.Response(status=route.status)

    return handle
