"""Readiness, as ``/readyz`` and ``/metrics`` report it: the database and the engines answer.

:meth:`Health.check_ready` pings the database and the engine (each within 3 s, cached for 1 s)
and sets ``sshgw_dependency_up``, ``sshgw_ready`` and, per configured engine,
``sshgw_engine_up`` / ``sshgw_engine_containers`` (the series of a removed engine go with it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.engines import Engine
from gateway.engines.base import EngineState
from gateway.errors import GatewayError
from gateway.observe.metrics import Metrics

Ping = Callable[[], Awaitable[None]]


class Health:
    """The readiness checks of one gateway."""

    def __init__(self, db_ping: Ping, engine: Engine, metrics: Metrics) -> None:
        self._db_ping = db_ping
        self.engine = engine
        self.metrics = metrics
        self._ready_cache: tuple[float, list[str]] | None = None
        self._engine_labels: set[str] = set()

    async def check_ready(self) -> list[str]:
        """Problems that make the gateway not ready (empty list: ready). Cached for 1 s."""
        now = time.monotonic()
        if self._ready_cache is not None and now - self._ready_cache[0] < 1.0:
            return self._ready_cache[1]
        db, docker = await asyncio.gather(
            _probe("database", self._db_ping), _probe("docker", self.engine.ping)
        )
        problems = [p for p in (db, docker) if p]
        m = self.metrics
        m.dependency_up.labels(dependency="database").set(0 if db else 1)
        m.dependency_up.labels(dependency="docker").set(0 if docker else 1)
        m.ready.set(0 if problems else 1)
        self._engine_metrics()
        self._ready_cache = (time.monotonic(), problems)
        return problems

    def engine_lines(self) -> list[str]:
        """``/readyz``'s line per configured engine (none for the local default engine)."""
        return [
            f"engine {s.name}: {s.state}"
            + (f" ({s.version}, {s.containers} containers)" if s.state == "up" else "")
            + (f": {s.error}" if s.error and s.state != "up" else "")
            for s in self._engine_states()
        ]

    async def exposition(self) -> bytes:
        """``/metrics``: the readiness gauges brought up to date first."""
        await self.check_ready()
        return self.metrics.exposition()

    def _engine_states(self) -> list[EngineState]:
        states = getattr(self.engine, "states", None)  # test doubles may have ping only
        return states() if states is not None else []

    def _engine_metrics(self) -> None:
        """One series per engine in the fleet; those of removed engines go."""
        m = self.metrics
        seen = set()
        for s in self._engine_states():
            seen.add(s.name)
            m.engine_up.labels(engine=s.name).set(1 if s.state == "up" else 0)
            m.engine_containers.labels(engine=s.name).set(s.containers)
        for name in self._engine_labels - seen:
            m.engine_up.remove(name)
            m.engine_containers.remove(name)
        self._engine_labels = seen


async def _probe(name: str, ping: Ping) -> str:
    try:
        async with asyncio.timeout(3.0):
            await ping()
    except TimeoutError:
        return f"{name}: no answer within 3 s"
    except GatewayError as exc:
        return f"{name}: {exc.user_message}"
    except Exception as exc:
        return f"{name}: {exc.__class__.__name__}"
    return ""


__all__ = ["Health"]
