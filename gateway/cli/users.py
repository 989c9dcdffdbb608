"""``sshgw user ...``: gateway users."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.admin import users
from gateway.admin.users import user_view, user_with_grants_view
from gateway.cli.common import LIVE_NOTE, actor, with_store
from gateway.cli.grants import grant_table
from gateway.cli.inputs import read_key_arg, read_password
from gateway.cli.show import JsonOpt, fmt_expiry, fmt_time, listing, print_json, say, table
from gateway.errors import InvalidInput
from gateway.store import UserInfo, parse_public_key

app = typer.Typer(help="Gateway users: add, list, show, disable, enable, remove, passwd.")


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
    if key_text is not None:
        parse_public_key(key_text)  # a bad key is refused before the password is asked for
    password = read_password(name) if password_stdin else None
    fp = with_store(
        ctx,
        lambda store: users.add_user(
            store, actor(), name, password=password, display=display, key=key_text
        ),
    )
    say(f"added user {name}" + (f" with key {fp}" if fp else ""))


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users."""
    found: list[UserInfo] = with_store(ctx, lambda store: store.list_users())
    listing(
        found,
        as_json,
        user_view,
        ["NAME", "DISPLAY", "STATE", "PASSWORD", "KEYS", "GROUPS", "CREATED"],
        lambda u: [
            u.name,
            u.display or "-",
            "disabled" if u.disabled else "enabled",
            "yes" if u.has_password else "no",
            str(len(u.keys)),
            ",".join(u.groups) or "-",
            fmt_time(u.created_at),
        ],
    )


@app.command("show")
def show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one user with keys, groups and the grants that apply."""
    user, grants = with_store(ctx, lambda store: users.user_and_grants(store, name))
    if as_json:
        print_json(user_with_grants_view(user, grants))
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
    with_store(ctx, lambda store: users.set_disabled(store, actor(), name, disabled))
    say(f"user {name} {'disabled' if disabled else 'enabled'}")
    if disabled:
        say(LIVE_NOTE)


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a user with their keys, memberships and grants; their open connections end."""
    with_store(ctx, lambda store: users.remove_user(store, actor(), name))
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
    password = None if clear else read_password(name)
    with_store(ctx, lambda store: users.set_password(store, actor(), name, password))
    say(f"password of {name} {'cleared' if clear else 'set'}")
