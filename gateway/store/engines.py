"""Engines: the Docker engines the gateway serves (``sshgw engine add``), shared by replicas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.routing import ENGINE_RE
from gateway.store.db import Database
from gateway.store.models import EngineRow


@dataclass(frozen=True, slots=True)
class EngineInfo:
    name: str
    url: str
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    created_at: datetime


def check_engine(
    name: str, url: str, tls_ca: str | None, tls_cert: str | None, tls_key: str | None
) -> None:
    """Raise :class:`InvalidInput` with one line unless this engine may be stored."""
    if not ENGINE_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid engine name {name!r}: lower-case letters, digits and '-' (at most 63)"
        )
    if not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidInput("invalid engine URL: no spaces or control characters")
    tls = bool(tls_ca or tls_cert or tls_key)
    if url.startswith("unix://"):
        if not url.removeprefix("unix://").startswith("/"):
            raise InvalidInput(f"invalid engine URL {url!r}: unix:// needs an absolute path")
        if tls:
            raise InvalidInput("--tls-ca/--tls-cert/--tls-key are for tcp:// engines")
    elif url.startswith("tcp://"):
        host = url.removeprefix("tcp://")
        if not host or "/" in host or "@" in host:
            raise InvalidInput(f"invalid engine URL {url!r}: use tcp://HOST:PORT")
        if not tls_ca:
            # The Docker API is root on its host: never spoken in clear over a network.
            raise InvalidInput(
                "a tcp:// engine needs TLS: give --tls-ca (and --tls-cert/--tls-key)"
            )
        if bool(tls_cert) != bool(tls_key):
            raise InvalidInput("give --tls-cert and --tls-key together")
    else:
        raise InvalidInput(f"invalid engine URL {url!r}: use unix:///PATH or tcp://HOST:PORT")


class EnginesRepo(Database):
    """The configured engines (none: the gateway uses its local default engine)."""

    async def add_engine(
        self,
        name: str,
        url: str,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        check_engine(name, url, tls_ca, tls_cert, tls_key)
        async with self._tx() as s:
            if await s.scalar(sa.select(EngineRow.id).where(EngineRow.name == name)) is not None:
                raise Conflict(f"engine {name} already exists")
            s.add(EngineRow(name=name, url=url, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key))

    async def list_engines(self) -> list[EngineInfo]:
        async with self._guard(), self.sessionmaker() as s:
            rows = (await s.scalars(sa.select(EngineRow).order_by(EngineRow.name))).all()
            return [
                EngineInfo(r.name, r.url, r.tls_ca, r.tls_cert, r.tls_key, r.created_at)
                for r in rows
            ]

    async def remove_engine(self, name: str) -> None:
        async with self._tx() as s:
            result = await s.execute(sa.delete(EngineRow).where(EngineRow.name == name))
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"no such engine: {name}")
