"""What every command shares: settings, the store, dates, tables, JSON and audit records."""

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
async def open_store(cfg: Settings) -> AsyncIterator[Store]:
    """The store with a current schema.

    An empty or older SQLite database is upgraded on the spot; PostgreSQL must be upgraded
    explicitly with ``sshgw db upgrade``.
    """
    prepare_data_dir(cfg, create=False)
    store = Store.from_url(cfg.effective_database_url)
    try:
        await store.ensure_schema()
        yield store
    finally:
        await store.close()


def actor() -> str:
    """Who runs this command, for audit records."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid:{os.getuid()}"


def with_store(ctx: typer.Context, work: Callable[[Store], Awaitable[T]]) -> T:
    """One command's database work: ``work`` on the store (current schema); its result."""
    cfg = settings(ctx)

    async def go() -> T:
        async with open_store(cfg) as store:
            return await work(store)

    return run(go())


def change(
    ctx: typer.Context, work: Callable[[Store], Awaitable[object]], action: str, **detail: Any
) -> None:
    """An administrative change: ``work`` on the store, then its audit event (``action``)."""

    async def go(store: Store) -> None:
        await work(store)
        await audit(store, action, **detail)

    with_store(ctx, go)


async def audit(store: Store, action: str, **detail: Any) -> None:
    """Record one administrative change (never pass a password here)."""
    cols: dict[str, Any] = {}
    if isinstance(detail.get("user"), str):
        cols["user_name"] = detail["user"]
    await store.add_audit_event("admin", actor=actor(), detail={"action": action, **detail}, **cols)
