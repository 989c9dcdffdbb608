"""The ``forward`` right and its ports: ``--ports LIST`` parsing and the decision per port."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidInput
from gateway.policy import (
    Grant,
    Right,
    Subject,
    Target,
    check_grant,
    decide,
    format_ports,
    parse_ports,
    port_allowed,
)
from gateway.vocab import DenyReason

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
ALICE = Subject("alice", frozenset({"dev"}))
WEB1 = Target("web1")


def test_parse_ports() -> None:
    assert parse_ports("80,8000-8100") == ((80, 80), (8000, 8100))
    assert parse_ports(" 443 , 80 ") == ((80, 80), (443, 443))
    assert parse_ports("") == ()
    assert parse_ports("1-65535") == ((1, 65535),)
    # Overlapping and adjacent ranges are joined; the stored form is canonical.
    assert parse_ports("8000-8100,8050-8200,8201,22") == ((22, 22), (8000, 8201))
    assert format_ports(parse_ports("8000-8100,80")) == "80,8000-8100"


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "65536",
        "80-",
        "-80",
        "9000-8000",
        "http",
        "8o",
        "1e3",
        "٨٠",
        "80--90",
        "+80",
        "99999999",
    ],
)
def test_bad_port_lists(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ports(text)


def test_too_many_ranges() -> None:
    with pytest.raises(ValueError, match="too many"):
        parse_ports(",".join(str(p) for p in range(1, 200, 2)))


@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 300)), max_size=20))
def test_format_then_parse_keeps_the_ports(spans: list[tuple[int, int]]) -> None:
    ranges = [(a, min(a + n, 65535)) for a, n in spans]
    parsed = parse_ports(",".join(f"{a}-{b}" for a, b in ranges))
    assert parse_ports(format_ports(parsed)) == parsed
    for port in {a for a, _ in ranges} | {b for _, b in ranges} | {1, 80, 65535}:
        assert port_allowed(parsed, port) == any(a <= port <= b for a, b in ranges)


def grant(id: int = 1, ports: str = "", rights: str = "forward", **kw: object) -> Grant:
    return Grant(
        id=id,
        target="web*",
        rights=frozenset(rights.split(",")),
        user="alice",
        ports=parse_ports(ports),
        **kw,  # type: ignore[arg-type]
    )


def test_forward_needs_the_port_in_a_grant() -> None:
    d = decide(ALICE, [grant(ports="80,8000-8100")], WEB1, Right.FORWARD, now=NOW, port=8080)
    assert d.allowed and d.port == 8080 and d.ports == ((80, 80), (8000, 8100))
    assert "gives forward to port 8080" in d.message
    d = decide(ALICE, [grant(ports="80,8000-8100")], WEB1, Right.FORWARD, now=NOW, port=22)
    assert not d.allowed and d.reason is DenyReason.PORT_NOT_ALLOWED
    assert "allows port 22" in d.message and "ports 80,8000-8100" in d.message


def test_no_ports_means_no_port() -> None:
    d = decide(ALICE, [grant(ports="")], WEB1, Right.FORWARD, now=NOW, port=80)
    assert not d.allowed and d.reason is DenyReason.PORT_NOT_ALLOWED
    d = decide(ALICE, [grant(ports="")], WEB1, Right.FORWARD, now=NOW, port=None)
    assert not d.allowed and "any port" in d.message


def test_ports_of_a_grant_without_forward_do_not_count() -> None:
    # A shell grant cannot carry ports (check_grant refuses it); even if stored, no forward.
    d = decide(ALICE, [grant(rights="shell", ports="80")], WEB1, Right.FORWARD, now=NOW, port=80)
    assert not d.allowed and d.reason is DenyReason.RIGHT_MISSING


def test_grants_add_up_and_other_rights_ignore_ports() -> None:
    grants = [grant(1, "80"), grant(2, "443", rights="forward,shell")]
    d = decide(ALICE, grants, WEB1, Right.FORWARD, now=NOW, port=443)
    assert d.allowed and d.grant is not None and d.grant.id == 2
    d = decide(ALICE, grants, WEB1, Right.FORWARD, now=NOW, port=None)
    assert d.allowed and d.ports == ((80, 80), (443, 443))
    assert decide(ALICE, grants, WEB1, Right.SHELL, now=NOW).allowed
    expired = [grant(3, "22", expires_at=datetime(2020, 1, 1, tzinfo=UTC))]
    assert decide(ALICE, expired, WEB1, Right.FORWARD, now=NOW, port=22).reason is (
        DenyReason.EXPIRED
    )


def test_check_grant_ports() -> None:
    with pytest.raises(InvalidInput, match="empty port range"):
        check_grant(user="alice", target="web*", rights="forward", ports="8100-8000,80")
    with pytest.raises(InvalidInput, match="--ports"):
        check_grant(user="alice", target="web*", rights="forward", ports="http")
    with pytest.raises(InvalidInput, match="'forward' right"):
        check_grant(user="alice", target="web*", rights="shell", ports="80")
    spec = check_grant(user="alice", target="web*", rights="forward", ports="8000-8100,80")
    assert spec.ports == ((80, 80), (8000, 8100))
    assert check_grant(user="alice", target="web*", rights="forward").ports == ()
