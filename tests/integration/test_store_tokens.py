"""API tokens in the store (gateway.store.tokens), on SQLite and PostgreSQL: shown once, kept as
a digest, found by key id, refused when unknown, tampered with, expired or removed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.store import Store
from gateway.store.models import utcnow
from gateway.store.tokens import PREFIX, Scope, key_id_of, token_digest


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


async def test_token_round_trip(store: Store) -> None:
    token, info = await store.add_token("ci", Scope.READ, created_by="alice")
    assert token.startswith(PREFIX) and len(token) >= len(PREFIX) + 12 + 43
    assert info.scope == Scope.READ and info.key_id == key_id_of(token)
    found = await store.check_token(token)
    assert found is not None and found.name == "ci" and found.created_by == "alice"
    assert (await store.list_tokens())[0].last_used_at is not None


async def test_only_a_digest_is_stored(store: Store) -> None:
    token, _ = await store.add_token("ci", Scope.ADMIN)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM api_tokens"))).all()
    text = repr(rows)
    assert token not in text and token[len(PREFIX) + 12 :] not in text
    assert token_digest(token) in text


async def test_tampered_unknown_and_malformed_tokens_are_refused(store: Store) -> None:
    token, _ = await store.add_token("ci", Scope.ADMIN)
    last = "A" if token[-1] != "A" else "B"
    assert await store.check_token(token[:-1] + last) is None  # same key id, wrong secret
    other, _ = await store.add_token("other", Scope.ADMIN)
    assert await store.check_token(token[: len(PREFIX) + 12] + other[len(PREFIX) + 12 :]) is None
    for bad in ("", "sshgw_", token + "x", token.upper(), "Bearer " + token, "\x00" * 60):
        assert await store.check_token(bad) is None


async def test_expired_and_removed_tokens_are_refused(store: Store) -> None:
    token, _ = await store.add_token("soon", Scope.ADMIN, expires_at=utcnow() + timedelta(hours=1))
    assert await store.check_token(token) is not None
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE api_tokens SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)}
        )
    assert await store.check_token(token) is None
    kept, _ = await store.add_token("kept", Scope.READ)
    await store.remove_token("kept")
    assert await store.check_token(kept) is None
    with pytest.raises(NotFound):
        await store.remove_token("kept")


async def test_names_are_unique_and_checked(store: Store) -> None:
    await store.add_token("ci", Scope.READ)
    with pytest.raises(Conflict):
        await store.add_token("ci", Scope.ADMIN)
    with pytest.raises(InvalidInput):
        await store.add_token("bad name", Scope.READ)
