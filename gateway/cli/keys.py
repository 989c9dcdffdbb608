"""``sshgw key ...``: users' SSH public keys."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.admin import keys
from gateway.admin.keys import key_view
from gateway.cli.common import LIVE_NOTE, actor, with_store
from gateway.cli.inputs import DATE_HELP, parse_expiry, read_key_arg
from gateway.cli.show import JsonOpt, fmt_expiry, fmt_time, listing, say
from gateway.store import KeyInfo, parse_public_key

app = typer.Typer(help="SSH public keys: add, list, remove.")


@app.command("add")
def add(
    ctx: typer.Context,
    user: str,
    file_or_text: Annotated[
        str, typer.Argument(metavar="FILE_OR_TEXT", help="A .pub file, '-' (stdin) or key text.")
    ],
    comment: Annotated[
        str | None, typer.Option("--comment", help="Replace the key's own comment.")
    ] = None,
    expires: Annotated[str | None, typer.Option("--expires", help=DATE_HELP)] = None,
) -> None:
    """Add a public key to a user; prints its SHA256 fingerprint."""
    text = read_key_arg(file_or_text)
    parse_public_key(text, comment)  # a bad key is refused before the database is opened
    expires_at = parse_expiry(expires)
    fp, parsed = with_store(
        ctx,
        lambda store: keys.add_key(
            store, actor(), user, text, comment=comment, expires_at=expires_at
        ),
    )
    say(f"added key {fp} ({parsed.algorithm}) to {user}")


@app.command("list")
def list_(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Argument(help="Only this user's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List public keys (of one user, or everyone's)."""
    found: list[KeyInfo] = with_store(ctx, lambda store: store.list_keys(user))
    listing(
        found,
        as_json,
        key_view,
        ["USER", "FINGERPRINT", "TYPE", "COMMENT", "EXPIRES", "LAST USED"],
        lambda k: [
            k.user,
            k.fingerprint,
            k.algorithm,
            k.comment or "-",
            fmt_expiry(k.expires_at),
            fmt_time(k.last_used_at, "never"),
        ],
    )


@app.command("remove")
def remove(
    ctx: typer.Context,
    fingerprint: Annotated[str, typer.Argument(help="SHA256:... as `key list` shows it.")],
) -> None:
    """Remove a public key by fingerprint; connections that logged in with it end."""
    fingerprint, owner = with_store(ctx, lambda store: keys.remove_key(store, actor(), fingerprint))
    say(f"removed key {fingerprint} of {owner}")
    say(LIVE_NOTE)
