"""Observability: metrics, the audit trail, session recordings, health and live sessions.

The modules stand alone: :mod:`~gateway.observe.metrics` (prometheus_client),
:mod:`~gateway.observe.logs`, :mod:`~gateway.observe.recorder`, :mod:`~gateway.observe.revoke`,
:mod:`~gateway.observe.audit` (through the store) and :mod:`~gateway.observe.http` (aiohttp).
:mod:`~gateway.observe.observer` holds the :class:`Observer` that ties them together; its names
are available here too, imported on first use so that importing one light module (``logs``,
``metrics``, ``recorder``) does not pull in aiohttp, the Docker engine or the database.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.observe.observer import Observer
    from gateway.observe.revoke import LiveConn
    from gateway.observe.track import SessionInfo, SessionTrack

__all__ = [
    "LiveConn",
    "Observer",
    "SessionInfo",
    "SessionTrack",
]

_MODULE_OF = {
    "Observer": "gateway.observe.observer",
    "SessionInfo": "gateway.observe.track",
    "SessionTrack": "gateway.observe.track",
    "LiveConn": "gateway.observe.revoke",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
