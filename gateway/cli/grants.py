"""``sshgw grant ...``: who may reach which containers, with which rights and logins."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.admin import grants
from gateway.admin.grants import grant_view, labels_of
from gateway.cli.common import actor, with_store
from gateway.cli.inputs import DATE_HELP, parse_expiry
from gateway.cli.show import JsonOpt, fmt_expiry, labels_text, listing, say, table
from gateway.errors import InvalidInput
from gateway.policy import KNOWN_RIGHTS, Grant, format_ports

app = typer.Typer(help="Grants: add, list, remove.")


GRANT_COLUMNS = [
    "ID",
    "SUBJECT",
    "TARGET",
    "ENGINE",
    "LABELS",
    "RIGHTS",
    "LOGINS",
    "PATHS",
    "PORTS",
    "EXPIRES",
    "RECORD",
]


def grant_row(g: Grant) -> list[str]:
    return [
        str(g.id),
        g.subject,
        g.target,
        g.engine,
        labels_text(g.labels),
        ",".join(sorted(g.rights)),
        ",".join(g.logins) or "(image user)",
        ",".join(g.paths) or "-",
        format_ports(g.ports) or "-",
        fmt_expiry(g.expires_at),
        "yes" if g.record else "no",
    ]


def grant_table(grants: list[Grant], title: str | None = None) -> None:
    table(GRANT_COLUMNS, (grant_row(g) for g in grants), title=title)


@app.command("add")
def add(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Option("--target", help="Container name glob, e.g. 'web*' or '*'.")
    ],
    rights: Annotated[
        str,
        typer.Option("--rights", help=f"Comma list of: {', '.join(sorted(KNOWN_RIGHTS))}."),
    ],
    user: Annotated[str | None, typer.Option("--user", help="Grant to this user.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Grant to this group.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="KEY=VALUE", help="Container label to require (repeat)."),
    ] = None,
    logins: Annotated[
        str,
        typer.Option(
            "--logins",
            help="Comma list of logins inside the container; the first is the default. "
            "'*' allows any login and defaults to the image's user. "
            "Without --logins only the image's own user is allowed.",
        ),
    ] = "",
    path: Annotated[
        list[str] | None,
        typer.Option("--path", metavar="PATH", help="Confine file transfer to PATH (repeat)."),
    ] = None,
    ports: Annotated[
        str,
        typer.Option(
            "--ports",
            metavar="LIST",
            help="Ports the 'forward' right allows in the container (ssh -L/-D), e.g. "
            "'80,8000-8100'. Without --ports, 'forward' allows no port.",
        ),
    ] = "",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            metavar="GLOB",
            help="Engine name glob the grant applies to (sshgw engine list), e.g. 'host*'. "
            "Default: any engine.",
        ),
    ] = "*",
    expires: Annotated[str | None, typer.Option("--expires", help=DATE_HELP)] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Record PTY sessions (default: yes).")
    ] = True,
) -> None:
    """Grant a user or a group rights on containers; prints the grant's id."""
    if (user is None) == (group is None):
        raise InvalidInput("give exactly one of --user or --group")
    labels = labels_of(label or [])
    login_list = [x.strip() for x in logins.split(",") if x.strip()]
    expires_at = parse_expiry(expires)
    grant = with_store(
        ctx,
        lambda store: grants.add_grant(
            store,
            actor(),
            user=user,
            group=group,
            target=target,
            labels=labels,
            rights=rights,
            logins=login_list,
            paths=path or [],
            ports=ports,
            engine=engine,
            expires_at=expires_at,
            record_pty=record,
        ),
    )
    say(f"added {grant.describe()}")
    for note in grants.notes(grant):
        say(f"note: {note}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List all grants."""
    found: list[Grant] = with_store(ctx, lambda store: store.all_grants())
    listing(found, as_json, grant_view, GRANT_COLUMNS, grant_row)


@app.command("remove")
def remove(ctx: typer.Context, grant_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Remove a grant by id."""
    grant = with_store(ctx, lambda store: grants.remove_grant(store, actor(), grant_id))
    say(f"removed {grant.describe()}")
