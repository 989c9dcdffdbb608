"""Limits for peers that have not authenticated yet (pure: stdlib only, clock and dice injected).

Anyone who can reach the SSH port can open connections and try passwords. asyncssh limits none
of it (no MaxStartups, no MaxAuthTries), and every password check costs the gateway an argon2
verification (64 MiB, tens of milliseconds of CPU). These pieces keep what an unauthenticated
peer can make the gateway hold or do bounded; ``gateway.ssh.server`` wires them in:

- :func:`parse_max_startups` and :class:`StartupGate`: OpenSSH's ``MaxStartups start:rate:full``
  over all unauthenticated connections, plus a cap per source address.
- :class:`AuthTries`: failed attempts on one connection (OpenSSH's ``MaxAuthTries``).
- :class:`FailureThrottle`: growing delays after failed passwords, per source and per user name.
  The delay is an ``asyncio.sleep`` of the attacker's own connection, never a thread or a hash.
- :class:`FailureDigest`: audit events of failed logins, at most a few per source and minute;
  the rest are summed into one event with a count.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from gateway.errors import InvalidInput

# --- MaxStartups ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Startups:
    """OpenSSH's ``MaxStartups``: accept below ``start``; from ``start`` refuse ``rate`` % of new
    connections, rising linearly to 100 % at ``full``; refuse all at or above ``full``."""

    start: int
    rate: int
    full: int


def parse_max_startups(text: str) -> Startups:
    """``start:rate:full``, or a bare ``N`` meaning ``N:100:N`` (as OpenSSH reads it)."""
    raw = str(text).strip()
    parts = raw.split(":")
    try:
        if len(parts) == 1:
            n = int(parts[0])
            start, rate, full = n, 100, n
        elif len(parts) == 3:
            start, rate, full = (int(p) for p in parts)
        else:
            raise ValueError
    except ValueError:
        raise InvalidInput(
            f"max_startups must be START:RATE:FULL or N (for example 100:30:300), not {raw!r}"
        ) from None
    if start < 1 or full < start or not 0 <= rate <= 100:
        raise InvalidInput(
            f"max_startups {raw!r}: need 1 <= START <= FULL and RATE between 0 and 100"
        )
    return Startups(start, rate, full)


class StartupGate:
    """Counts unauthenticated connections, globally and per source address, and decides whether
    a new one may start. ``chance`` returns a float in [0, 1) (``random.random``; injected so
    tests are deterministic)."""

    def __init__(
        self,
        startups: Startups,
        per_source: int,
        chance: Callable[[], float] = random.random,
    ) -> None:
        if per_source < 1:
            raise InvalidInput("max_startups_per_source must be at least 1")
        self.startups = startups
        self.per_source = per_source
        self._chance = chance
        self._by_source: dict[str, int] = {}
        self.count = 0

    def refusal(self, source: str) -> str | None:
        """Why a new connection from ``source`` must be refused ("per_source", "startups"), or
        None when it may start. Does not count it: call :meth:`enter` for that."""
        if self._by_source.get(source, 0) >= self.per_source:
            return "per_source"
        s = self.startups
        if self.count >= s.full:
            return "startups"
        if self.count < s.start:
            return None
        # Between start and full: refuse with a probability that rises linearly from rate %
        # (at start) to 100 % (at full), as OpenSSH's drop_connection() does.
        p = s.rate + (100 - s.rate) * (self.count - s.start) / (s.full - s.start)
        return "startups" if self._chance() * 100 < p else None

    def enter(self, source: str) -> str | None:
        """Ask for a slot: None and counted when it may start, else the reason it may not."""
        reason = self.refusal(source)
        if reason is None:
            self.count += 1
            self._by_source[source] = self._by_source.get(source, 0) + 1
        return reason

    def move(self, held: str, source: str) -> str | None:
        """A counted connection's source becomes known (the PROXY protocol's header): its slot
        leaves ``held``; under ``source`` it needs room below the per-source cap only (it was
        admitted already). None when it may go on, else "per_source" (the slot is free then)."""
        self.leave(held)
        if self._by_source.get(source, 0) >= self.per_source:
            return "per_source"
        self.count += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        return None

    def leave(self, source: str) -> None:
        """The connection authenticated or closed: its slot is free again."""
        n = self._by_source.get(source, 0)
        if n <= 0:
            return
        self.count -= 1
        if n == 1:
            del self._by_source[source]
        else:
            self._by_source[source] = n - 1

    def from_source(self, source: str) -> int:
        return self._by_source.get(source, 0)

    @property
    def sources(self) -> int:
        return len(self._by_source)


# --- MaxAuthTries --------------------------------------------------------------------------


class AuthTries:
    """Failed authentication attempts on one connection, counted as OpenSSH counts them.

    The server reports each check it makes (:meth:`password`, :meth:`key`) and each failure
    answer it is about to send (:meth:`failure`); :meth:`failure` then says whether the limit
    is reached (disconnect instead of answering).

    - A password check counts when it starts: a client that replaces a pending check by a new
      request (asyncssh cancels the first) still made the gateway do one.
    - A public key that is not accepted counts once per distinct key: asyncssh asks the server
      the same question for a query without signature and for a signed attempt, so the two
      cannot be told apart, and an agent offering its keys one after another is normal.
    - An accepted key whose signature then fails counts (asyncssh checks it after us).
    - A request that reached no check ("none", an unsupported method) counts, except the first
      (every client starts with "none").
    """

    def __init__(self, max_tries: int) -> None:
        if max_tries < 1:
            raise InvalidInput("max_auth_tries must be at least 1")
        self.max_tries = max_tries
        self.failures = 0
        self._keys: set[str] = set()
        self._last: tuple[str, str, bool] | None = None
        self._free_nocheck = True

    @property
    def exhausted(self) -> bool:
        return self.failures >= self.max_tries

    def password(self) -> bool:
        """A password check starts. False: the limit is already reached; do not check."""
        self._last = ("password", "", False)
        if self.exhausted:
            return False
        self.failures += 1
        return True

    def key(self, fingerprint: str, accepted: bool) -> None:
        """A public key was looked at (accepted: it may log in, if its signature holds)."""
        self._last = ("key", fingerprint, accepted)

    def failure(self) -> bool:
        """A failure answer is about to be sent. True: the limit is reached."""
        last, self._last = self._last, None
        if last is None:
            if self._free_nocheck:
                self._free_nocheck = False
            else:
                self.failures += 1
        elif last[0] == "key":
            _, fingerprint, accepted = last
            if accepted:
                self.failures += 1  # the key is ours, its signature was not
            elif fingerprint not in self._keys:
                self._keys.add(fingerprint)
                self.failures += 1
        # a password was counted when its check started
        return self.exhausted


# --- failure throttle ----------------------------------------------------------------------


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


@dataclass(kw_only=True, eq=False)
class FailureThrottle:
    """Growing delays after failures, per key (a source address, a user name).

    The first ``free`` failures of a key cost nothing; each further one doubles the delay,
    starting at ``base`` seconds, up to ``cap``. A key forgets its failures after ``forget``
    quiet seconds. At most ``max_keys`` keys are tracked; the one least recently failed goes
    first (an attacker who floods the table only forgets their own oldest entries).
    """

    free: int = 3
    base: float = 0.5
    cap: float = 4.0
    forget: float = 300.0
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _keys: OrderedDict[Hashable, _Failures] = field(default_factory=OrderedDict, init=False)

    def __post_init__(self) -> None:
        if self.free < 0 or self.base <= 0 or self.cap < self.base:
            raise ValueError("bad failure throttle parameters")
        if self.forget <= 0 or self.max_keys < 1:
            raise ValueError("bad failure throttle parameters")

    def __len__(self) -> int:
        return len(self._keys)

    def _count(self, key: Hashable, now: float) -> int:
        entry = self._keys.get(key)
        if entry is None:
            return 0
        if now - entry.last >= self.forget:
            del self._keys[key]
            return 0
        return entry.count

    def delay_for(self, failures: int) -> float:
        """Seconds to wait before the next attempt after ``failures`` failures."""
        over = failures - self.free
        if over <= 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(over - 1, 32))

    def delay(self, *keys: Hashable) -> float:
        """The delay before the next attempt: the largest of the keys' delays."""
        now = self.clock()
        return max((self.delay_for(self._count(k, now)) for k in keys), default=0.0)

    def failed(self, *keys: Hashable) -> None:
        """One more failure for each key."""
        now = self.clock()
        for key in keys:
            count = self._count(key, now) + 1
            self._keys[key] = _Failures(count, now)
            self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)


# --- audit digest of failed logins ---------------------------------------------------------


@dataclass(slots=True)
class Digest:
    """Failed logins from one source held back in one window: written as one audit event."""

    source: str
    first: float  # clock time of the window's start
    count: int = 0  # failed attempts held back
    users: list[str] = field(default_factory=list)  # the first few user names tried
    methods: set[str] = field(default_factory=set)


@dataclass(kw_only=True, eq=False)
class FailureDigest:
    """Which failed-login audit events are written as they happen, and which are summed.

    Per source address and ``window`` seconds, the first ``direct`` events are written as they
    are; later ones are added to the source's :class:`Digest` (a count, the first
    ``max_users`` user names, the methods), which is written as one event once the window has
    passed (:meth:`due`) or at shutdown (:meth:`drain`). At most ``max_sources`` sources are
    tracked; when one more comes, the oldest is handed out early (:meth:`admit` returns it).
    """

    clock: Callable[[], float] = time.monotonic
    direct: int = 3
    window: float = 60.0
    max_users: int = 8
    max_sources: int = 4096
    # source -> (window start, events written directly in it, digest of the rest)
    _sources: OrderedDict[str, tuple[float, int, Digest | None]] = field(
        default_factory=OrderedDict, init=False
    )

    def __post_init__(self) -> None:
        if self.direct < 0 or self.window <= 0 or self.max_users < 0 or self.max_sources < 1:
            raise ValueError("bad failure digest parameters")

    def __len__(self) -> int:
        return len(self._sources)

    def admit(
        self, source: str, user: str | None, method: str, count: int = 1
    ) -> tuple[bool, list[Digest]]:
        """One failure event (standing for ``count`` attempts) from ``source``.

        Returns (write it now?, digests that must be written now: windows that ended or
        sources evicted to keep the table bounded).
        """
        now = self.clock()
        out = self.due(now)
        entry = self._sources.get(source)
        if entry is None:
            entry = (now, 0, None)  # a new window: kept in the order windows start
        start, written, digest = entry
        write = written < self.direct
        if write:
            written += 1
        else:
            if digest is None:
                digest = Digest(source, start)
            digest.count += count
            if user and user not in digest.users and len(digest.users) < self.max_users:
                digest.users.append(user)
            digest.methods.add(method)
        self._sources[source] = (start, written, digest)
        out += self._evict()
        return write, out

    def _evict(self) -> list[Digest]:
        out: list[Digest] = []
        while len(self._sources) > self.max_sources:
            _, (_, _, digest) = self._sources.popitem(last=False)
            if digest is not None:
                out.append(digest)
        return out

    def due(self, now: float | None = None) -> list[Digest]:
        """Digests whose window has passed (their sources start a new window)."""
        now = self.clock() if now is None else now
        out: list[Digest] = []
        # Sources are kept in the order their windows started: stop at the first open one.
        while self._sources:
            source, (start, _, digest) = next(iter(self._sources.items()))
            if now - start < self.window:
                break
            del self._sources[source]
            if digest is not None:
                out.append(digest)
        return out

    def next_due(self) -> float | None:
        """Clock time at which the oldest held-back digest is due, if any is held back."""
        for start, _, digest in self._sources.values():
            if digest is not None:
                return start + self.window
        return None

    def drain(self) -> list[Digest]:
        """Every held-back digest (at shutdown); the table is empty afterwards."""
        out = [d for _, _, d in self._sources.values() if d is not None]
        self._sources.clear()
        return out
