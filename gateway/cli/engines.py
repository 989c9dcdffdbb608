"""``sshgw engine ...``: the Docker engines the gateway serves (stored in the database, so every
replica serves the same set; a running gateway reads them again every few seconds)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.admin import engines
from gateway.admin.engines import engine_view, spec_of
from gateway.cli.common import actor, settings, with_store
from gateway.cli.show import JsonOpt, print_json, say, table
from gateway.engines.base import TLSFiles
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.engines.base import Engine, EngineState

app = typer.Typer(help="Docker engines: add, list, remove, check.")

NO_ENGINE = "no engine configured: the gateway uses its local default engine ({url})"


async def fleet_for(cfg: Settings, store: Store) -> Engine:
    """The engines a command looks at: the configured ones, else the local default engine."""
    from gateway.engines.docker import DockerEngine
    from gateway.engines.fleet import Fleet

    default = DockerEngine(cfg.docker_host, cfg.docker_tls_verify, cfg.docker_cert_path)
    fleet = Fleet(default, watch=False)
    await fleet.configure([spec_of(e) for e in await store.list_engines()])
    return fleet


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
    with_store(
        ctx,
        lambda store: engines.add_engine(
            store, actor(), name, url, TLSFiles(tls_ca, tls_cert, tls_key)
        ),
    )
    say(f"added engine {name} ({url})")


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Stop serving an engine's containers (within seconds; open sessions go on)."""

    with_store(ctx, lambda store: engines.remove_engine(store, actor(), name))
    say(f"removed engine {name}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The engines, each asked for its version and containers now."""
    cfg = settings(ctx)
    states = with_store(ctx, engines.engine_states)
    if as_json:
        print_json([engine_view(s) for s in states])
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

    states = with_store(ctx, lambda store: engines.engine_states(store, name))
    if not states:
        say(NO_ENGINE.format(url=_default_url(cfg)))
        return
    for s in states:
        if s.state == "up":
            say(f"{s.name}: up ({s.version}, {s.containers} containers)")
        else:
            say(f"{s.name}: down: {s.error}")
    raise typer.Exit(0 if all(s.state == "up" for s in states) else 1)
