"""``sshgw key ...``: users' SSH public keys."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gateway.cli.common import LIVE_NOTE, audit, open_store, run, settings, with_store
from gateway.cli.inputs import DATE_HELP, parse_when, read_key_arg
from gateway.cli.show import JsonOpt, fmt_expiry, fmt_time, pick, print_json, say, table
from gateway.store import KeyInfo, Store, parse_public_key

app = typer.Typer(help="SSH public keys: add, list, remove.")


def key_json(k: KeyInfo) -> dict[str, Any]:
    return pick(
        k, "user fingerprint algorithm comment public_key expires_at last_used_at created_at"
    )


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
    parsed = parse_public_key(read_key_arg(file_or_text), comment)
    expires_at = parse_when(expires) if expires is not None else None
    cfg = settings(ctx)

    async def go() -> str:
        async with open_store(cfg) as store:
            fp = await store.add_key(user, parsed.public_key, expires_at=expires_at)
            await audit(
                store,
                "key.add",
                user=user,
                fingerprint=fp,
                comment=parsed.comment,
                expires_at=expires_at,
            )
            return fp

    fp = run(go())
    say(f"added key {fp} ({parsed.algorithm}) to {user}")


@app.command("list")
def list_(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Argument(help="Only this user's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List public keys (of one user, or everyone's)."""
    cfg = settings(ctx)

    async def go() -> list[KeyInfo]:
        async with open_store(cfg) as store:
            return await store.list_keys(user)

    keys = run(go())
    if as_json:
        print_json([key_json(k) for k in keys])
        return
    table(
        ["USER", "FINGERPRINT", "TYPE", "COMMENT", "EXPIRES", "LAST USED"],
        (
            [
                k.user,
                k.fingerprint,
                k.algorithm,
                k.comment or "-",
                fmt_expiry(k.expires_at),
                fmt_time(k.last_used_at, "never"),
            ]
            for k in keys
        ),
    )


@app.command("remove")
def remove(
    ctx: typer.Context,
    fingerprint: Annotated[str, typer.Argument(help="SHA256:... as `key list` shows it.")],
) -> None:
    """Remove a public key by fingerprint; connections that logged in with it end."""
    fingerprint = fingerprint.strip()
    if not fingerprint.startswith("SHA256:"):
        fingerprint = "SHA256:" + fingerprint

    async def go(store: Store) -> str:
        owner = await store.remove_key(fingerprint)
        await audit(store, "key.remove", user=owner, fingerprint=fingerprint)
        return owner

    owner = with_store(ctx, go)
    say(f"removed key {fingerprint} of {owner}")
    say(LIVE_NOTE)
