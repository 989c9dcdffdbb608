"""What every command shares: settings, the store, and who runs the command (for the audit
records of :mod:`gateway.admin`)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer

from gateway.admin.common import Actor
from gateway.config import Settings, load_settings
from gateway.datadir import prepare_data_dir
from gateway.store import Store

T = TypeVar("T")

# Gateways re-check every open connection against the database each second (and every new
# session at once): what is revoked here ends there without a restart.
LIVE_NOTE = "open connections that depended on it are ended by the gateway within seconds"


# Settings -----------------------------------------------------------------------------------


@dataclass
class CliState:
    """Global options of the root command, kept on the click context."""

    config_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        if overrides:
            return load_settings(self.config_file, **overrides)
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    return state(ctx).settings(**overrides)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# Store --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_store(cfg: Settings, *, ensure_schema: bool = True) -> AsyncIterator[Store]:
    """The store with a current schema (with ``ensure_schema=False``: as it is, for
    ``sshgw db``).

    An empty or older SQLite database is upgraded on the spot; PostgreSQL must be upgraded
    explicitly with ``sshgw db upgrade``.
    """
    prepare_data_dir(cfg, create=False)
    store = Store.from_url(cfg.effective_database_url)
    try:
        if ensure_schema:
            await store.ensure_schema()
        yield store
    finally:
        await store.close()


def actor() -> Actor:
    """Who runs this command, for audit records: their login name on this host."""
    try:
        return Actor(getpass.getuser())
    except (OSError, KeyError):
        return Actor(f"uid:{os.getuid()}")


def with_store(ctx: typer.Context, work: Callable[[Store], Awaitable[T]]) -> T:
    """One command's database work: ``work`` on the store (current schema); its result."""
    cfg = settings(ctx)

    async def go() -> T:
        async with open_store(cfg) as store:
            return await work(store)

    return run(go())
