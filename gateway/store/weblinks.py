"""Web terminal links: made by ``ssh USER@gw web CONTAINER``, redeemed once by a browser.

A link carries a token of 32 random bytes; redeeming it (once, before it expires) turns it into a
session cookie, which opens one WebSocket (once, before it expires). Only SHA-256 digests of the
token and of the cookie are stored, and each step is one conditional UPDATE, so two replicas (or
two browsers) racing for the same link cannot both win.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa

from gateway.store.db import Database
from gateway.store.models import WebLink, utcnow

WEB_LINKS = cast(sa.Table, WebLink.__table__)

TOKEN_BYTES = 32
LINK_TTL = 60.0  # seconds a printed link may be opened in
COOKIE_TTL = 60.0  # seconds the browser has to open the terminal's WebSocket with the cookie
# What secrets.token_urlsafe(32) makes; anything else is refused without a query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
KEEP_USED = timedelta(hours=1)  # rows past their expiry are deleted after this


@dataclass(frozen=True)
class WebGrant:
    """What an opened web session was made for: the user, the container and login asked for,
    and the credential the SSH connection that asked for it authenticated with."""

    user: str
    container: str
    login: str | None
    method: str
    credential: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def well_formed(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


class WebLinksRepo(Database):
    """The ``web_links`` table."""

    async def create_web_link(self, grant: WebGrant, ttl: float) -> str:
        """A new link's token (shown once, never stored) for ``grant``, valid ``ttl`` seconds.
        Rows expired long ago are deleted on the way."""
        token, now = new_token(), utcnow()
        async with self._guard(), self.engine.begin() as conn:
            await conn.execute(WEB_LINKS.delete().where(WEB_LINKS.c.expires_at < now - KEEP_USED))
            await conn.execute(
                WEB_LINKS.insert().values(
                    link_hash=digest(token),
                    user_name=grant.user,
                    container=grant.container,
                    login=grant.login,
                    method=grant.method,
                    credential=grant.credential,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
        return token

    async def redeem_web_link(self, token: str, cookie_ttl: float) -> str | None:
        """The session cookie for the link ``token``, valid ``cookie_ttl`` seconds; None when
        the link is unknown, used or expired."""
        if not well_formed(token):
            return None
        cookie, now = new_token(), utcnow()
        async with self._guard(), self.engine.begin() as conn:
            done = await conn.execute(
                WEB_LINKS.update()
                .where(
                    WEB_LINKS.c.link_hash == digest(token),
                    WEB_LINKS.c.redeemed_at.is_(None),
                    WEB_LINKS.c.expires_at > now,
                )
                .values(
                    redeemed_at=now,
                    cookie_hash=digest(cookie),
                    expires_at=now + timedelta(seconds=cookie_ttl),
                )
            )
        return cookie if done.rowcount == 1 else None

    async def open_web_session(self, cookie: str) -> WebGrant | None:
        """What the session cookie ``cookie`` was made for, the first time it is shown before
        it expires; None after that, or for an unknown cookie."""
        if not well_formed(cookie):
            return None
        now: datetime = utcnow()
        h = digest(cookie)
        async with self._guard(), self.engine.begin() as conn:
            done = await conn.execute(
                WEB_LINKS.update()
                .where(
                    WEB_LINKS.c.cookie_hash == h,
                    WEB_LINKS.c.opened_at.is_(None),
                    WEB_LINKS.c.expires_at > now,
                )
                .values(opened_at=now)
            )
            if done.rowcount != 1:
                return None
            row = (
                await conn.execute(
                    sa.select(
                        WEB_LINKS.c.user_name,
                        WEB_LINKS.c.container,
                        WEB_LINKS.c.login,
                        WEB_LINKS.c.method,
                        WEB_LINKS.c.credential,
                    ).where(WEB_LINKS.c.cookie_hash == h)
                )
            ).one()
        return WebGrant(*row)
