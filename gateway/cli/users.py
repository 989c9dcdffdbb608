"""``sshgw user ...``: gateway users."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gateway.cli.common import LIVE_NOTE, audit, change, open_store, run, settings, with_store
from gateway.cli.grants import grant_json, grant_table
from gateway.cli.inputs import read_key_arg, read_password
from gateway.cli.show import JsonOpt, fmt_expiry, fmt_time, pick, print_json, say, table
from gateway.errors import GatewayError, InvalidInput
from gateway.policy import Grant
from gateway.store import UserInfo, hash_password, parse_public_key

app = typer.Typer(help="Gateway users: add, list, show, disable, enable, remove, passwd.")


def user_json(u: UserInfo) -> dict[str, Any]:
    return {
        **pick(u, "name display disabled password=has_password created_at"),
        "groups": list(u.groups),
        "keys": [pick(k, "fingerprint algorithm comment expires_at last_used_at") for k in u.keys],
    }


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (what goes before '+' in the login).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a password from standard input.")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="FILE_OR_TEXT", help="A public key file, '-' or key text."),
    ] = None,
    display: Annotated[str | None, typer.Option("--display", help="Display name.")] = None,
) -> None:
    """Add a user, optionally with a password and a public key."""
    key_text = read_key_arg(key) if key is not None else None
    parsed = parse_public_key(key_text) if key_text is not None else None
    password_hash = hash_password(read_password(name)) if password_stdin else None
    cfg = settings(ctx)

    async def go() -> str | None:
        async with open_store(cfg) as store:
            await store.add_user(name, password_hash=password_hash, display=display)
            await audit(
                store, "user.add", user=name, display=display, password=password_hash is not None
            )
            if parsed is None:
                return None
            try:
                fp = await store.add_key(name, parsed.public_key)
            except GatewayError:
                await store.remove_user(name)  # all or nothing
                raise
            await audit(store, "key.add", user=name, fingerprint=fp)
            return fp

    fp = run(go())
    say(f"added user {name}" + (f" with key {fp}" if fp else ""))


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users."""
    users: list[UserInfo] = with_store(ctx, lambda store: store.list_users())
    if as_json:
        print_json([user_json(u) for u in users])
        return
    table(
        ["NAME", "DISPLAY", "STATE", "PASSWORD", "KEYS", "GROUPS", "CREATED"],
        (
            [
                u.name,
                u.display or "-",
                "disabled" if u.disabled else "enabled",
                "yes" if u.has_password else "no",
                str(len(u.keys)),
                ",".join(u.groups) or "-",
                fmt_time(u.created_at),
            ]
            for u in users
        ),
    )


@app.command("show")
def show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one user with keys, groups and the grants that apply."""
    cfg = settings(ctx)

    async def go() -> tuple[UserInfo, list[Grant]]:
        async with open_store(cfg) as store:
            return await store.get_user(name), await store.grants_for(name)

    user, grants = run(go())
    if as_json:
        data = user_json(user)
        data["grants"] = [grant_json(g) for g in grants]
        print_json(data)
        return
    say(f"user:      {user.name}")
    say(f"display:   {user.display or '-'}")
    say(f"state:     {'DISABLED' if user.disabled else 'enabled'}")
    say(f"password:  {'set' if user.has_password else 'none'}")
    say(f"groups:    {', '.join(user.groups) or '-'}")
    say(f"created:   {fmt_time(user.created_at)}")
    say("")
    if user.keys:
        table(
            ["FINGERPRINT", "TYPE", "COMMENT", "EXPIRES", "LAST USED"],
            (
                [
                    k.fingerprint,
                    k.algorithm,
                    k.comment or "-",
                    fmt_expiry(k.expires_at),
                    fmt_time(k.last_used_at, "never"),
                ]
                for k in user.keys
            ),
            title="keys",
        )
    else:
        say("keys: none")
    say("")
    if grants:
        grant_table(grants, title="grants (own and through groups)")
    else:
        say("grants: none (this user can reach no container)")


@app.command("disable")
def disable(ctx: typer.Context, name: str) -> None:
    """Disable a user: no new logins or sessions; running gateways end the user's open
    connections and sessions within seconds (keys and grants are kept)."""
    _set_disabled(ctx, name, True)


@app.command("enable")
def enable(ctx: typer.Context, name: str) -> None:
    """Enable a disabled user again."""
    _set_disabled(ctx, name, False)


def _set_disabled(ctx: typer.Context, name: str, disabled: bool) -> None:
    action = "user.disable" if disabled else "user.enable"
    change(ctx, lambda store: store.set_disabled(name, disabled), action, user=name)
    say(f"user {name} {'disabled' if disabled else 'enabled'}")
    if disabled:
        say(LIVE_NOTE)


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a user with their keys, memberships and grants; their open connections end."""
    change(ctx, lambda store: store.remove_user(name), "user.remove", user=name)
    say(f"removed user {name}")
    say(LIVE_NOTE)


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    name: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the new password from standard input.")
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the password (keys only from now on).")
    ] = False,
) -> None:
    """Set (or clear) a user's password."""
    if password_stdin == clear:
        raise InvalidInput("give exactly one of --password-stdin or --clear")
    password_hash = None if clear else hash_password(read_password(name))
    change(
        ctx,
        lambda store: store.set_password(name, password_hash),
        "user.passwd",
        user=name,
        password=not clear,
    )
    say(f"password of {name} {'cleared' if clear else 'set'}")
