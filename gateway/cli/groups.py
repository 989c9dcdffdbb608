"""``sshgw group ...``: groups of users, to grant access to many at once."""

from __future__ import annotations

import typer

from gateway.admin import groups
from gateway.admin.groups import group_view
from gateway.cli.common import actor, with_store
from gateway.cli.show import JsonOpt, fmt_time, listing, say
from gateway.store import GroupInfo

app = typer.Typer(help="Groups: add, list, remove, member add|remove.")
member_app = typer.Typer(help="Group membership: add, remove.")
app.add_typer(member_app, name="member")


@app.command("add")
def add(ctx: typer.Context, name: str) -> None:
    """Add a group."""
    with_store(ctx, lambda store: groups.add_group(store, actor(), name))
    say(f"added group {name}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups with their members."""
    found: list[GroupInfo] = with_store(ctx, lambda store: store.list_groups())
    listing(
        found,
        as_json,
        group_view,
        ["NAME", "MEMBERS", "CREATED"],
        lambda g: [g.name, ",".join(g.members) or "-", fmt_time(g.created_at)],
    )


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a group with its memberships and grants."""
    with_store(ctx, lambda store: groups.remove_group(store, actor(), name))
    say(f"removed group {name}")


@member_app.command("add")
def member_add(ctx: typer.Context, group: str, user: str) -> None:
    """Add USER to GROUP."""
    with_store(ctx, lambda store: groups.add_member(store, actor(), group, user))
    say(f"added {user} to group {group}")


@member_app.command("remove")
def member_remove(ctx: typer.Context, group: str, user: str) -> None:
    """Remove USER from GROUP."""
    with_store(ctx, lambda store: groups.remove_member(store, actor(), group, user))
    say(f"removed {user} from group {group}")
