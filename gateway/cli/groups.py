"""``sshgw group ...``: groups of users, to grant access to many at once."""

from __future__ import annotations

import typer

from gateway.cli.common import change, with_store
from gateway.cli.show import JsonOpt, fmt_time, print_json, say, table
from gateway.store import GroupInfo

app = typer.Typer(help="Groups: add, list, remove, member add|remove.")
member_app = typer.Typer(help="Group membership: add, remove.")
app.add_typer(member_app, name="member")


@app.command("add")
def add(ctx: typer.Context, name: str) -> None:
    """Add a group."""
    change(ctx, lambda store: store.add_group(name), "group.add", group=name)
    say(f"added group {name}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups with their members."""
    groups: list[GroupInfo] = with_store(ctx, lambda store: store.list_groups())
    if as_json:
        print_json(
            [
                {"name": g.name, "members": list(g.members), "created_at": g.created_at}
                for g in groups
            ]
        )
        return
    table(
        ["NAME", "MEMBERS", "CREATED"],
        ([g.name, ",".join(g.members) or "-", fmt_time(g.created_at)] for g in groups),
    )


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a group with its memberships and grants."""
    change(ctx, lambda store: store.remove_group(name), "group.remove", group=name)
    say(f"removed group {name}")


@member_app.command("add")
def member_add(ctx: typer.Context, group: str, user: str) -> None:
    """Add USER to GROUP."""
    change(
        ctx, lambda store: store.add_member(group, user), "group.member.add", group=group, user=user
    )
    say(f"added {user} to group {group}")


@member_app.command("remove")
def member_remove(ctx: typer.Context, group: str, user: str) -> None:
    """Remove USER from GROUP."""
    change(
        ctx,
        lambda store: store.remove_member(group, user),
        "group.member.remove",
        group=group,
        user=user,
    )
    say(f"removed {user} from group {group}")
