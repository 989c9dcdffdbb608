"""The one shape of every error the web listener answers, and the project's errors mapped to
HTTP statuses; pure.

``{"error": {"code": "not_found", "message": "no such user: bob", "field": null}}``: ``code`` is
stable (clients branch on it), ``message`` is one line meant for a person, ``field`` names the
request field at fault (dotted path) when there is one.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import (
    AccessDenied,
    Conflict,
    EngineUnavailable,
    GatewayError,
    InvalidInput,
    NoSuchContainer,
    NotFound,
    StoreUnavailable,
)

# (error type, HTTP status, code); the first match wins.
_STATUS: tuple[tuple[type[GatewayError], int, str], ...] = (
    (NotFound, 404, "not_found"),
    (NoSuchContainer, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (InvalidInput, 422, "invalid"),
    (AccessDenied, 403, "forbidden"),
    (StoreUnavailable, 503, "unavailable"),
    (EngineUnavailable, 503, "unavailable"),
)

# HTTP statuses aiohttp raises itself, and their codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


def body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def from_error(exc: GatewayError) -> tuple[int, dict[str, Any]]:
    """The status and body for one of the project's errors (its message is safe to show an
    administrator: no secret, no traceback)."""
    field = getattr(exc, "field", None)
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, body(code, exc.user_message, field)
    return 400, body("bad_request", exc.user_message, field)


def code_for(status: int) -> str:
    return HTTP_CODES.get(status, "error" if status >= 400 else "ok")
