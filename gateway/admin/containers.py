"""The containers the gateway sees on its engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.engines.base import Container


def container_view(c: Container) -> dict[str, Any]:
    return {
        "name": c.name,
        "id": c.id,
        "image": c.image,
        "state": c.state,
        "labels": dict(c.labels),
        "engine": c.engine,
    }
