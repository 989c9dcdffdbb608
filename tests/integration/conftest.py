"""Fixtures of the integration tests: ``store``, a migrated :class:`~gateway.store.Store` on each of
``db_url``'s databases (SQLite and PostgreSQL), closed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import Store


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()
