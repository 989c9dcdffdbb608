"""Top-level commands: serve, db, check, containers, hostkey."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.admin.checks import CheckResult, check_request, check_view, evaluate
from gateway.admin.containers import container_view
from gateway.cli.common import open_store, run, settings
from gateway.cli.engines import fleet_for
from gateway.cli.show import labels_text, print_json, say, table
from gateway.errors import InvalidInput
from gateway.policy import KNOWN_RIGHTS, Right, format_ports

if TYPE_CHECKING:
    from gateway.engines.base import Container

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

db_app = typer.Typer(help="The database schema (Alembic migrations).")
hostkey_app = typer.Typer(help="The gateway's SSH host keys.")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.command("check")(check)
    app.command("containers")(containers)
    app.add_typer(hostkey_app, name="hostkey")


# serve ----------------------------------------------------------------------------------


def serve(
    ctx: typer.Context,
    listen: Annotated[
        str | None,
        typer.Option("--listen", metavar="HOST:PORT", help="SSH address (default 0.0.0.0:2222)."),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            metavar="HOST:PORT",
            help="Metrics and health HTTP address (default 127.0.0.1:9122).",
        ),
    ] = None,
) -> None:
    """Run the gateway."""
    cfg = settings(ctx, listen=listen, metrics_listen=metrics_listen)
    from gateway.app import run as run_gateway

    raise typer.Exit(run_gateway(cfg))


# db -------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the schema, or bring it to the newest version."""
    cfg = settings(ctx)

    async def go() -> tuple[str, str]:
        async with open_store(cfg, ensure_schema=False) as store:
            before = await store.schema_state()
            await store.upgrade()
            return before, store.url

    before, url = run(go())
    if before == "current":
        say(f"database {url} is up to date")
    else:
        say(f"database {url} upgraded to the newest schema")


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Say whether the schema is current, empty, behind (upgrade needed) or unknown."""
    cfg = settings(ctx)

    async def go() -> tuple[str, str]:
        async with open_store(cfg, ensure_schema=False) as store:
            return await store.schema_state(), store.url

    schema, url = run(go())
    if as_json:
        print_json({"database": url, "schema": schema})
        return
    say(f"{url}: {schema}")
    if schema != "current":
        raise typer.Exit(1)


# check ----------------------------------------------------------------------------------


def check(
    ctx: typer.Context,
    user: str,
    container: str,
    right: Annotated[
        str, typer.Option("--right", help=f"One of: {', '.join(sorted(KNOWN_RIGHTS))}.")
    ] = "shell",
    login: Annotated[
        str | None, typer.Option("--login", help="The login asked for inside the container.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="With --right forward: the port in the container (default: any listed port).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Would USER get RIGHT on CONTAINER? Prints ALLOW or DENY and what decided it.

    Exit status 0 on allow, 1 on deny.
    """
    check_request(right, port)
    cfg = settings(ctx)

    async def go() -> CheckResult:
        async with open_store(cfg) as store:
            engine = await fleet_for(cfg, store)
            try:
                return await evaluate(store, engine, user, container, right, login, port)
            finally:
                await engine.close()

    result = run(go())
    d = result.decision
    if as_json:
        print_json(check_view(result))
    else:
        say("ALLOW" if d.allowed else "DENY")
        say(d.message)
        if result.container is not None and result.container.engine:
            say(f"engine: {result.container.engine}")
        if d.allowed:
            say(f"login: {d.login or 'the image user'}")
            if d.right == Right.FORWARD:
                say(f"ports: {format_ports(d.ports)}")
            else:
                say(f"paths: {', '.join(d.paths) if d.paths else 'unrestricted'}")
            say(f"recording: {'on' if d.record else 'off'}")
        for w in result.warnings:
            say(f"warning: {w}")
    raise typer.Exit(0 if d.allowed else 1)


# containers -----------------------------------------------------------------------------


def containers(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Containers the gateway sees on its Docker engines (sshgw engine list)."""
    cfg = settings(ctx)

    async def go() -> tuple[list[Container], list[str]]:
        async with open_store(cfg) as store:
            engine = await fleet_for(cfg, store)
            try:
                found = await engine.list_containers()
                down = [
                    f"engine {s.name} unavailable: {s.error}" for s in engine.states() if s.error
                ]
                return found, down
            finally:
                await engine.close()

    found, down = run(go())
    for line in down:
        print(f"warning: {line}", file=sys.stderr)
    if as_json:
        print_json([container_view(c) for c in found])
        return
    table(
        ["NAME", "ENGINE", "ID", "IMAGE", "STATE", "LABELS"],
        (
            [c.name, c.engine or "-", c.short_id, c.image, c.state, labels_text(c.labels)]
            for c in found
        ),
    )


# hostkey --------------------------------------------------------------------------------


KnownHostsOpt = Annotated[
    str | None,
    typer.Option(
        "--known-hosts",
        metavar="NAMES",
        help="Print known_hosts lines for NAMES instead (names or patterns separated by commas, "
        "or a HostKeyAlias such as sshgw-containers): every container reached by ProxyJump "
        "shows these keys.",
    ),
]


@hostkey_app.command("show")
def hostkey_show(
    ctx: typer.Context, as_json: JsonOpt = False, known_hosts: KnownHostsOpt = None
) -> None:
    """The host key fingerprints, for users to verify on first connect."""
    from gateway.ssh.hostkeys import ensure_host_keys, fingerprints, known_hosts_lines

    cfg = settings(ctx)
    if known_hosts is not None and (
        not known_hosts.isprintable() or not known_hosts or any(c.isspace() for c in known_hosts)
    ):
        raise InvalidInput("--known-hosts takes names or patterns separated by commas, no spaces")
    try:
        if known_hosts is not None:
            # Plain lines (no console wrapping): they go into a known_hosts file as they are.
            keys = ensure_host_keys(cfg.effective_host_key_dir)
            for line in known_hosts_lines(keys, known_hosts):
                print(line)
            return
        prints = fingerprints(cfg.effective_host_key_dir)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read or create host keys in {cfg.effective_host_key_dir}: "
            f"{exc.strerror or exc}"
        ) from None
    if as_json:
        print_json([{"algorithm": alg, "fingerprint": fp} for alg, fp in prints])
        return
    table(["ALGORITHM", "FINGERPRINT"], ([alg, fp] for alg, fp in prints))
