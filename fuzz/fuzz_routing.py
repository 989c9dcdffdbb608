"""atheris harness: the login grammar (gateway.routing.parse_login), ``USER+CONTAINER+LOGIN``.

Any text either parses into parts that satisfy the grammar or is refused with BadLogin; a parsed
login put back together parses to the same target.
"""

from __future__ import annotations

import atheris

from _common import bare_package, run

bare_package("gateway")
with atheris.instrument_imports(include=["gateway"]):
    from gateway.errors import BadLogin
    from gateway.routing import parse_login, valid_user_name


def test_one_input(data: bytes) -> None:
    raw = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    try:
        t = parse_login(raw)
    except BadLogin:
        return
    assert valid_user_name(t.user), raw
    again = "+".join(p for p in (t.user, t.container, t.login) if p is not None)
    assert parse_login(again) == t, (raw, again)


def seeds() -> list[bytes]:
    return [b"alice", b"alice+web1", b"alice+web1+root", b"a+b+c+d", b"+", b"\x00\xff"]


if __name__ == "__main__":
    run(test_one_input, seeds())
