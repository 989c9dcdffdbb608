"""API tokens of the admin API: made by ``sshgw token add``, shown once, stored as digests.

A token is ``sshgw_`` + a key id (12 hex characters, stored in clear: it finds the row) + a
secret (32 random bytes, base64url). Only the SHA-256 digest of the whole token is stored; a
token presented is looked up by its key id and its digest compared in constant time. SHA-256
(not argon2) is right for 256 random bits: nothing to guess, and every API request checks one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.store.db import Database, check_name
from gateway.store.models import ApiToken, as_utc, utcnow

PREFIX = "sshgw_"
KEY_ID_CHARS = 12
SECRET_BYTES = 32
_TOKEN = re.compile(rf"{PREFIX}([0-9a-f]{{{KEY_ID_CHARS}}})([A-Za-z0-9_-]{{43}})")
# last_used_at is written at most this often per token (not one write per request).
USED_EVERY = timedelta(seconds=60)


class Scope(StrEnum):
    READ = "read"  # GET only
    ADMIN = "admin"  # everything


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope: Scope
    key_id: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


def new_token() -> tuple[str, str]:
    """A fresh token and its key id."""
    key_id = secrets.token_hex(KEY_ID_CHARS // 2)
    return PREFIX + key_id + secrets.token_urlsafe(SECRET_BYTES), key_id


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The key id of a well-formed token; None for anything else (no query is made)."""
    m = _TOKEN.fullmatch(token)
    return m.group(1) if m else None


def parse_scope(text: str) -> Scope:
    try:
        return Scope(text)
    except ValueError:
        raise InvalidInput(f"unknown scope {text!r}: use read or admin") from None


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        name=row.name,
        scope=Scope(row.scope),
        key_id=row.key_id,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


class TokensRepo(Database):
    """The ``api_tokens`` table."""

    async def add_token(
        self,
        name: str,
        scope: Scope,
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> tuple[str, TokenInfo]:
        """Make a token; returns it (the only time it exists outside the caller) and its row."""
        check_name("token", name)
        token, key_id = new_token()
        async with self._tx() as s:
            if await s.scalar(sa.select(ApiToken.id).where(ApiToken.name == name)) is not None:
                raise Conflict(f"token {name} already exists")
            row = ApiToken(
                name=name,
                key_id=key_id,
                token_hash=token_digest(token),
                scope=str(scope),
                created_by=created_by,
                created_at=utcnow(),
                expires_at=as_utc(expires_at) if expires_at is not None else None,
            )
            s.add(row)
        return token, _info(row)

    async def list_tokens(self) -> list[TokenInfo]:
        async with self._guard(), self.sessionmaker() as s:
            rows = (await s.scalars(sa.select(ApiToken).order_by(ApiToken.name))).all()
        return [_info(r) for r in rows]

    async def remove_token(self, name: str) -> None:
        async with self._tx() as s:
            result = await s.execute(sa.delete(ApiToken).where(ApiToken.name == name))
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"no such token: {name}")

    async def check_token(self, token: str) -> TokenInfo | None:
        """The token's row when ``token`` is one of ours and has not expired; else None."""
        key_id = key_id_of(token)
        if key_id is None:
            return None
        async with self._guard(), self.sessionmaker() as s:
            row = await s.scalar(sa.select(ApiToken).where(ApiToken.key_id == key_id))
        if row is None or not hmac.compare_digest(row.token_hash, token_digest(token)):
            return None
        info = _info(row)
        if info.expired():
            return None
        now = utcnow()
        if info.last_used_at is None or now - info.last_used_at >= USED_EVERY:
            async with self._guard(), self._autocommit.connect() as conn:
                await conn.execute(
                    sa.update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
                )
        return info
