"""The engines table (``sshgw engine add``) on SQLite and PostgreSQL: round trip, names and URLs
checked, duplicates and unknown names refused."""

from __future__ import annotations

import pytest

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.store import Store
from tests.integration import test_store

store = test_store.store  # the fixture: a store with a current schema


async def test_engines_round_trip(store: Store) -> None:
    assert await store.list_engines() == []
    await store.add_engine("host-2", "unix:///run/h2.sock")
    await store.add_engine("a1", "tcp://10.0.0.5:2376", tls_ca="/etc/ca.pem")
    listed = await store.list_engines()
    assert [(e.name, e.url, e.tls_ca) for e in listed] == [
        ("a1", "tcp://10.0.0.5:2376", "/etc/ca.pem"),
        ("host-2", "unix:///run/h2.sock", None),
    ]
    with pytest.raises(Conflict):
        await store.add_engine("a1", "unix:///x")
    await store.remove_engine("a1")
    with pytest.raises(NotFound):
        await store.remove_engine("a1")
    assert [e.name for e in await store.list_engines()] == ["host-2"]


@pytest.mark.parametrize(
    ("name", "url", "tls", "part"),
    [
        ("Host", "unix:///x", {}, "invalid engine name"),
        ("h.1", "unix:///x", {}, "invalid engine name"),
        ("-h", "unix:///x", {}, "invalid engine name"),
        ("h", "unix://x", {}, "absolute path"),
        ("h", "tcp://10.0.0.5:2376", {}, "needs TLS"),
        ("h", "tcp://10.0.0.5:2376", {"tls_ca": "/c", "tls_cert": "/x"}, "together"),
        ("h", "unix:///x", {"tls_ca": "/c"}, "for tcp://"),
        ("h", "http://x", {}, "use unix:///PATH"),
        ("h", "unix:///a b", {}, "no spaces"),
    ],
)
async def test_bad_engines_are_one_line(
    store: Store, name: str, url: str, tls: dict[str, str], part: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        await store.add_engine(name, url, **tls)
    assert part in exc.value.user_message and "\n" not in exc.value.user_message
