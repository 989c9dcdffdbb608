"""``ssh alice@gw``: the containers alice may reach, as text. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from gateway.policy import Grant, Subject, access
from gateway.policy import Target as PolicyTarget
from gateway.safetext import literal

if TYPE_CHECKING:
    from gateway.engines import Container

HEADER = ("CONTAINER", "IMAGE", "STATE", "RIGHTS", "LOGINS")


def listing_rows(
    subject: Subject, grants: Sequence[Grant], containers: Iterable[Container]
) -> list[tuple[str, str, str, str, str]]:
    """One row per container some live grant gives ``subject`` any right on. A name that
    more than one engine has is shown as ``NAME.ENGINE``: what the user types to reach it."""
    rows: list[tuple[str, str, str, str, str]] = []
    containers = list(containers)
    engines_of: dict[str, set[str]] = {}
    for c in containers:
        engines_of.setdefault(c.name, set()).add(c.engine)
    for c in containers:
        acc = access(subject, grants, PolicyTarget(c.name, c.id, c.labels, c.engine))
        if acc is None:
            continue
        name = f"{c.name}.{c.engine}" if len(engines_of[c.name]) > 1 else c.name
        rows.append((name, c.image, c.state, ",".join(sorted(acc.rights)), ",".join(acc.logins)))
    return rows


def render_listing(
    subject: Subject, grants: Sequence[Grant], containers: Iterable[Container], *, pty: bool
) -> bytes:
    """What the user sees; with a terminal, lines end in CR LF."""
    rows = listing_rows(subject, grants, containers)
    out = table(HEADER, rows)
    if not rows:
        out = "No containers are available to you.\n"
    else:
        user = subject.user
        out = f"Containers available to {user} (connect with ssh {user}+CONTAINER@host):\n" + out
    data = out.replace("\n", "\r\n") if pty else out
    return data.encode("utf-8", "replace")


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Columns of text; cells are shown literally (container owners choose names and images)."""
    rows = [tuple(literal(v) for v in r) for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


WEB_USAGE = "usage: ssh USER@gw web CONTAINER[+LOGIN] (a link to a terminal in your browser)"


def web_request(command: str | None) -> str | None:
    """``web CONTAINER[+LOGIN]`` (the command of a login without a container): what follows
    ``web``, "" when that is not one word; None for any other command (a listing)."""
    if command is None:
        return None
    words = command.split()
    if not words or words[0] != "web":
        return None
    return words[1] if len(words) == 2 else ""


def render_web_link(url: str, container: str, ttl: float, *, pty: bool) -> bytes:
    """What ``ssh alice@gw web web1`` prints: the link, alone on its line, and what it does."""
    out = (
        f"{url}\n"
        f"Open this link within {ttl:.0f} seconds for a terminal in {literal(container)} "
        "(it works once).\n"
    )
    return (out.replace("\n", "\r\n") if pty else out).encode("utf-8", "replace")
