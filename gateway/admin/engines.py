"""Engines: the Docker engines the gateway serves (stored in the database, so every replica
serves the same set; a running gateway reads them again every few seconds): add, remove, and
each one probed for its state."""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gateway.admin.common import Actor, record
from gateway.engines.base import TLSFiles
from gateway.errors import InvalidInput, NotFound
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.engines.base import EngineState
    from gateway.engines.fleet import EngineSpec
    from gateway.store.engines import EngineInfo

NO_TLS = TLSFiles()
# Each engine answers within this many seconds or is shown down (probes run side by side).
PROBE_TIMEOUT = 5.0


def engine_view(s: EngineState) -> dict[str, Any]:
    """An engine and how it is doing: name url state version containers error."""
    return asdict(s)


def spec_of(info: EngineInfo) -> EngineSpec:
    from gateway.engines.fleet import EngineSpec  # aiohttp is slow to import

    return EngineSpec(info.name, info.url, info.tls_ca, info.tls_cert, info.tls_key)


def tls_file(field: str, path: str | None) -> str | None:
    """``path`` made absolute, once it is a readable file (``field``: tls_ca, tls_cert or
    tls_key; the error names it)."""
    if path is None:
        return None
    full = os.path.abspath(path)
    if not os.path.isfile(full) or not os.access(full, os.R_OK):
        err = InvalidInput(f"--{field.replace('_', '-')}: cannot read {full}")
        err.field = field  # type: ignore[attr-defined]
        raise err
    return full


async def add_engine(
    store: Store, actor: Actor, name: str, url: str, tls: TLSFiles = NO_TLS
) -> None:
    """Serve another engine's containers (the gateways pick it up within seconds); its TLS
    files must be readable here. Name and URL are checked by the store."""
    ca = tls_file("tls_ca", tls.ca)
    cert = tls_file("tls_cert", tls.cert)
    key = tls_file("tls_key", tls.key)
    await store.add_engine(name, url, tls_ca=ca, tls_cert=cert, tls_key=key)
    await record(store, actor, "engine.add", engine=name, url=url, tls=bool(ca))


async def remove_engine(store: Store, actor: Actor, name: str) -> None:
    """Stop serving an engine's containers (within seconds; open sessions go on)."""
    await store.remove_engine(name)
    await record(store, actor, "engine.remove", engine=name)


async def probe_all(infos: list[EngineInfo]) -> list[EngineState]:
    """Each engine asked for its version and containers now, side by side (each within
    :data:`PROBE_TIMEOUT` seconds)."""
    from gateway.engines.fleet import probe

    return list(await asyncio.gather(*(probe(spec_of(i), PROBE_TIMEOUT) for i in infos)))


async def engine_states(store: Store, name: str | None = None) -> list[EngineState]:
    """The configured engines (or the one named) with their state now."""
    infos = await store.list_engines()
    if name is not None:
        infos = [i for i in infos if i.name == name]
        if not infos:
            raise NotFound(f"no such engine: {name}")
    return await probe_all(infos)
