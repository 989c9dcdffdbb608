"""Properties of the login grammar (issue 8): round trips and arbitrary input.

The SSH login name is the first thing an unauthenticated peer sends. :func:`parse_login` either
returns a :class:`Target` whose parts each match their grammar and join back to the input, or
raises :class:`BadLogin`; nothing else may escape, whatever the text. The coverage-guided
counterpart is ``fuzz/fuzz_routing.py``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadLogin
from gateway.routing import (
    CONTAINER_RE,
    LOGIN_RE,
    MAX_LOGIN_LEN,
    USER_RE,
    Target,
    parse_login,
    valid_user_name,
)

FAST = settings(max_examples=250, deadline=None)

users = st.from_regex(USER_RE, fullmatch=True)
containers = st.from_regex(CONTAINER_RE, fullmatch=True)
logins = st.from_regex(LOGIN_RE, fullmatch=True)


def joined(t: Target) -> str:
    return "+".join(p for p in (t.user, t.container, t.login) if p is not None)


@given(users, st.one_of(st.none(), st.tuples(containers, st.one_of(st.none(), logins))))
@FAST
def test_valid_parts_round_trip(user: str, rest: tuple[str, str | None] | None) -> None:
    container, login = rest if rest is not None else (None, None)
    target = Target(user, container, login)
    raw = joined(target)
    if len(raw) > MAX_LOGIN_LEN:
        try:
            parse_login(raw)
        except BadLogin as exc:
            assert "too long" in exc.user_message
            return
        raise AssertionError("an over-long login name was accepted")
    assert parse_login(raw) == target


# Hostile text: anything at all, and near misses built from the grammar's own pieces.
pieces = st.one_of(
    users,
    containers,
    logins,
    st.sampled_from(
        ["+", "++", ".", "-", "@", "$", ":", " ", "\t", "\n", "\0", "\u2028", "é", "\x7f"]
    ),
    st.text(max_size=5),
)
hostile = st.one_of(
    st.text(max_size=120),
    st.lists(pieces, max_size=12).map("".join),
    st.text(alphabet="a+", min_size=250, max_size=260),
)


@given(hostile)
@FAST
def test_anything_parses_or_is_a_bad_login(raw: str) -> None:
    try:
        target = parse_login(raw)
    except BadLogin as exc:
        # Safe to show: one printable line.
        assert exc.user_message and exc.user_message.isprintable()
        return
    assert joined(target) == raw
    assert len(raw) <= MAX_LOGIN_LEN and raw.isascii()
    assert valid_user_name(target.user)
    assert target.container is None or CONTAINER_RE.fullmatch(target.container)
    assert target.login is None or LOGIN_RE.fullmatch(target.login)
    assert target.login is None or target.container is not None


bare = st.one_of(
    users,
    st.lists(pieces, max_size=6).map("".join).map(lambda s: s.replace("+", "")),
    st.text(alphabet=st.characters(exclude_characters="+"), max_size=80),
)


@given(bare)
@FAST
def test_a_bare_user_parses_iff_it_is_a_valid_user_name(raw: str) -> None:
    try:
        ok = parse_login(raw) == Target(raw)
    except BadLogin:
        ok = False
    assert ok == valid_user_name(raw)
