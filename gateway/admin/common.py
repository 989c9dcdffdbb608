"""Who makes a change, its audit event, and the JSON form of records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.store import Store


@dataclass(frozen=True)
class Actor:
    """Who makes an administrative change: the person running the CLI (their login name), or
    an API token (``token:NAME``) and the client's address."""

    name: str
    remote: str | None = None


async def record(store: Store, actor: Actor, action: str, **detail: Any) -> None:
    """Record one administrative change (never pass a password or a token here)."""
    cols: dict[str, Any] = {}
    if isinstance(detail.get("user"), str):
        cols["user_name"] = detail["user"]
    if actor.remote:
        cols["remote_addr"] = actor.remote
    await store.add_audit_event(
        "admin", actor=actor.name, detail={"action": action, **detail}, **cols
    )


def pick(record: object, spec: str) -> dict[str, Any]:
    """A record's JSON form: ``spec`` lists its keys, space-separated, in order; ``key=attr``
    reads another attribute under that key (``remote=remote_addr``)."""
    doc: dict[str, Any] = {}
    for item in spec.split():
        key, _, attr = item.partition("=")
        doc[key] = getattr(record, attr or key)
    return doc
