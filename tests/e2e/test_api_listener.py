"""The web listener of a running gateway (``SSHGW_HTTP_LISTEN``): security headers on every
response, JSON errors, TLS, and ``X-Forwarded-*`` believed only from trusted proxies."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest

from tests.e2e import apiclient
from tests.e2e.apiclient import web_gateway
from tests.e2e.helpers import Gateway, GatewayFactory, free_port, wait_until
from tests.support.process import HOST, listening

pytestmark = pytest.mark.timeout(180)


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    r = apiclient.request(port, method, path, None, headers, tls)
    return r.status, r.headers, r.body


def security_headers_of(headers: http.client.HTTPMessage) -> None:
    csp = headers["Content-Security-Policy"]
    assert csp is not None and "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "aiohttp" not in (headers["Server"] or "")


@pytest.fixture(scope="module")
def plain(gateway_factory: GatewayFactory) -> tuple[Gateway, int]:
    # 127.0.0.1 is a trusted proxy; ::1 exists only so the list has two entries.
    return web_gateway(gateway_factory, SSHGW_HTTP_PROXY_FROM="127.0.0.1/32,::1")


def test_unknown_path_is_json_404_with_headers(plain: tuple[Gateway, int]) -> None:
    _, port = plain
    status, headers, body = request(port, "GET", "/nothing/here")
    assert status == 404
    security_headers_of(headers)
    assert headers["Content-Type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["code"] == "not_found" and err["message"] and "field" in err


def test_wrong_method_is_json_405(plain: tuple[Gateway, int]) -> None:
    _, port = plain
    status, headers, body = request(port, "DELETE", "/api/v1/openapi.json")
    assert status == 405
    security_headers_of(headers)
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    assert "GET" in (headers["Allow"] or "")


def test_forwarded_proto_from_a_trusted_proxy(plain: tuple[Gateway, int]) -> None:
    """The test client connects from 127.0.0.1, a trusted proxy here: its X-Forwarded-Proto
    https makes the request secure (HSTS); without it, no HSTS."""
    _, port = plain
    _, headers, _ = request(port, "GET", "/api/v1/openapi.json")
    assert headers["Strict-Transport-Security"] is None
    _, headers, _ = request(
        port, "GET", "/api/v1/openapi.json", headers={"X-Forwarded-Proto": "https"}
    )
    assert headers["Strict-Transport-Security"]


def test_forwarded_headers_from_anyone_else_are_ignored(gateway_factory: GatewayFactory) -> None:
    _, port = web_gateway(gateway_factory, SSHGW_HTTP_PROXY_FROM="10.9.8.7")
    _, headers, _ = request(
        port,
        "GET",
        "/api/v1/openapi.json",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.9.8.7"},
    )
    assert headers["Strict-Transport-Security"] is None


def _self_signed(root: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / "cert.pem", root / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    _, port = web_gateway(
        gateway_factory, SSHGW_HTTP_TLS_CERT=str(cert), SSHGW_HTTP_TLS_KEY=str(key)
    )
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    status, headers, _ = request(port, "GET", "/api/v1/openapi.json", tls=ctx)
    assert status == 200
    security_headers_of(headers)
    assert headers["Strict-Transport-Security"]
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        request(port, "GET", "/api/v1/openapi.json")  # plain HTTP on the TLS port


def test_bad_tls_files_stop_the_start_with_one_line(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    gw = Gateway(
        tmp_path,
        {
            "SSHGW_HTTP_LISTEN": f"{HOST}:{free_port()}",
            "SSHGW_HTTP_TLS_CERT": str(tmp_path / "bad.pem"),
            "SSHGW_HTTP_TLS_KEY": str(tmp_path / "bad.pem"),
        },
    )
    res = gw.cli(*gw.serve_args(), check=False, timeout=60)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "TLS certificate" in res.stderr


def test_malformed_request_is_refused_without_a_traceback(plain: tuple[Gateway, int]) -> None:
    gw, port = plain
    with socket.create_connection((HOST, port), timeout=30) as s:
        s.sendall(b"GET /api/v1/users HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
        reply = s.recv(4096)
    assert reply.split(b" ")[1] == b"400"  # answered by aiohttp itself, before the app
    assert "Traceback" not in gw.log()


@pytest.mark.postgres
def test_tokens_on_postgresql(tmp_path: Path, pg_url: str, docker_host: str) -> None:
    """The token store behind a live listener on PostgreSQL: made, used, scoped, removed."""
    port = free_port()
    gw = Gateway(tmp_path, {"SSHGW_DATABASE_URL": pg_url, "SSHGW_HTTP_LISTEN": f"{HOST}:{port}"})
    gw.cli("db", "upgrade")
    admin = apiclient.new_token(gw, "pg-admin", "admin")
    read = apiclient.new_token(gw, "pg-read", "read")
    gw.start()
    try:
        assert wait_until(lambda: listening(port), 30)
        r = apiclient.Api(port, admin)("POST", "/groups", {"name": "pg-ops"})
        assert r.status == 201, r.body
        assert apiclient.Api(port, read)("POST", "/groups", {"name": "pg-x"}).status == 403
        assert apiclient.Api(port, read)("GET", "/groups").json["items"][0]["name"] == "pg-ops"
        gw.cli("token", "remove", "pg-admin")
        assert apiclient.Api(port, admin)("GET", "/groups").status == 401
        events = apiclient.Api(port, read)("GET", "/audit?kind=admin").json["items"]
        assert [e["actor"] for e in events if e["detail"]["action"] == "group.add"] == [
            "token:pg-admin"
        ]
    finally:
        gw.stop()
