"""The login grammar: USER, USER+CONTAINER, USER+CONTAINER+LOGIN, and hostile input."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadLogin, GatewayError
from gateway.routing import (
    CONTAINER_RE,
    MAX_LOGIN_LEN,
    Target,
    parse_login,
    valid_user_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", Target("alice")),
        ("alice+web1", Target("alice", "web1")),
        ("alice+web1+www-data", Target("alice", "web1", "www-data")),
        ("alice+web1+root", Target("alice", "web1", "root")),
        ("alice+3f2a9c", Target("alice", "3f2a9c")),
        ("alice+my_app.web-1+app", Target("alice", "my_app.web-1", "app")),
        ("a.b-c_d@example.org+c", Target("a.b-c_d@example.org", "c")),
        ("_svc+c", Target("_svc", "c")),
        ("0day+c", Target("0day", "c")),
        ("alice+web1+1000", Target("alice", "web1", "1000")),
        ("alice+web1+1000:1000", Target("alice", "web1", "1000:1000")),
        ("alice+web1+_apt", Target("alice", "web1", "_apt")),
        ("alice+web1+machine$", Target("alice", "web1", "machine$")),
        ("Alice+Web1+App", Target("Alice", "Web1", "App")),
    ],
)
def test_valid_forms(raw: str, expected: Target) -> None:
    assert parse_login(raw) == expected


def test_target_defaults() -> None:
    t = parse_login("bob")
    assert t.container is None
    assert t.login is None


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "+",
        "++",
        "+++",
        "alice+",
        "+web1",
        "alice++root",
        "alice+web1+",
        "+web1+root",
        "alice+web1+root+x",
        "a+b+c+d+e",
        "alice+web1++",
        # control characters, whitespace
        "alice\n+web1",
        "alice+web1\r",
        "alice+web1\t",
        "alice +web1",
        " alice+web1",
        "alice+web 1",
        "alice+web1+ro ot",
        "alice\x00+web1",
        "alice+web1\x00",
        "alice+web1+root\x00",
        "\x00",
        "alice\x1b[2J+web1",
        "alice+web1\x7f",
        "alice\u2028+web1",
        "alice\u00a0+web1",
        # unicode look-alikes and non-ASCII
        "аlice+web1",  # Cyrillic a
        "alice+wеb1",  # Cyrillic e
        "alice+web1+rооt",
        "ålice+web1",
        "alice+web１",  # fullwidth digit
        "alice+web1+\u202eroot",
        "😀+web1",
        # path tricks
        "../alice+web1",
        "alice+../web1",
        "alice+web1/../web2",
        "alice+web1+../root",
        "alice+/web1",
        "alice+web1+/root",
        "alice/x+web1",
        "alice+.+root",
        "alice+..+root",
        "alice+.hidden",
        "alice+web1+.",
        "alice+web1+..",
        # leading dash (option injection)
        "-alice+web1",
        "-oProxyCommand=x+web1",
        "alice+-web1",
        "alice+web1+-root",
        "alice+web1+--help",
        "alice+-",
        # shell metacharacters
        "alice+web1;id",
        "alice+web1+root;id",
        "alice+web1+$(id)",
        "alice+web1+`id`",
        "alice+web1|x",
        "alice+web1&",
        "alice+web1+ro'ot",
        'alice+web1+ro"ot',
        "alice+web1+*",
        "alice+web*",
        "alice+web1+root:",
        "alice+web1+:0",
        "alice+web1+0:",
        "alice+web1+1:2:3",
        "alice+web1+$",
        "alice+web1+ro$ot",
        "alice:pw+web1",
        "alice+web1:8080",
        "alice+web1+12345678901",
    ],
)
def test_hostile_input_is_bad_login(raw: str) -> None:
    with pytest.raises(BadLogin) as info:
        parse_login(raw)
    msg = info.value.user_message
    assert msg
    assert "\n" not in msg
    # The message must not echo hostile bytes back to the client.
    assert "\x00" not in msg and "\x1b" not in msg


def test_bad_login_is_a_gateway_error() -> None:
    with pytest.raises(GatewayError):
        parse_login("+")


@pytest.mark.parametrize("n", [MAX_LOGIN_LEN + 1, 1000, 100_000])
def test_very_long_is_refused(n: int) -> None:
    with pytest.raises(BadLogin):
        parse_login("a" * n)
    with pytest.raises(BadLogin):
        parse_login("alice+" + "w" * n)
    with pytest.raises(BadLogin):
        parse_login("alice+web1+" + "r" * n)


def test_component_length_limits() -> None:
    assert parse_login("u" * 64 + "+c").user == "u" * 64
    with pytest.raises(BadLogin):
        parse_login("u" * 65 + "+c")
    assert parse_login("u+" + "c" * 128).container == "c" * 128
    with pytest.raises(BadLogin):
        parse_login("u+" + "c" * 129)
    assert parse_login("u+c+" + "l" * 32).login == "l" * 32
    with pytest.raises(BadLogin):
        parse_login("u+c+" + "l" * 33)


def test_messages_name_the_problem() -> None:
    with pytest.raises(BadLogin, match="empty"):
        parse_login("")
    with pytest.raises(BadLogin, match="too many"):
        parse_login("a+b+c+d")
    with pytest.raises(BadLogin, match="too long"):
        parse_login("a" * 1000)
    with pytest.raises(BadLogin, match="container"):
        parse_login("alice+-x")
    with pytest.raises(BadLogin, match="login"):
        parse_login("alice+web1+-x")
    with pytest.raises(BadLogin, match="user"):
        parse_login("-alice+web1")


def test_helpers() -> None:
    assert valid_user_name("alice")
    assert not valid_user_name("alice+web1")
    assert not valid_user_name("")
    assert not valid_user_name("-x")
    assert CONTAINER_RE.fullmatch("web1")
    assert CONTAINER_RE.fullmatch("0123abcdef")
    assert not CONTAINER_RE.fullmatch("-web1")
    assert not CONTAINER_RE.fullmatch("web1/x")
    assert not CONTAINER_RE.fullmatch("")


# --- property tests ---------------------------------------------------------------------------

_user = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\Z")
_container = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_login = st.one_of(
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z"),
    st.from_regex(r"\A[0-9]{1,10}(:[0-9]{1,10})?\Z"),
)


@settings(max_examples=500)
@given(st.text(max_size=400))
def test_parse_login_only_raises_bad_login(raw: str) -> None:
    try:
        t = parse_login(raw)
    except BadLogin as e:
        assert e.user_message and "\n" not in e.user_message
        return
    # Anything accepted is a clean, printable ASCII triple.
    assert "+".join(p for p in (t.user, t.container, t.login) if p is not None) == raw
    assert raw.isascii() and raw.isprintable()
    assert not raw.startswith("-")


_alphabet = string.ascii_letters + string.digits + "+-_.@:$/ \x00\n*"


@settings(max_examples=500)
@given(st.text(alphabet=_alphabet, max_size=300))
def test_parse_login_grammar_soup(raw: str) -> None:
    try:
        t = parse_login(raw)
    except BadLogin:
        return
    parts = raw.split("+")
    assert 1 <= len(parts) <= 3
    assert t.user == parts[0]
    assert t.container == (parts[1] if len(parts) > 1 else None)
    assert t.login == (parts[2] if len(parts) > 2 else None)
    for p in parts:
        assert p and not p.startswith(("-", ".")) and "/" not in p and "*" not in p


@settings(max_examples=300)
@given(_user, st.none() | _container, _login)
def test_round_trip_valid_triples(user: str, container: str | None, login: str) -> None:
    if container is None:
        raw = user
        expected = Target(user)
    else:
        raw = f"{user}+{container}+{login}"
        expected = Target(user, container, login)
    assert parse_login(raw) == expected


@settings(max_examples=200)
@given(_user, _container)
def test_round_trip_valid_pairs(user: str, container: str) -> None:
    assert parse_login(f"{user}+{container}") == Target(user, container)
