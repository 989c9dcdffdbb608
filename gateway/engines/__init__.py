"""Container engines: the :class:`Engine` protocol and, today, one Docker implementation.

Importing this package loads no engine client library: :class:`DockerEngine` (aiodocker,
aiohttp) is imported on first use, so rooms that only type against :class:`Engine` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.engines.base import Container, Engine, ExecStream

if TYPE_CHECKING:
    from gateway.engines.docker import DockerEngine

__all__ = ["Container", "DockerEngine", "Engine", "ExecStream"]


def __getattr__(name: str) -> Any:
    if name == "DockerEngine":
        from gateway.engines.docker import DockerEngine

        return DockerEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
