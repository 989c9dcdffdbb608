"""Tables of the gateway's database, as SQLAlchemy ORM models.

Alembic migrations (``gateway/migrations/``, shipped in the package) are the only way the schema
is made or changed; these models mirror the newest migration and are used to query it. A test
compares the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware datetimes, stored as UTC on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and UTC is attached again when they are read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text from a server default
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return as_utc(value)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display: Mapped[str | None] = mapped_column(sa.Text)
    password_hash: Mapped[str | None] = mapped_column(sa.Text)
    disabled: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sa.func.current_timestamp()
    )


class PublicKey(Base):
    __tablename__ = "public_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(sa.Text)
    fingerprint: Mapped[str] = mapped_column(sa.String(128), unique=True)
    comment: Mapped[str | None] = mapped_column(sa.Text)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sa.func.current_timestamp()
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sa.func.current_timestamp()
    )


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(
        sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class GrantRow(Base):
    __tablename__ = "grants"
    __table_args__ = (
        sa.CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    group_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("groups.id", ondelete="CASCADE"), index=True
    )
    # Container name glob.
    target: Mapped[str] = mapped_column(sa.Text)
    # {"label": "value glob", ...}
    labels: Mapped[dict[str, str]] = mapped_column(sa.JSON, default=dict)
    # Comma-separated rights, so new rights need no migration.
    rights: Mapped[str] = mapped_column(sa.Text)
    # Comma-separated logins; the first is the default; "*" allows any (the image's user first).
    logins: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    # Newline-separated absolute path prefixes for file transfer; empty means unrestricted.
    paths: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    expires_at: Mapped[datetime | None]
    record: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # Comma-separated ports and ranges a ``forward`` right allows ("80,8000-8100"); empty: none.
    ports: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    # Engine name glob the grant applies to ("*": any engine, the local default included).
    engine: Mapped[str] = mapped_column(sa.Text, default="*", server_default="*")
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sa.func.current_timestamp()
    )


class EngineRow(Base):
    """A Docker engine the gateway serves (``sshgw engine add``); none: the local default."""

    __tablename__ = "engines"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), unique=True)
    url: Mapped[str] = mapped_column(sa.Text)
    # Paths of PEM files on the gateway host (tcp:// with TLS); None: not used.
    tls_ca: Mapped[str | None] = mapped_column(sa.Text)
    tls_cert: Mapped[str | None] = mapped_column(sa.Text)
    tls_key: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sa.func.current_timestamp()
    )


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    ts: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(sa.String(64), index=True)
    actor: Mapped[str | None] = mapped_column(sa.Text)
    user_name: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    container: Mapped[str | None] = mapped_column(sa.Text)
    remote_addr: Mapped[str | None] = mapped_column(sa.Text)
    session_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


class SessionRow(Base):
    """One SSH channel bridged into a container (shell, exec, sftp, ...)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    user_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    container: Mapped[str] = mapped_column(sa.Text)
    container_id: Mapped[str | None] = mapped_column(sa.String(64))
    login: Mapped[str | None] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.String(32))
    command: Mapped[str | None] = mapped_column(sa.Text)
    remote_addr: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(index=True)
    bytes_in: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    bytes_out: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    exit_status: Mapped[int | None]
    end_reason: Mapped[str | None] = mapped_column(sa.Text)
    recording_path: Mapped[str | None] = mapped_column(sa.Text)
    kill_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    gateway_pid: Mapped[int | None]
    # The replica that serves the session (``replicas.name``); None in rows older than that.
    replica: Mapped[str | None] = mapped_column(sa.String(64), index=True)


class WebLink(Base):
    """A one-time web terminal link (``ssh USER@gw web CONTAINER``) and, once opened, the
    browser's session cookie: both stored as SHA-256 digests only."""

    __tablename__ = "web_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    link_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    cookie_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    user_name: Mapped[str] = mapped_column(sa.String(64))
    container: Mapped[str] = mapped_column(sa.Text)
    login: Mapped[str | None] = mapped_column(sa.Text)
    # What the SSH connection that asked for the link authenticated with: "publickey" and the
    # key's fingerprint, or "password" and the SHA-256 of the password hash it was checked with.
    method: Mapped[str] = mapped_column(sa.String(16))
    credential: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    redeemed_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]


class ReplicaRow(Base):
    """One running gateway process and its heartbeat (``gateway.observe.replica``)."""

    __tablename__ = "replicas"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    address: Mapped[str | None] = mapped_column(sa.Text)
    pid: Mapped[int | None]
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    draining: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class AuthFailure(Base):
    """Failed password attempts for the user names of one bucket (a hash of the name), shared
    by every replica: the per-user throttle (``gateway.store.throttle``)."""

    __tablename__ = "auth_failures"

    bucket: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    failures: Mapped[int]
    last_at: Mapped[datetime] = mapped_column(index=True)


class ApiToken(Base):
    """A bearer token of the admin API (``sshgw token add``): its public key id finds the row,
    its SHA-256 digest is compared in constant time; the token itself is never stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_id: Mapped[str] = mapped_column(sa.String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64))
    scope: Mapped[str] = mapped_column(sa.String(16))  # "read" or "admin"
    created_by: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sa.func.current_timestamp()
    )
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
