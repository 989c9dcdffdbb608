"""The gateway's database: users, keys, groups, grants and audit events.

One :class:`Store` per process, over an async SQLAlchemy engine (aiosqlite or asyncpg).
Every database failure leaves this module as :class:`~gateway.errors.StoreUnavailable` with one
line that never contains the URL's password; bad names and values become
:class:`~gateway.errors.NotFound`, :class:`~gateway.errors.Conflict` or
:class:`~gateway.errors.InvalidInput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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

import gateway
from gateway.errors import Conflict, GatewayError, InvalidInput, NotFound, StoreUnavailable
from gateway.policy import ANY_LOGIN, Grant, normalize_prefix, parse_rights
from gateway.routing import LOGIN_RE, valid_user_name
from gateway.store.keys import parse_public_key
from gateway.store.models import (
    AuditEvent,
    GrantRow,
    Group,
    GroupMember,
    PublicKey,
    User,
    UTCDateTime,
    as_utc,
    utcnow,
)

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The repository's ``alembic/`` directory, next to the ``gateway`` package.
ALEMBIC_DIR = Path(gateway.__file__).resolve().parent.parent / "alembic"

# Arbitrary constant for the PostgreSQL advisory lock that serializes concurrent upgrades.
_UPGRADE_LOCK_ID = 0x5353_4757  # "SSGW"

SchemaState = Literal["current", "empty", "behind", "unknown"]

AUDIT_COLUMNS = frozenset({"ts", "user_name", "container", "remote_addr", "session_id"})


# Public value types -------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthKey:
    fingerprint: str
    public_key: str  # "ssh-ed25519 AAAA... comment"
    expires_at: datetime | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


@dataclass(frozen=True)
class AuthUser:
    """What authentication needs to know about one user, read in one query."""

    name: str
    disabled: bool
    password_hash: str | None
    keys: tuple[AuthKey, ...]
    groups: frozenset[str]

    def key(self, fingerprint: str) -> AuthKey | None:
        for k in self.keys:
            if k.fingerprint == fingerprint:
                return k
        return None


@dataclass(frozen=True)
class KeyInfo:
    user: str
    fingerprint: str
    algorithm: str
    public_key: str
    comment: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class UserInfo:
    name: str
    display: str | None
    disabled: bool
    has_password: bool
    created_at: datetime
    keys: tuple[KeyInfo, ...]
    groups: tuple[str, ...]


@dataclass(frozen=True)
class GroupInfo:
    name: str
    members: tuple[str, ...]
    created_at: datetime


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
    if "Multiple exceptions" in text and "Connect call failed" in text:
        return "connection refused"
    if "Connect call failed" in text:
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


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not valid_user_name(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '.', '-', '@' "
            "(up to 64, not starting with '.', '-' or '@')"
        )
    return name


def _split(text: str | None, sep: str) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(p for p in text.split(sep) if p)


def _grant_from_row(row: Any) -> Grant:
    labels = row.labels or {}
    if isinstance(labels, str):  # some drivers hand JSON back as text
        labels = json.loads(labels)
    return Grant(
        id=int(row.id),
        target=row.target,
        rights=frozenset(_split(row.rights, ",")),
        user=row.user_name,
        group=row.group_name,
        labels=tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())),
        logins=_split(row.logins, ","),
        paths=_split(row.paths, "\n"),
        expires_at=row.expires_at,
        record=bool(row.record),
    )


def _grant_select() -> sa.Select[Any]:
    u = User.__table__.alias("gu")
    g = Group.__table__.alias("gg")
    gr = GrantRow.__table__
    return (
        sa.select(
            gr.c.id,
            gr.c.target,
            gr.c.labels,
            gr.c.rights,
            gr.c.logins,
            gr.c.paths,
            gr.c.expires_at,
            gr.c.record,
            u.c.name.label("user_name"),
            g.c.name.label("group_name"),
        )
        .select_from(gr.outerjoin(u, gr.c.user_id == u.c.id).outerjoin(g, gr.c.group_id == g.c.id))
        .order_by(gr.c.id)
    )


def _auth_query(name: str) -> sa.CompoundSelect[Any]:
    """User row, key rows and group rows of one user, in one statement (a UNION ALL)."""
    text_null = sa.cast(sa.null(), sa.Text)
    ts_null = sa.cast(sa.null(), UTCDateTime())
    bool_null = sa.cast(sa.null(), sa.Boolean)
    user_row = sa.select(
        sa.literal("u", sa.Text).label("kind"),
        sa.cast(User.password_hash, sa.Text).label("a"),
        text_null.label("b"),
        ts_null.label("c"),
        sa.cast(User.disabled, sa.Boolean).label("d"),
    ).where(User.name == name)
    key_rows = (
        sa.select(
            sa.literal("k", sa.Text),
            sa.cast(PublicKey.key, sa.Text),
            sa.cast(PublicKey.fingerprint, sa.Text),
            PublicKey.expires_at,
            bool_null,
        )
        .join(User, PublicKey.user_id == User.id)
        .where(User.name == name)
    )
    group_rows = (
        sa.select(
            sa.literal("g", sa.Text),
            sa.cast(Group.name, sa.Text),
            text_null,
            ts_null,
            bool_null,
        )
        .select_from(GroupMember)
        .join(Group, GroupMember.group_id == Group.id)
        .join(User, GroupMember.user_id == User.id)
        .where(User.name == name)
    )
    return sa.union_all(user_row, key_rows, group_rows)


# The store ----------------------------------------------------------------------------------


class Store:
    """Async repository over the gateway's database."""

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
    def from_url(cls, url: str) -> Store:
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
            db = parsed.database or ""
            if db and db != ":memory:" and not db.startswith("file:"):
                try:
                    Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
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

        if not (ALEMBIC_DIR / "env.py").is_file():
            raise StoreUnavailable(f"database migrations not found in {ALEMBIC_DIR}")
        cfg = Config()
        cfg.set_main_option("script_location", str(ALEMBIC_DIR).replace("%", "%%"))
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

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async def q(conn: AsyncConnection) -> None:
            await conn.execute(sa.text("SELECT 1"))

        await self._read(q)

    # Authentication and authorization (hot path) ---------------------------------------

    async def auth_user(self, name: str) -> AuthUser | None:
        """The user with their keys and groups, or None; one round trip."""
        if not valid_user_name(name):
            return None

        async def q(conn: AsyncConnection) -> list[Any]:
            return list((await conn.execute(_auth_query(name))).all())

        rows = await self._read(q)
        user = next((r for r in rows if r.kind == "u"), None)
        if user is None:
            return None
        keys = tuple(
            AuthKey(fingerprint=r.b, public_key=r.a, expires_at=r.c) for r in rows if r.kind == "k"
        )
        groups = frozenset(r.a for r in rows if r.kind == "g")
        return AuthUser(
            name=name,
            disabled=bool(user.d),
            password_hash=user.a,
            keys=tuple(sorted(keys, key=lambda k: k.fingerprint)),
            groups=groups,
        )

    async def auth_users(self, names: Iterable[str]) -> dict[str, AuthUser]:
        """:meth:`auth_user` for many users at once (the gateway's revocation poller).

        Users that do not exist (any more) are missing from the result.
        """
        wanted = sorted({n for n in names if valid_user_name(n)})
        if not wanted:
            return {}

        async def q(conn: AsyncConnection) -> tuple[list[Any], list[Any], list[Any]]:
            users = await conn.execute(
                sa.select(User.name, User.disabled, User.password_hash).where(User.name.in_(wanted))
            )
            keys = await conn.execute(
                sa.select(User.name, PublicKey.key, PublicKey.fingerprint, PublicKey.expires_at)
                .join(User, PublicKey.user_id == User.id)
                .where(User.name.in_(wanted))
            )
            groups = await conn.execute(
                sa.select(User.name, Group.name)
                .select_from(GroupMember)
                .join(Group, GroupMember.group_id == Group.id)
                .join(User, GroupMember.user_id == User.id)
                .where(User.name.in_(wanted))
            )
            return list(users.all()), list(keys.all()), list(groups.all())

        users, keys, groups = await self._read(q)
        key_map: dict[str, list[AuthKey]] = {}
        for uname, text, fp, expires in keys:
            key_map.setdefault(uname, []).append(AuthKey(fp, text, expires))
        group_map: dict[str, set[str]] = {}
        for uname, gname in groups:
            group_map.setdefault(uname, set()).add(gname)
        return {
            uname: AuthUser(
                name=uname,
                disabled=bool(disabled),
                password_hash=password_hash,
                keys=tuple(sorted(key_map.get(uname, ()), key=lambda k: k.fingerprint)),
                groups=frozenset(group_map.get(uname, ())),
            )
            for uname, disabled, password_hash in users
        }

    async def grants_for(self, user: str) -> list[Grant]:
        """Grants of the user and of the user's groups (expired ones included), by id."""
        member_groups = (
            sa.select(GroupMember.group_id)
            .join(User, GroupMember.user_id == User.id)
            .where(User.name == user)
        )
        gr = GrantRow.__table__
        u_ids = sa.select(User.id).where(User.name == user).scalar_subquery()
        query = _grant_select().where(
            sa.or_(gr.c.user_id == u_ids, gr.c.group_id.in_(member_groups))
        )

        async def q(conn: AsyncConnection) -> list[Grant]:
            return [_grant_from_row(r) for r in (await conn.execute(query)).all()]

        return await self._read(q)

    async def all_grants(self) -> list[Grant]:
        async def q(conn: AsyncConnection) -> list[Grant]:
            return [_grant_from_row(r) for r in (await conn.execute(_grant_select())).all()]

        return await self._read(q)

    async def key_used(self, fingerprint: str) -> None:
        async with self._guard(), self._autocommit.connect() as conn:
            await conn.execute(
                sa.update(PublicKey)
                .where(PublicKey.fingerprint == fingerprint)
                .values(last_used_at=utcnow())
            )

    async def add_audit_event(
        self, kind: str, *, actor: str | None, detail: Mapping[str, Any], **cols: Any
    ) -> None:
        """Record one audit event. ``cols``: ts, user_name, container, remote_addr, session_id."""
        unknown = set(cols) - AUDIT_COLUMNS
        if unknown:
            raise TypeError(f"unknown audit event column(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            "kind": kind,
            "actor": actor,
            "detail": json.loads(json.dumps(dict(detail), default=str)),
            "ts": utcnow(),
            **cols,
        }
        async with self._guard(), self._autocommit.connect() as conn:
            await conn.execute(sa.insert(AuditEvent).values(**values))

    # Users -----------------------------------------------------------------------------

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

    async def add_user(
        self, name: str, password_hash: str | None = None, display: str | None = None
    ) -> None:
        _check_name("user", name)
        if display is not None and not display.isprintable():
            raise InvalidInput("display name must be printable text")
        async with self._tx() as s:
            if await s.scalar(sa.select(User.id).where(User.name == name)) is not None:
                raise Conflict(f"user {name} already exists")
            s.add(User(name=name, password_hash=password_hash, display=display or None))

    async def list_users(self) -> list[UserInfo]:
        return await self._users(None)

    async def get_user(self, name: str) -> UserInfo:
        users = await self._users(name)
        if not users:
            raise NotFound(f"no such user: {name}")
        return users[0]

    async def _users(self, name: str | None) -> list[UserInfo]:
        async with self._guard(), self.sessionmaker() as s:
            uq = sa.select(User).order_by(User.name)
            kq = (
                sa.select(PublicKey, User.name)
                .join(User, PublicKey.user_id == User.id)
                .order_by(PublicKey.created_at, PublicKey.id)
            )
            gq = (
                sa.select(User.name, Group.name)
                .select_from(GroupMember)
                .join(User, GroupMember.user_id == User.id)
                .join(Group, GroupMember.group_id == Group.id)
                .order_by(Group.name)
            )
            if name is not None:
                uq = uq.where(User.name == name)
                kq = kq.where(User.name == name)
                gq = gq.where(User.name == name)
            users = list((await s.scalars(uq)).all())
            keys: dict[str, list[KeyInfo]] = {}
            for key, uname in (await s.execute(kq)).all():
                keys.setdefault(uname, []).append(_key_info(key, uname))
            groups: dict[str, list[str]] = {}
            for uname, gname in (await s.execute(gq)).all():
                groups.setdefault(uname, []).append(gname)
        return [
            UserInfo(
                name=u.name,
                display=u.display,
                disabled=u.disabled,
                has_password=bool(u.password_hash),
                created_at=u.created_at,
                keys=tuple(keys.get(u.name, ())),
                groups=tuple(groups.get(u.name, ())),
            )
            for u in users
        ]

    async def set_disabled(self, name: str, disabled: bool) -> None:
        async with self._tx() as s:
            uid = await self._user_id(s, name)
            await s.execute(sa.update(User).where(User.id == uid).values(disabled=disabled))

    async def set_password(self, name: str, password_hash: str | None) -> None:
        async with self._tx() as s:
            uid = await self._user_id(s, name)
            await s.execute(
                sa.update(User).where(User.id == uid).values(password_hash=password_hash)
            )

    async def remove_user(self, name: str) -> None:
        """Remove the user with their keys, memberships and grants."""
        async with self._tx() as s:
            uid = await self._user_id(s, name)
            await s.execute(sa.delete(User).where(User.id == uid))

    # Keys ------------------------------------------------------------------------------

    async def add_key(
        self,
        user: str,
        public_key_text: str,
        comment: str | None = None,
        expires_at: datetime | None = None,
    ) -> str:
        """Add a public key to ``user``; returns its SHA256 fingerprint."""
        parsed = parse_public_key(public_key_text, comment)
        async with self._tx() as s:
            uid = await self._user_id(s, user)
            owner = await s.scalar(
                sa.select(User.name)
                .join(PublicKey, PublicKey.user_id == User.id)
                .where(PublicKey.fingerprint == parsed.fingerprint)
            )
            if owner is not None:
                raise Conflict(f"key {parsed.fingerprint} already belongs to user {owner}")
            s.add(
                PublicKey(
                    user_id=uid,
                    key=parsed.public_key,
                    fingerprint=parsed.fingerprint,
                    comment=parsed.comment,
                    expires_at=as_utc(expires_at) if expires_at is not None else None,
                )
            )
        return parsed.fingerprint

    async def list_keys(self, user: str | None = None) -> list[KeyInfo]:
        async with self._guard(), self.sessionmaker() as s:
            q = (
                sa.select(PublicKey, User.name)
                .join(User, PublicKey.user_id == User.id)
                .order_by(User.name, PublicKey.created_at, PublicKey.id)
            )
            if user is not None:
                await self._user_id(s, user)
                q = q.where(User.name == user)
            return [_key_info(k, uname) for k, uname in (await s.execute(q)).all()]

    async def remove_key(self, fingerprint: str) -> str:
        """Remove a key by fingerprint (``SHA256:...``; the prefix may be left out).

        Returns the name of the user who had it.
        """
        fp = fingerprint.strip()
        if not fp.startswith("SHA256:"):
            fp = "SHA256:" + fp
        async with self._tx() as s:
            row = (
                await s.execute(
                    sa.select(PublicKey.id, User.name)
                    .join(User, PublicKey.user_id == User.id)
                    .where(PublicKey.fingerprint == fp)
                )
            ).first()
            if row is None:
                raise NotFound(f"no such key: {fp}")
            await s.execute(sa.delete(PublicKey).where(PublicKey.id == row[0]))
            return str(row[1])

    # Groups ----------------------------------------------------------------------------

    async def add_group(self, name: str) -> None:
        _check_name("group", name)
        async with self._tx() as s:
            if await s.scalar(sa.select(Group.id).where(Group.name == name)) is not None:
                raise Conflict(f"group {name} already exists")
            s.add(Group(name=name))

    async def list_groups(self) -> list[GroupInfo]:
        async with self._guard(), self.sessionmaker() as s:
            groups = list((await s.scalars(sa.select(Group).order_by(Group.name))).all())
            members: dict[int, list[str]] = {}
            rows = await s.execute(
                sa.select(GroupMember.group_id, User.name)
                .join(User, GroupMember.user_id == User.id)
                .order_by(User.name)
            )
            for gid, uname in rows.all():
                members.setdefault(gid, []).append(uname)
        return [GroupInfo(g.name, tuple(members.get(g.id, ())), g.created_at) for g in groups]

    async def remove_group(self, name: str) -> None:
        """Remove the group with its memberships and grants."""
        async with self._tx() as s:
            gid = await self._group_id(s, name)
            await s.execute(sa.delete(Group).where(Group.id == gid))

    async def add_member(self, group: str, user: str) -> None:
        async with self._tx() as s:
            gid = await self._group_id(s, group)
            uid = await self._user_id(s, user)
            exists = await s.scalar(
                sa.select(sa.func.count())
                .select_from(GroupMember)
                .where(GroupMember.group_id == gid, GroupMember.user_id == uid)
            )
            if exists:
                raise Conflict(f"user {user} is already a member of group {group}")
            s.add(GroupMember(group_id=gid, user_id=uid))

    async def remove_member(self, group: str, user: str) -> None:
        async with self._tx() as s:
            gid = await self._group_id(s, group)
            uid = await self._user_id(s, user)
            result = await s.execute(
                sa.delete(GroupMember).where(
                    GroupMember.group_id == gid, GroupMember.user_id == uid
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"user {user} is not a member of group {group}")

    # Grants ----------------------------------------------------------------------------

    async def add_grant(
        self,
        *,
        user: str | None = None,
        group: str | None = None,
        target: str,
        labels: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        rights: str | Iterable[str],
        logins: Sequence[str] = (),
        paths: Sequence[str] = (),
        expires_at: datetime | None = None,
        record: bool = True,
    ) -> int:
        """Add a grant for exactly one of ``user`` / ``group``; returns its id."""
        if (user is None) == (group is None):
            raise InvalidInput("a grant needs exactly one subject: a user or a group")
        target = _check_target(target)
        label_map = _check_labels(labels)
        rights_text = _check_rights(rights)
        logins_text = _check_logins(logins)
        paths_text = _check_paths(paths)
        async with self._tx() as s:
            uid = await self._user_id(s, user) if user is not None else None
            gid = await self._group_id(s, group) if group is not None else None
            row = GrantRow(
                user_id=uid,
                group_id=gid,
                target=target,
                labels=label_map,
                rights=rights_text,
                logins=logins_text,
                paths=paths_text,
                expires_at=as_utc(expires_at) if expires_at is not None else None,
                record=record,
            )
            s.add(row)
            await s.flush()
            return int(row.id)

    async def get_grant(self, grant_id: int) -> Grant:
        async def q(conn: AsyncConnection) -> list[Grant]:
            rows = await conn.execute(_grant_select().where(GrantRow.__table__.c.id == grant_id))
            return [_grant_from_row(r) for r in rows.all()]

        found = await self._read(q)
        if not found:
            raise NotFound(f"no such grant: {grant_id}")
        return found[0]

    async def list_grants(self) -> list[Grant]:
        return await self.all_grants()

    async def remove_grant(self, grant_id: int) -> None:
        async with self._tx() as s:
            result = await s.execute(sa.delete(GrantRow).where(GrantRow.id == grant_id))
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"no such grant: {grant_id}")


def _key_info(key: PublicKey, user: str) -> KeyInfo:
    return KeyInfo(
        user=user,
        fingerprint=key.fingerprint,
        algorithm=key.key.split(None, 1)[0],
        public_key=key.key,
        comment=key.comment,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        created_at=key.created_at,
    )


def _check_target(target: str) -> str:
    target = target.strip() if isinstance(target, str) else ""
    if not target:
        raise InvalidInput("a grant needs a target (a container name glob such as 'web*' or '*')")
    if not target.isprintable() or any(c.isspace() for c in target) or "/" in target:
        raise InvalidInput(f"invalid target glob {target!r}")
    return target


def _check_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not key or not key.isprintable() or "=" in key:
            raise InvalidInput(f"invalid label key {key!r}")
        if not isinstance(value, str) or not value.isprintable():
            raise InvalidInput(f"invalid label value for {key!r}")
        if key in out and out[key] != value:
            raise InvalidInput(f"label {key!r} given twice")
        out[key] = value
    return out


def _check_rights(rights: str | Iterable[str]) -> str:
    text = rights if isinstance(rights, str) else ",".join(rights)
    try:
        parsed = parse_rights(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return ",".join(sorted(parsed))


def _check_logins(logins: Sequence[str]) -> str:
    out: list[str] = []
    for login in logins:
        login = login.strip()
        if not login:
            continue
        if login != ANY_LOGIN and not LOGIN_RE.fullmatch(login):
            raise InvalidInput(f"invalid login {login!r} (a user name, uid[:gid], or '*')")
        if login not in out:
            out.append(login)
    return ",".join(out)


def _check_paths(paths: Sequence[str]) -> str:
    out: list[str] = []
    for path in paths:
        if not path.startswith("/"):
            raise InvalidInput(f"path {path!r} must be absolute (start with '/')")
        if "\n" in path or "\0" in path or not path.isprintable():
            raise InvalidInput(f"invalid path {path!r}")
        norm = normalize_prefix(path)
        if norm not in out:
            out.append(norm)
    return "\n".join(out)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
