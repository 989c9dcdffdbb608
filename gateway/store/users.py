"""Users and their keys: authentication reads (the hot path) and administration."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.routing import valid_user_name
from gateway.store.db import Database, check_name
from gateway.store.keys import parse_public_key
from gateway.store.models import (
    Group,
    GroupMember,
    PublicKey,
    User,
    UTCDateTime,
    as_utc,
    utcnow,
)


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


class UsersRepo(Database):
    """Users, their keys and what authentication reads about them."""

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

    async def key_used(self, fingerprint: str) -> None:
        async with self._guard(), self._autocommit.connect() as conn:
            await conn.execute(
                sa.update(PublicKey)
                .where(PublicKey.fingerprint == fingerprint)
                .values(last_used_at=utcnow())
            )

    async def add_user(
        self, name: str, password_hash: str | None = None, display: str | None = None
    ) -> None:
        check_name("user", name)
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
