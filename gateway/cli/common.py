"""What every command shares: settings, the store, dates, tables, JSON and audit records."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import sys
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
)
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer

from gateway.cli.show import fmt_time
from gateway.config import Settings, load_settings
from gateway.datadir import prepare_data_dir
from gateway.errors import InvalidInput
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


# Dates --------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\+(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DATE_HELP = "YYYY-MM-DD (00:00 UTC), an ISO date-time (UTC unless an offset is given), or +30d/+12h"


def parse_when(text: str, *, now: datetime | None = None, future: bool = True) -> datetime:
    """``YYYY-MM-DD``, an ISO 8601 date-time, or relative ``+N[smhdw]`` -> aware UTC datetime."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    when: datetime
    m = _RELATIVE.fullmatch(raw)
    if m:
        when = now + timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    else:
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                d = date.fromisoformat(raw)
                when = datetime(d.year, d.month, d.day, tzinfo=UTC)
            else:
                when = datetime.fromisoformat(raw.replace(" ", "T", 1))
                when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
        except ValueError:
            raise InvalidInput(f"invalid date {text!r}: use {DATE_HELP}") from None
    when = when.astimezone(UTC)
    if future and when <= now:
        raise InvalidInput(f"date {text!r} ({fmt_time(when)}) is in the past")
    return when


def read_password(prompt_user: str) -> str:
    """A password from standard input: one line from a pipe, or asked twice on a terminal."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {prompt_user}: ")
        second = getpass.getpass("Again: ")
        if first != second:
            raise InvalidInput("the passwords do not match")
        password = first
    else:
        password = sys.stdin.readline()
        password = password.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InvalidInput("empty password on standard input")
    return password


_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-", "---- BEGIN SSH2 PUBLIC KEY", "-----BEGIN")


def read_key_arg(value: str) -> str:
    """FILE_OR_TEXT: ``-`` (standard input), a file path, or the key text itself."""
    if value == "-":
        return sys.stdin.read(1 << 16)
    stripped = value.strip()
    if stripped.startswith(_KEY_PREFIXES):
        return value
    path = Path(value).expanduser()
    try:
        if path.is_file():
            if path.stat().st_size > 1 << 16:
                raise InvalidInput(f"{value}: too large for a public key file")
            return path.read_text(errors="replace")
        if path.exists():
            raise InvalidInput(f"{value}: not a regular file")
    except OSError as exc:
        raise InvalidInput(f"cannot read {value}: {exc.strerror or exc}") from None
    raise InvalidInput(f"{value}: no such file, and not a public key ('ssh-ed25519 AAAA...')")
