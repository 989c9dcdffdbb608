"""Alembic environment for sshgw.

The gateway runs migrations programmatically (``sshgw db upgrade``, or on start for SQLite):
it hands an open connection in ``config.attributes["connection"]``. Run by hand
(``alembic -c alembic.ini upgrade head`` with a ``sqlalchemy.url``), a connection is made from
the configured URL, or from the gateway's settings when none is configured.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from gateway.config import load_settings
    from gateway.datadir import prepare_data_dir

    settings = load_settings()
    # As the CLI does: the SQLite file (and its directory) is made private before it is opened.
    prepare_data_dir(settings, create=False)
    return settings.effective_database_url


async def _run_with_new_engine() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
    else:
        asyncio.run(_run_with_new_engine())


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
