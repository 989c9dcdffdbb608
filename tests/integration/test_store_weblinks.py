"""Web terminal links in real databases (SQLite and PostgreSQL): a link is redeemed once and
before it expires, its cookie opens one session once, and only digests are stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from gateway.store import Store
from gateway.store.models import utcnow
from gateway.store.weblinks import WEB_LINKS, WebGrant, digest, new_token

GRANT = WebGrant("alice", "web1", "root", "publickey", "SHA256:abc")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


async def rows(store: Store) -> list[sa.Row[tuple[object, ...]]]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(sa.select(WEB_LINKS))).all())


async def test_a_link_is_redeemed_once_and_opens_once(store: Store) -> None:
    token = await store.create_web_link(GRANT, 60)
    cookie = await store.redeem_web_link(token, 60)
    assert cookie is not None and cookie != token
    assert await store.redeem_web_link(token, 60) is None  # used
    assert await store.open_web_session(token) is None  # a token is no cookie
    assert await store.open_web_session(cookie) == GRANT
    assert await store.open_web_session(cookie) is None  # opened
    # Neither secret is stored, only their digests.
    (row,) = await rows(store)
    assert row.link_hash == digest(token) and row.cookie_hash == digest(cookie)
    assert token not in str(row._mapping) and cookie not in str(row._mapping)


async def test_expired_links_and_cookies_do_nothing(store: Store) -> None:
    token = await store.create_web_link(GRANT, 0.0)
    assert await store.redeem_web_link(token, 60) is None
    token = await store.create_web_link(GRANT, 60)
    cookie = await store.redeem_web_link(token, 0.0)
    assert cookie is not None
    assert await store.open_web_session(cookie) is None
    for bad in ("", "x" * 43 + "!", new_token(), "a" * 10_000):
        assert await store.redeem_web_link(bad, 60) is None
        assert await store.open_web_session(bad) is None


async def test_two_redeemers_racing_for_one_link_one_wins(store: Store) -> None:
    token = await store.create_web_link(GRANT, 60)
    won = await asyncio.gather(*(store.redeem_web_link(token, 60) for _ in range(8)))
    assert len([c for c in won if c is not None]) == 1


async def test_old_rows_are_deleted_when_a_link_is_made(store: Store) -> None:
    await store.create_web_link(GRANT, 60)
    async with store.engine.begin() as conn:
        await conn.execute(WEB_LINKS.update().values(expires_at=utcnow() - timedelta(hours=2)))
    await store.create_web_link(GRANT, 60)
    assert len(await rows(store)) == 1
