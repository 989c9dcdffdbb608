"""What every API route is: :class:`Route` (method, path, models, scope, handler), and the
:class:`Call` its handler gets (the gateway, the token, the validated path, query and body)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from gateway.admin.common import Actor
from gateway.ssh.context import Gateway
from gateway.store import Store
from gateway.store.tokens import TokenInfo

PREFIX = "/api/v1"

T = TypeVar("T")
ListT = TypeVar("ListT", bound=BaseModel)

Handler = Callable[["Call"], Awaitable[BaseModel | web.StreamResponse | None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # below PREFIX, e.g. "/users/{name}"
    handler: Handler
    summary: str
    tag: str
    ok: type[BaseModel] | None  # the response's model; None: no body
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # Path parameters: name -> "name" (a user/group name), "ref" (text) or "id" (an integer)
    params: dict[str, str] = field(default_factory=dict)
    write: bool = False  # needs an admin token
    media: str | None = None  # a response that is not JSON (its media type)


@dataclass(frozen=True)
class Call:
    request: web.Request
    gw: Gateway
    token: TokenInfo
    path: dict[str, Any]
    query: Any
    body: Any

    @property
    def store(self) -> Store:
        return self.gw.store

    @property
    def actor(self) -> Actor:
        """Who makes a change: the token, from the client's address."""
        return Actor(f"token:{self.token.name}", self.request.remote)


def page(items: list[Any], limit: int, offset: int = 0) -> tuple[list[Any], bool]:
    """One page of ``items`` and whether more follow."""
    return items[offset : offset + limit], len(items) > offset + limit


def listed(
    call: Call,
    found: list[T],
    view: Callable[[T], dict[str, Any]],
    item: type[BaseModel],
    of: type[ListT],
) -> ListT:
    """A list route's answer: the page of ``found`` the query asks for (``limit``, ``offset``),
    each item as ``item`` from its ``view``, and whether more follow."""
    items, more = page(found, call.query.limit, call.query.offset)
    return of(items=[item.model_validate(view(x)) for x in items], more=more)
