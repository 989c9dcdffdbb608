"""``sshgw engine ...``: the Docker engines the gateway serves (stored in the database, so every
replica serves the same set; a running gateway reads them again every few seconds)."""

from __future__ import annotations

import getpass
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.common import open_store, run, settings, with_store
from gateway.cli.show import JsonOpt, print_json, say, table
from gateway.errors import InvalidInput
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.engines.base import Engine, EngineState
    from gateway.engines.fleet import EngineSpec
    from gateway.store.engines import EngineInfo

app = typer.Typer(help="Docker engines: add, list, remove, check.")

NO_ENGINE = "no engine configured: the gateway uses its local default engine ({url})"


def spec_of(info: EngineInfo) -> EngineSpec:
    from gateway.engines.fleet import EngineSpec  # aiohttp is slow to import

    return EngineSpec(info.name, info.url, info.tls_ca, info.tls_cert, info.tls_key)


async def fleet_for(cfg: Settings, store: Store) -> Engine:
    """The engines a command looks at: the configured ones, else the local default engine."""
    from gateway.engines.docker import DockerEngine
    from gateway.engines.fleet import Fleet

    default = DockerEngine(cfg.docker_host, cfg.docker_tls_verify, cfg.docker_cert_path)
    fleet = Fleet(default, watch=False)
    await fleet.configure([spec_of(e) for e in await store.list_engines()])
    return fleet


async def _audit(store: Store, action: str, **detail: Any) -> None:
    """The change's audit event (as every administrative command records one)."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):
        who = f"uid:{os.getuid()}"
    await store.add_audit_event("admin", actor=who, detail={"action": action, **detail})


def _tls_file(flag: str, path: str | None) -> str | None:
    if path is None:
        return None
    full = os.path.abspath(path)
    if not os.path.isfile(full) or not os.access(full, os.R_OK):
        raise InvalidInput(f"{flag}: cannot read {full}")
    return full


async def _probe_all(infos: list[EngineInfo]) -> list[EngineState]:
    import asyncio

    from gateway.engines.fleet import probe

    return list(await asyncio.gather(*(probe(spec_of(i)) for i in infos)))


def _default_url(cfg: Settings) -> str:
    return cfg.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Engine name: a-z, 0-9 and '-'.")],
    url: Annotated[str, typer.Argument(help="unix:///PATH or tcp://HOST:PORT (with TLS).")],
    tls_ca: Annotated[
        str | None, typer.Option("--tls-ca", metavar="FILE", help="CA of the engine's cert.")
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", metavar="FILE", help="Client certificate.")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", metavar="FILE", help="Client key.")
    ] = None,
) -> None:
    """Serve the containers of another Docker engine (the gateway picks it up within seconds)."""
    ca = _tls_file("--tls-ca", tls_ca)
    cert = _tls_file("--tls-cert", tls_cert)
    key = _tls_file("--tls-key", tls_key)

    async def go(store: Store) -> None:
        await store.add_engine(name, url, tls_ca=ca, tls_cert=cert, tls_key=key)
        await _audit(store, "engine.add", engine=name, url=url, tls=bool(ca))

    with_store(ctx, go)
    say(f"added engine {name} ({url})")


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Stop serving an engine's containers (within seconds; open sessions go on)."""

    async def go(store: Store) -> None:
        await store.remove_engine(name)
        await _audit(store, "engine.remove", engine=name)

    with_store(ctx, go)
    say(f"removed engine {name}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The engines, each asked for its version and containers now."""
    cfg = settings(ctx)

    async def go() -> list[EngineState]:
        async with open_store(cfg) as store:
            return await _probe_all(await store.list_engines())

    states = run(go())
    if as_json:
        print_json([asdict(s) for s in states])
        return
    if not states:
        say(NO_ENGINE.format(url=_default_url(cfg)))
        return
    table(["NAME", "URL", "STATE", "VERSION", "CONTAINERS"], (_row(s) for s in states))


def _row(s: EngineState) -> list[str]:
    if s.state != "up":
        return [s.name, s.url, f"down: {s.error}", s.version or "-", "-"]
    return [s.name, s.url, "up", s.version, str(s.containers)]


@app.command("check")
def check(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One engine (default: all).")] = None,
) -> None:
    """Does each engine answer? One line each; exit status 1 when one does not."""
    cfg = settings(ctx)

    async def go() -> list[EngineState]:
        async with open_store(cfg) as store:
            infos = await store.list_engines()
        if name is not None:
            infos = [i for i in infos if i.name == name]
            if not infos:
                raise InvalidInput(f"no such engine: {name}")
        return await _probe_all(infos)

    states = run(go())
    if not states:
        say(NO_ENGINE.format(url=_default_url(cfg)))
        return
    for s in states:
        if s.state == "up":
            say(f"{s.name}: up ({s.version}, {s.containers} containers)")
        else:
            say(f"{s.name}: down: {s.error}")
    raise typer.Exit(0 if all(s.state == "up" for s in states) else 1)
