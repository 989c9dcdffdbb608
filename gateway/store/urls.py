"""What a database URL says about where the database lives (the store's knowledge of URLs)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError


def sqlite_file(parsed: URL) -> Path | None:
    """The database file of a parsed SQLite URL; None for other databases and in-memory SQLite."""
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases, in-memory SQLite and text
    that is no URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    return sqlite_file(parsed)
