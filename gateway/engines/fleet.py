"""Many Docker engines as one :class:`~gateway.engines.base.Engine`.

With no engine configured a :class:`Fleet` is its default engine (``DOCKER_HOST`` or the local
socket), call for call. With engines configured (``sshgw engine add``; the gateway hands the
set to :meth:`Fleet.configure` whenever it reads it from the database) it serves theirs only:

- each engine has a :class:`~gateway.engines.directory.Directory` kept current from its
  ``/events`` stream (listed again whenever the stream comes back), so finding which engine
  has a container is a dictionary lookup; a miss asks the engines that answer (a container
  created a moment ago);
- a name is looked up exactly first (names may hold dots), then as ``NAME.ENGINE``
  (:func:`gateway.routing.split_qualified`); a name or ID prefix on more than one engine is
  :class:`AmbiguousContainer`, which shows as "no such container" until the caller, knowing the
  user's grants, names the engines (:meth:`AmbiguousContainer.naming`);
- a container of an engine that is down resolves with the state ``engine NAME unavailable``
  (so it is not running: sessions and listings say why, after the grants were checked); any
  other failure of that engine is an :class:`~gateway.errors.EngineUnavailable` whose public
  line is ``engine NAME unavailable``; the other engines are not touched;
- a dropped engine is reconnected with backoff (``backoff`` doubling up to ``backoff_max``).

Containers carry their engine's name (``Container.engine``); exec IDs handed out are
``ID@ENGINE``, so ``inspect_exec`` finds the engine again. Nothing outside ``engines/`` sees
more than one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Unpack

from gateway.engines.base import (
    AmbiguousContainer,
    ArchiveReader,
    Container,
    Engine,
    EngineState,
    ExecOptions,
    ExecStream,
    PathStat,
    RunOptions,
    TLSFiles,
)
from gateway.engines.directory import Directory, parse_event
from gateway.engines.docker import DockerEngine
from gateway.errors import EngineUnavailable, GatewayError, NoSuchContainer
from gateway.routing import split_qualified

log = logging.getLogger(__name__)

T = TypeVar("T")

# Containers resolved outside the directories (it was full, or an event had not come yet),
# remembered by ID so later calls find their engine.
_RECENT_MAX = 4096
# How often an engine whose events stream is open is pinged (a dead TCP peer says nothing).
PING_INTERVAL = 15.0


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """A configured engine: its name and URL, and TLS files for ``tcp://``."""

    name: str
    url: str
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tls(self) -> TLSFiles | None:
        if not (self.tls_ca or self.tls_cert or self.tls_key):
            return None
        return TLSFiles(self.tls_ca, self.tls_cert, self.tls_key)


def unavailable_state(name: str) -> str:
    """The state a container of a down engine resolves with."""
    return f"engine {name} unavailable"


def named_unavailable(name: str, exc: EngineUnavailable | None = None) -> EngineUnavailable:
    """The error for engine ``name`` being down: its public line names the engine only."""
    line = unavailable_state(name)
    err = EngineUnavailable(f"{line}: {exc.user_message}" if exc is not None else line)
    err.public = line
    return err


class _Member:
    """One configured engine: its client, directory and watcher."""

    def __init__(self, spec: EngineSpec, limit: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.engine = DockerEngine(spec.url, tls_files=spec.tls)
        self.directory = Directory(spec.name, limit)
        self.state = "starting"
        self.version = ""
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def up(self) -> bool:
        return self.state == "up"

    def snapshot(self) -> EngineState:
        return EngineState(
            self.name, self.spec.url, self.state, self.version, len(self.directory), self.error
        )


class _FleetStream:
    """An engine's exec stream whose ``exec_id`` names the engine (``ID@ENGINE``)."""

    def __init__(self, inner: ExecStream, engine: str) -> None:
        self._inner = inner
        self._id = f"{inner.exec_id}@{engine}"

    def __repr__(self) -> str:
        return f"<fleet {self._inner!r}>"

    @property
    def exec_id(self) -> str:
        return self._id

    @property
    def tty(self) -> bool:
        return self._inner.tty

    async def read(self) -> tuple[int, bytes] | None:
        return await self._inner.read()

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    def write_eof(self) -> None:
        self._inner.write_eof()

    async def resize(self, rows: int, cols: int) -> bool:
        return await self._inner.resize(rows, cols)

    async def wait(self, timeout: float = 10.0) -> int:
        return await self._inner.wait(timeout)

    async def close(self) -> None:
        await self._inner.close()


class Fleet:
    """The gateway's engine: its default engine, or the configured ones (see the module)."""

    def __init__(
        self,
        default: Engine,
        *,
        watch: bool = True,
        limit: int = 5000,
        backoff: float = 0.25,
        backoff_max: float = 5.0,
    ) -> None:
        self._default = default
        self._watch = watch
        self._limit = limit
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._members: dict[str, _Member] = {}
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._follower: asyncio.Task[None] | None = None

    # Configuration --------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        return bool(self._members)

    def names(self) -> list[str]:
        return sorted(self._members)

    async def configure(self, specs: Sequence[EngineSpec]) -> None:
        """Serve exactly ``specs`` (none: the default engine); unchanged engines keep running."""
        wanted = {s.name: s for s in specs}
        for name in list(self._members):
            if name not in wanted or wanted[name] != self._members[name].spec:
                await self._drop(self._members.pop(name))
                log.info("engine %s removed", name)
        for name, spec in sorted(wanted.items()):
            if name not in self._members:
                m = _Member(spec, self._limit)
                self._members[name] = m
                if self._watch:
                    m.task = asyncio.create_task(self._watcher(m), name=f"engine-{name}")
                log.info("engine %s added (%s)", name, spec.url)

    async def follow(
        self, source: Callable[[], Awaitable[Sequence[EngineSpec]]], interval: float
    ) -> None:
        """Serve the engines ``source`` gives now, and read them again every ``interval``
        seconds until :meth:`close` (a failed read keeps the engines as they are)."""
        await self._read(source)
        if self._follower is None and interval > 0:
            self._follower = asyncio.create_task(self._follow(source, interval), name="engines")

    async def _follow(
        self, source: Callable[[], Awaitable[Sequence[EngineSpec]]], interval: float
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._read(source)

    async def _read(self, source: Callable[[], Awaitable[Sequence[EngineSpec]]]) -> None:
        try:
            specs = await source()
        except GatewayError as exc:
            log.warning("cannot read the engines: %s", exc.user_message)
            return
        await self.configure(specs)

    async def _drop(self, m: _Member) -> None:
        if m.task is not None:
            m.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await m.task
        await m.engine.close()
        for cid in [k for k, v in self._recent.items() if v == m.name]:
            del self._recent[cid]

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        for name in list(self._members):
            await self._drop(self._members.pop(name))
        await self._default.close()

    # Watching ---------------------------------------------------------------------------------

    async def _watcher(self, m: _Member) -> None:
        delay = self._backoff
        while True:
            try:
                await self._watch_once(m)
                m.error = "the events stream ended"
            except EngineUnavailable as exc:
                m.error = exc.user_message
            except Exception as exc:  # a watcher never dies of a surprise; it says so
                log.exception("engine %s: watcher", m.name)
                m.error = exc.__class__.__name__
            if m.state == "up":
                delay = self._backoff
                log.warning("engine %s unavailable: %s", m.name, m.error)
            m.state = "down"
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)
            m.reconnects += 1

    async def _watch_once(self, m: _Member) -> None:
        events = m.engine.events()
        read = asyncio.ensure_future(anext(events, None))
        pinger: asyncio.Future[None] | None = None
        try:
            # The stream is open once the engine answered the request; list after that, so an
            # event between the listing and the stream is not lost.
            await asyncio.wait({read}, timeout=0.05)
            if read.done() and read.exception() is not None:
                read.result()  # the stream could not be opened: raises
            m.version = await m.engine.version()
            m.directory.replace_all(await m.engine.list_containers())
            m.state, m.error = "up", ""
            log.info("engine %s up (%s, %d containers)", m.name, m.version, len(m.directory))
            pinger = asyncio.ensure_future(self._pings(m))
            while True:
                await asyncio.wait({read, pinger}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    raise EngineUnavailable("no answer to a ping")
                item = read.result()
                if item is None:
                    return
                ev = parse_event(item)
                if ev is not None and m.directory.apply(ev):
                    await self._refresh(m, ev.id)
                read = asyncio.ensure_future(anext(events, None))
        finally:
            for task in (read, pinger):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                elif task is not None and not task.cancelled():
                    task.exception()  # retrieved: not logged as "never retrieved"
            with contextlib.suppress(Exception):
                await events.aclose()

    async def _pings(self, m: _Member) -> None:
        """Returns when the engine stops answering pings."""
        while True:
            await asyncio.sleep(PING_INTERVAL)
            try:
                async with asyncio.timeout(10.0):
                    await m.engine.ping()
            except (EngineUnavailable, TimeoutError):
                return

    async def _refresh(self, m: _Member, cid: str) -> None:
        try:
            c = await m.engine.resolve(cid)
        except NoSuchContainer:
            m.directory.remove(cid)
            return
        m.directory.put(c)

    def states(self) -> list[EngineState]:
        return [self._members[n].snapshot() for n in sorted(self._members)]

    # Engine: containers -----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if not self._members:
            return self._default.endpoint
        return ", ".join(f"{n}={m.spec.url}" for n, m in sorted(self._members.items()))

    async def ping(self) -> None:
        """Ready while at least one engine answers."""
        if not self._members:
            return await self._default.ping()
        if any(m.up for m in self._members.values()):
            return None
        results = await asyncio.gather(
            *(m.engine.ping() for m in self._members.values()), return_exceptions=True
        )
        if any(r is None for r in results):
            return None
        down = ", ".join(sorted(self._members))
        raise EngineUnavailable(f"no engine answers ({down})")

    async def list_containers(self, all: bool = True) -> list[Container]:
        if not self._members:
            return await self._default.list_containers(all)
        out: list[Container] = []
        for c in await asyncio.gather(*(self._listing(m) for m in self._members.values())):
            out.extend(c)
        if not all:
            out = [c for c in out if c.running]
        return sorted(out, key=lambda c: (c.name, c.engine))

    async def _listing(self, m: _Member) -> list[Container]:
        if m.task is not None and m.directory.listed and not m.directory.overflow:
            cs = m.directory.containers()
            if not m.up:
                cs = [dataclasses.replace(c, state=unavailable_state(m.name)) for c in cs]
            return cs
        try:
            return [dataclasses.replace(c, engine=m.name) for c in await m.engine.list_containers()]
        except EngineUnavailable as exc:
            m.error = exc.user_message
            return []

    async def resolve(self, ref: str) -> Container:
        """A container by exact name, ``NAME.ENGINE``, or ID prefix (see the module)."""
        if not self._members:
            return await self._default.resolve(ref)
        hits = self._find(ref)
        qualified = split_qualified(ref) if not hits else None
        if qualified is not None and qualified[1] in self._members:
            name, engine = qualified
            m = self._members[engine]
            hits = [(m, c) for c in m.directory.find(name)]
            if not hits:
                return await self._ask(m, name, ref)
        if not hits:
            hits = await self._ask_all(ref)
        if not hits:
            raise NoSuchContainer(ref)
        engines = {m.name for m, _ in hits}
        if len(engines) > 1:
            raise AmbiguousContainer(ref, [c for _, c in hits])
        if len(hits) > 1:  # an ID prefix of two containers on one engine
            raise NoSuchContainer(ref)
        m, c = hits[0]
        return await self._inspect(m, c, ref)

    def _find(self, ref: str) -> list[tuple[_Member, Container]]:
        return [(m, c) for m in self._members.values() for c in m.directory.find(ref)]

    async def _inspect(self, m: _Member, c: Container, ref: str) -> Container:
        """``c`` read afresh from its engine (labels, user, addresses)."""
        if not m.up and m.task is not None:
            return dataclasses.replace(c, state=unavailable_state(m.name))
        try:
            full = await m.engine.resolve(c.id)
        except NoSuchContainer:
            m.directory.remove(c.id)
            raise NoSuchContainer(ref) from None
        except EngineUnavailable:
            return dataclasses.replace(c, state=unavailable_state(m.name))
        full = dataclasses.replace(full, engine=m.name)
        self._remember(full, m)
        return full

    async def _ask(self, m: _Member, name: str, ref: str) -> Container:
        """``name`` on engine ``m`` when its directory does not have it."""
        if not m.up and m.task is not None:
            raise named_unavailable(m.name)
        try:
            c = await m.engine.resolve(name)
        except NoSuchContainer:
            raise NoSuchContainer(ref) from None
        except EngineUnavailable as exc:
            raise named_unavailable(m.name, exc) from None
        c = dataclasses.replace(c, engine=m.name)
        self._remember(c, m)
        return c

    async def _ask_all(self, ref: str) -> list[tuple[_Member, Container]]:
        """Every engine that answers, asked for ``ref`` (a directory miss)."""
        asked = [m for m in self._members.values() if m.up or m.task is None]

        async def one(m: _Member) -> list[tuple[_Member, Container]]:
            try:
                c = await m.engine.resolve(ref)
            except (NoSuchContainer, EngineUnavailable):
                return []
            return [(m, dataclasses.replace(c, engine=m.name))]

        found: list[tuple[_Member, Container]] = []
        for hits in await asyncio.gather(*(one(m) for m in asked)):
            found.extend(hits)
        for m, c in found:
            self._remember(c, m)
        return found

    def _remember(self, c: Container, m: _Member) -> None:
        m.directory.put(c)
        if m.directory.by_id(c.id) is not None:
            return
        self._recent[c.id] = m.name
        self._recent.move_to_end(c.id)
        while len(self._recent) > _RECENT_MAX:
            self._recent.popitem(last=False)

    def _member_of(self, container_id: str) -> _Member:
        for m in self._members.values():
            if m.directory.by_id(container_id) is not None:
                return m
        name = self._recent.get(container_id)
        if name is not None and name in self._members:
            return self._members[name]
        raise NoSuchContainer(container_id[:12])

    async def _on(self, container_id: str, call: Callable[[Engine], Awaitable[T]]) -> T:
        if not self._members:
            return await call(self._default)
        m = self._member_of(container_id)
        try:
            return await call(m.engine)
        except EngineUnavailable as exc:
            raise named_unavailable(m.name, exc) from None

    # Engine: processes and files -------------------------------------------------------------

    async def exec(
        self, container_id: str, argv: Sequence[str], **opts: Unpack[ExecOptions]
    ) -> ExecStream:
        if not self._members:
            return await self._default.exec(container_id, argv, **opts)
        m = self._member_of(container_id)
        try:
            stream = await m.engine.exec(container_id, argv, **opts)
        except EngineUnavailable as exc:
            raise named_unavailable(m.name, exc) from None
        return _FleetStream(stream, m.name)

    def _exec_member(self, exec_id: str) -> tuple[Engine, str, str]:
        raw, at, name = exec_id.rpartition("@")
        if not self._members or not at:
            return self._default, exec_id, ""
        m = self._members.get(name)
        if m is None:
            raise named_unavailable(name)
        return m.engine, raw, name

    async def inspect_exec(self, exec_id: str) -> dict[str, Any]:
        engine, raw, name = self._exec_member(exec_id)
        try:
            return await engine.inspect_exec(raw)
        except EngineUnavailable as exc:
            raise named_unavailable(name, exc) if name else exc from None

    async def resize_exec(self, exec_id: str, rows: int, cols: int) -> None:
        engine, raw, _ = self._exec_member(exec_id)
        await engine.resize_exec(raw, rows, cols)

    async def run(
        self, container_id: str, argv: Sequence[str], **opts: Unpack[RunOptions]
    ) -> tuple[int, bytes, bytes]:
        return await self._on(container_id, lambda e: e.run(container_id, argv, **opts))

    async def archive_stat(self, container_id: str, path: bytes) -> PathStat:
        return await self._on(container_id, lambda e: e.archive_stat(container_id, path))

    async def archive_get(self, container_id: str, path: bytes) -> ArchiveReader:
        return await self._on(container_id, lambda e: e.archive_get(container_id, path))

    async def archive_put(
        self, container_id: str, folder: bytes, body: AsyncIterator[bytes]
    ) -> None:
        await self._on(container_id, lambda e: e.archive_put(container_id, folder, body))


async def probe(spec: EngineSpec, timeout: float = 5.0) -> EngineState:
    """Connect to one engine once: its version and container count, or why it does not answer."""
    engine = DockerEngine(spec.url, tls_files=spec.tls)
    try:
        async with asyncio.timeout(timeout):
            version = await engine.version()
            containers = await engine.list_containers()
        return EngineState(spec.name, spec.url, "up", version, len(containers))
    except EngineUnavailable as exc:
        return EngineState(spec.name, spec.url, "down", error=exc.user_message)
    except TimeoutError:
        return EngineState(spec.name, spec.url, "down", error=f"no answer within {timeout:g} s")
    finally:
        await engine.close()
