"""X-Forwarded-For/-Proto believed only from trusted proxies (gateway.web.forwarded), and the
web listener's error shape (gateway.web.problems)."""

from __future__ import annotations

import pytest

from gateway.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from gateway.ssh.proxyproto import parse_networks
from gateway.web.forwarded import MAX_HOPS, client_of
from gateway.web.problems import from_error

PROXY = parse_networks(["10.0.0.1", "10.1.0.0/16"])


def test_untrusted_peer_keeps_its_address_whatever_it_says() -> None:
    c = client_of("192.0.2.9", ["203.0.113.5"], ["https"], PROXY)
    assert (c.remote, c.scheme) == ("192.0.2.9", None)


def test_no_trusted_proxy_configured_believes_nobody() -> None:
    c = client_of("10.0.0.1", ["203.0.113.5"], ["https"], ())
    assert (c.remote, c.scheme) == ("10.0.0.1", None)


def test_trusted_proxy_names_the_client() -> None:
    c = client_of("10.0.0.1", ["203.0.113.5"], ["https"], PROXY)
    assert (c.remote, c.scheme) == ("203.0.113.5", "https")


def test_spoofed_left_entries_are_skipped() -> None:
    # The client wrote "1.2.3.4" itself; the proxy appended the client's real address.
    c = client_of("10.0.0.1", ["1.2.3.4, 198.51.100.7"], [], PROXY)
    assert c.remote == "198.51.100.7"


def test_chain_of_trusted_proxies_is_walked() -> None:
    c = client_of("10.0.0.1", ["198.51.100.7", "10.1.2.3"], [], PROXY)
    assert c.remote == "198.51.100.7"


def test_garbage_stops_the_walk() -> None:
    c = client_of("10.0.0.1", ["198.51.100.7, not-an-ip"], ["gopher"], PROXY)
    assert (c.remote, c.scheme) == ("10.0.0.1", None)


def test_ports_and_brackets() -> None:
    assert client_of("10.0.0.1", ["[2001:db8::1]:443"], [], PROXY).remote == "2001:db8::1"
    assert client_of("10.0.0.1", ["198.51.100.7:5555"], [], PROXY).remote == "198.51.100.7"


def test_hops_are_bounded() -> None:
    hops = ["198.51.100.7"] + ["10.1.0.9"] * (MAX_HOPS + 5)
    c = client_of("10.0.0.1", [", ".join(hops)], [], PROXY)
    assert c.remote == "10.1.0.9"  # stopped looking, kept the last trusted hop


def test_errors_map_to_statuses() -> None:
    assert from_error(NotFound("no such user: bob"))[0] == 404
    assert from_error(Conflict("exists"))[0] == 409
    status, body = from_error(InvalidInput("bad"))
    assert status == 422 and body == {"error": {"code": "invalid", "message": "bad", "field": None}}
    assert from_error(StoreUnavailable("down"))[0] == 503


def test_listener_settings() -> None:
    from gateway.config import Settings

    assert Settings().http_address is None  # off by default
    cfg = Settings(http_listen="127.0.0.1:8022", http_proxy_from="10.0.0.1, 10.1.0.0/16")
    assert cfg.http_address == ("127.0.0.1", 8022)
    assert [str(n) for n in cfg.http_proxy_networks] == ["10.0.0.1/32", "10.1.0.0/16"]
    with pytest.raises(InvalidInput):
        Settings(http_listen="x", http_tls_cert="/c.pem")  # a key goes with it
    with pytest.raises(InvalidInput, match=r"http_proxy_from: 'example\.com' is not an IP"):
        Settings(http_proxy_from="example.com")
