"""A small HTTP client for the admin API of a gateway under test (http.client: nothing between
the test and the bytes on the wire)."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any

from tests.e2e.helpers import Gateway, GatewayFactory, free_port, wait_until
from tests.support.process import HOST, listening


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The error of an error reply, checked to have the one shape."""
        doc = self.json
        assert set(doc) == {"error"}, doc
        assert set(doc["error"]) == {"code", "message", "field"}, doc
        assert "Traceback" not in self.body.decode("utf-8", "replace")
        return dict(doc["error"])


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(HOST, port, timeout=60, context=tls)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def web_gateway(factory: GatewayFactory, **env: str) -> tuple[Gateway, int]:
    """A gateway with its web listener on a free port; (gateway, port)."""
    port = free_port()
    gw = factory({"SSHGW_HTTP_LISTEN": f"{HOST}:{port}", **env})
    assert wait_until(lambda: listening(port), 30), "the web listener did not come up"
    return gw, port


def new_token(gw: Gateway, name: str, scope: str, *extra: str) -> str:
    res = gw.cli("token", "add", name, "--scope", scope, *extra)
    token = res.stdout.strip()
    assert token.startswith("sshgw_") and "\n" not in token, res.stdout
    return token


class Api:
    """The API of one gateway, called with one token."""

    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        self.token = token

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Reply:
        h = dict(headers or {})
        tok = token if token is not None else self.token
        if tok is not None:
            h.setdefault("Authorization", f"Bearer {tok}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        return request(self.port, method, "/api/v1" + path, data, h)
