"""Migration 0002 (grant ports) upgrades a database made by 0001, and ports round-trip."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection

from gateway.store import Store


async def _upgrade_to(store: Store, revision: str) -> None:
    cfg = store._alembic_config()

    def run(sync_conn: Connection) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(run)


async def _old_grant(s: Store, revision: str, rights: str) -> None:
    """A database at ``revision`` with user alice and one grant of ``rights`` on web*."""
    await _upgrade_to(s, revision)
    async with s.engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO users (name) VALUES ('alice')"))
        await conn.execute(
            sa.text(
                "INSERT INTO grants (user_id, target, labels, rights) "
                f"SELECT id, 'web*', '{{}}', '{rights}' FROM users WHERE name = 'alice'"
            )
        )


async def test_an_existing_database_gets_ports(db_url: str) -> None:
    s = Store.from_url(db_url)
    try:
        await _old_grant(s, "0001", "forward,shell")
        assert await s.schema_state() != "current"
        await s.upgrade()
        assert await s.is_current()
        (old,) = await s.grants_for("alice")
        assert old.rights == {"forward", "shell"} and old.ports == ()  # forward allows no port
        gid = await s.add_grant(user="alice", target="db*", rights="forward", ports="5432,80")
        new = await s.get_grant(gid)
        assert new.ports == ((80, 80), (5432, 5432))
        assert "ports 80,5432" in new.describe()
    finally:
        await s.close()


async def test_0003_gives_existing_grants_any_engine(db_url: str) -> None:
    s = Store.from_url(db_url)
    try:
        await _old_grant(s, "0002", "shell")
        await s.upgrade()
        (old,) = await s.grants_for("alice")
        assert old.engine == "*"
        gid = await s.add_grant(user="alice", target="db*", rights="shell", engine="host[12]")
        assert (await s.get_grant(gid)).engine == "host[12]"
    finally:
        await s.close()
