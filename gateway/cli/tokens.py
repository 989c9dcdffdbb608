"""``sshgw token ...``: bearer tokens of the admin API (``SSHGW_HTTP_LISTEN``)."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.admin import tokens
from gateway.admin.tokens import token_view
from gateway.cli.common import actor, with_store
from gateway.cli.inputs import DATE_HELP, parse_expiry
from gateway.cli.show import JsonOpt, fmt_expiry, fmt_time, listing, say
from gateway.store.tokens import TokenInfo, parse_scope

app = typer.Typer(help="API tokens of the admin API: add, list, remove.")


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    scope: Annotated[
        str, typer.Option("--scope", help="read (GET only) or admin (every operation).")
    ],
    expires: Annotated[str | None, typer.Option("--expires", help=DATE_HELP)] = None,
) -> None:
    """Make a token and print it, once: only a digest of it is kept."""
    parse_scope(scope)
    expires_at = parse_expiry(expires)
    token, info = with_store(
        ctx, lambda store: tokens.add_token(store, actor(), name, scope, expires_at)
    )
    # The token alone on stdout (for `$(sshgw token add ...)`); the rest goes to stderr.
    print(token)
    typer.echo(
        f"added token {info.name} (scope {info.scope}, expires {fmt_expiry(info.expires_at)}); "
        "it is shown only now",
        err=True,
    )


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List tokens (never the tokens themselves)."""
    found: list[TokenInfo] = with_store(ctx, lambda store: store.list_tokens())
    listing(
        found,
        as_json,
        token_view,
        ["NAME", "SCOPE", "KEY ID", "CREATED", "BY", "EXPIRES", "LAST USED"],
        lambda t: [
            t.name,
            str(t.scope),
            t.key_id,
            fmt_time(t.created_at),
            t.created_by or "-",
            fmt_expiry(t.expires_at),
            fmt_time(t.last_used_at, "never"),
        ],
    )


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a token: requests that carry it are refused from now on."""
    with_store(ctx, lambda store: tokens.remove_token(store, actor(), name))
    say(f"removed token {name}")
