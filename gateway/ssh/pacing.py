"""Pacing of channel requests a client may send without limit (pure: no I/O, clock injected).

An SSH client can send window-change, signal, break and env requests as fast as its link
allows, and asyncssh queues every one of them. Each resize or signal costs the gateway a
Docker API call (a signal even a ``docker exec``), each env entry costs memory. The session
uses these small pieces to keep what one channel can make the gateway hold or do bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``rate`` actions per second on average, at most ``burst`` at once."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._tokens = self.burst
        self._at = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        """Take one token if there is one (True), or refuse (False)."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is there (0 when one is there now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate


@dataclass(slots=True)
class EnvBudget:
    """Environment entries taken from one channel: at most ``max_entries`` and ``max_bytes``.

    A name set again replaces its value (as a shell would) and counts once.
    """

    max_entries: int
    max_bytes: int
    _sizes: dict[bytes, int] = field(default_factory=dict)
    _total: int = 0

    def admit(self, key: bytes, value: bytes) -> bool:
        size = len(key) + len(value)
        old = self._sizes.get(key)
        entries = len(self._sizes) + (0 if old is not None else 1)
        total = self._total - (old or 0) + size
        if entries > self.max_entries or total > self.max_bytes:
            return False
        self._sizes[key] = size
        self._total = total
        return True


@dataclass(slots=True)
class EventQueueCap:
    """Events (signals, breaks) waiting for the session's reader: at most ``limit``."""

    limit: int
    pending: int = 0

    def admit(self) -> bool:
        if self.pending >= self.limit:
            return False
        self.pending += 1
        return True

    def done(self) -> None:
        if self.pending > 0:
            self.pending -= 1
