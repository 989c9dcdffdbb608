"""The database under every repository: engine, error mapping, schema and lifecycle.

Every database failure leaves the store as :class:`~gateway.errors.StoreUnavailable` with one
line that never contains the URL's password; bad names and values become
:class:`~gateway.errors.NotFound`, :class:`~gateway.errors.Conflict` or
:class:`~gateway.errors.InvalidInput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import gateway.migrations
from gateway.errors import Conflict, GatewayError, InvalidInput, NotFound, StoreUnavailable
from gateway.routing import valid_user_name
from gateway.store.models import Group, User
from gateway.store.urls import sqlite_file

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

#: The Alembic migrations, shipped inside the package (``gateway/migrations``).
MIGRATIONS_DIR = Path(gateway.migrations.__file__).resolve().parent

# Arbitrary constant for the PostgreSQL advisory lock that serializes concurrent upgrades.
_UPGRADE_LOCK_ID = 0x5353_4757  # "SSGW"

SchemaState = Literal["current", "empty", "behind", "unknown"]

# Helpers ------------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """Pick the async driver for plain ``sqlite://`` and ``postgresql://`` URLs."""
    for plain, full in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return full + url[len(plain) :]
    return url


def safe_url(url: URL | str) -> str:
    """The URL with its password masked, for messages."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:
        return "<unparsable database URL>"
    return parsed.render_as_string(hide_password=True)


def _locked(reason: str) -> bool:
    """SQLite refused a lock (another connection holds it)."""
    return "database is locked" in reason


def _reason(exc: BaseException) -> str:
    """A short, secret-free explanation of a database failure."""
    orig: BaseException = exc
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    cause = orig.__cause__ or orig.__context__
    for candidate in (orig, cause):
        if isinstance(candidate, ConnectionRefusedError):
            return "connection refused"
        if isinstance(candidate, TimeoutError):
            return "timed out"
        if isinstance(candidate, socket.gaierror):
            return "cannot resolve the database host"
    text = str(orig).strip() or orig.__class__.__name__
    if "Connect call failed" in text:  # asyncpg, also inside "Multiple exceptions: ..."
        return "connection refused"
    line = text.splitlines()[0]
    if "[SQL:" in line:
        line = line.split("[SQL:", 1)[0].strip()
    return line[:300]


def _schema_missing(text: str) -> bool:
    low = text.lower()
    return (
        "no such table" in low
        or ("relation" in low and "does not exist" in low)
        or "undefinedtable" in low
        or "no such column" in low
        or ("column" in low and "does not exist" in low)
    )


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not valid_user_name(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '.', '-', '@' "
            "(up to 64, not starting with '.', '-' or '@')"
        )
    return name


class Database:
    """One async engine and what every repository uses: the error mapping (:meth:`_guard`),
    reads (:meth:`_read`), transactions (:meth:`_tx`), the schema and the lifecycle."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            engine, expire_on_commit=False
        )
        # Single statements need no transaction: on PostgreSQL this saves the BEGIN and
        # COMMIT round trips on the authentication hot path.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._safe_url = safe_url(engine.url)
        self._password = engine.url.password if isinstance(engine.url.password, str) else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return self._safe_url

    @classmethod
    def from_url(cls, url: str) -> Self:
        url = normalize_url(url)
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError:
            raise InvalidInput(
                "invalid database URL (expected sqlite+aiosqlite:///PATH or "
                "postgresql+asyncpg://USER:PASSWORD@HOST/DB)"
            ) from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise InvalidInput(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            db_file = sqlite_file(parsed)
            if db_file is not None:
                try:
                    db_file.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreUnavailable(
                        f"cannot create the directory for the database {safe_url(parsed)}: "
                        f"{exc.strerror or exc}"
                    ) from None
        else:
            kwargs.update(pool_recycle=1800, connect_args={"timeout": 10})
        try:
            engine = create_async_engine(parsed, **kwargs)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise InvalidInput(f"cannot use database URL {safe_url(parsed)}: {exc}") from None
        if backend == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine)

    # Error mapping ---------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = self._scrub(_reason(exc))
        if _schema_missing(reason):
            return StoreUnavailable(
                f"the database {self._safe_url} has no sshgw schema or an old one; "
                "run `sshgw db upgrade`"
            )
        if _locked(reason):
            return StoreUnavailable(f"the database {self._safe_url} is busy (locked); try again")
        return StoreUnavailable(f"database unavailable ({self._safe_url}): {reason}")

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except GatewayError:
            raise
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"conflicting change: {self._scrub(_reason(exc))}") from None
        except (sa.exc.SQLAlchemyError, OSError, TimeoutError, ConnectionError) as exc:
            raise self._unavailable(exc) from None
        except Exception as exc:
            # asyncpg raises its own exceptions for some connect-time failures.
            if exc.__class__.__module__.startswith("asyncpg"):
                raise self._unavailable(exc) from None
            raise

    async def _read(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run one read on an autocommit connection; retry once on a dropped connection."""
        async with self._guard():
            for attempt in (1, 2):
                try:
                    async with self._autocommit.connect() as conn:
                        return await fn(conn)
                except sa.exc.DBAPIError as exc:
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
            raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        async with self._guard(), self.sessionmaker() as session, session.begin():
            yield session

    # Lifecycle -------------------------------------------------------------------------

    def _alembic_config(self) -> Config:
        from alembic.config import Config  # imported when needed: keeps the CLI quick

        if not (MIGRATIONS_DIR / "env.py").is_file():
            raise StoreUnavailable(f"database migrations not found in {MIGRATIONS_DIR}")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        cfg.set_main_option("path_separator", "os")
        return cfg

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``)."""
        from alembic import command

        cfg = self._alembic_config()

        def run(sync_conn: Connection) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        # SQLite can refuse a lock without waiting (e.g. while another connection switches the
        # file to WAL); concurrent first starts then simply try again.
        attempts = 20 if self.dialect == "sqlite" else 1
        async with self._guard():
            for attempt in range(attempts):
                try:
                    async with self.engine.connect() as conn:
                        await self._upgrade_locked(conn, run)
                    return
                except sa.exc.OperationalError as exc:
                    if attempt + 1 == attempts or not _locked(_reason(exc)):
                        raise
                await asyncio.sleep(0.05 * (attempt + 1))

    async def _upgrade_locked(
        self, conn: AsyncConnection, run: Callable[[Connection], None]
    ) -> None:
        if self.dialect == "sqlite":
            # Take the write lock first so concurrent upgrades wait instead of colliding.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await conn.begin()
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_UPGRADE_LOCK_ID)))
        try:
            await conn.run_sync(run)
        except Exception as exc:
            if exc.__class__.__module__.startswith("alembic"):
                raise StoreUnavailable(
                    f"cannot upgrade the database {self._safe_url}: {exc} "
                    "(was it made by a newer sshgw?)"
                ) from None
            raise
        await conn.commit()

    async def schema_state(self) -> SchemaState:
        """``current``, ``empty`` (no schema yet), ``behind`` (upgrade needed) or ``unknown``."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic_config())
        heads = set(script.get_heads())

        def current(sync_conn: Connection) -> set[str]:
            return set(MigrationContext.configure(sync_conn).get_current_heads())

        async def read(conn: AsyncConnection) -> set[str]:
            return await conn.run_sync(current)

        have = await self._read(read)
        if have == heads:
            return "current"
        if not have:
            return "empty"
        known = {rev.revision for rev in script.walk_revisions()}
        return "behind" if have <= known else "unknown"

    async def is_current(self) -> bool:
        return await self.schema_state() == "current"

    async def ensure_schema(self) -> None:
        """Make sure the schema is current before the store is used (the gateway's start and
        every CLI command): an empty or older SQLite database is upgraded on the spot;
        PostgreSQL must be upgraded explicitly with ``sshgw db upgrade``."""
        schema = await self.schema_state()
        if schema == "current":
            return
        if schema == "unknown":
            raise StoreUnavailable(
                f"the database {self._safe_url} has a schema revision this sshgw does not know "
                "(made by a newer version?)"
            )
        if self.dialect == "sqlite":
            await self.upgrade()
            return
        what = "has no sshgw schema yet" if schema == "empty" else "has an older sshgw schema"
        raise StoreUnavailable(
            f"the database {self._safe_url} {what}; run `sshgw db upgrade` first"
        )

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async def q(conn: AsyncConnection) -> None:
            await conn.execute(sa.text("SELECT 1"))

        await self._read(q)

    # Ids by name, for the repositories -------------------------------------------------

    async def _user_id(self, session: AsyncSession, name: str) -> int:
        uid = await session.scalar(sa.select(User.id).where(User.name == name))
        if uid is None:
            raise NotFound(f"no such user: {name}")
        return int(uid)

    async def _group_id(self, session: AsyncSession, name: str) -> int:
        gid = await session.scalar(sa.select(Group.id).where(Group.name == name))
        if gid is None:
            raise NotFound(f"no such group: {name}")
        return int(gid)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
