"""What the gateway needs from a container engine: the :class:`Engine` protocol and its values.

Pure: no HTTP or engine library. ``containerfs``, ``sftp`` and ``ssh`` type against these names;
an implementation (:class:`~gateway.engines.docker.DockerEngine`) raises only the project's own
errors (:mod:`gateway.errors` and :class:`ArchivePathError` below), never a library's.
"""

from __future__ import annotations

import errno
import os
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, Unpack

from gateway.errors import GatewayError, NoSuchContainer

__all__ = [
    "STDERR",
    "STDOUT",
    "AmbiguousContainer",
    "ArchivePathError",
    "ArchiveReader",
    "Container",
    "Engine",
    "EngineState",
    "ExecStream",
    "PathStat",
    "TLSFiles",
    "container_gone_text",
]

# Which stream a piece of a process's output came from.
STDOUT = 1
STDERR = 2


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str
    image: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # The image's configured user ("" means root).
    user: str = ""
    # Its network: the mode ("default", "bridge", "host", "none", "container:ID", a network's
    # name) and its own addresses on its networks (IPv4, then IPv6), from inspect only.
    network_mode: str = ""
    addresses: tuple[str, ...] = ()
    # The engine it runs on ("": the local default engine, when no engine is configured).
    engine: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == "running"


# What an engine says when a process cannot start because its container is stopping or gone.
_GONE_PHRASES = (
    "not running",
    "is paused",
    "stopped state",
    "deleted state",
    "ttrpc: closed",
    "is restarting",
    "no such container",
)


def container_gone_text(text: str) -> bool:
    """True when an engine error text means the container is not running (any more)."""
    lower = text.lower()
    if any(p in lower for p in _GONE_PHRASES):
        return True
    # containerd, for a container killed a moment ago: "task <id> not found: not found".
    return "task " in lower and " not found" in lower


class AmbiguousContainer(NoSuchContainer):
    """A name or ID prefix found on more than one engine.

    Shown as "no such container" (its existence is not revealed) unless the caller narrows it
    to the candidates the user may reach (:meth:`naming`).
    """

    def __init__(self, ref: str, candidates: Sequence[Container]) -> None:
        super().__init__(ref)
        self.ref = ref
        self.candidates = tuple(candidates)

    def naming(self, visible: Sequence[Container]) -> NoSuchContainer:
        """The error to show when the user may reach ``visible`` of the candidates."""
        if not visible:
            return NoSuchContainer(self.ref)
        engines = sorted({c.engine for c in visible})
        err = AmbiguousContainer(self.ref, visible)
        err.user_message = (
            f"container {self.ref} is on more than one engine ({', '.join(engines)}): "
            f"name one as {self.ref}.ENGINE"
        )
        return err


@dataclass(frozen=True, slots=True)
class PathStat:
    """The engine's lstat of a path in a container (archive API): POSIX mode, size, mtime."""

    name: str
    size: int
    mode: int
    mtime: int
    # Where a symbolic link points, as the engine resolved it ("" when not a link).
    link_target: bytes = b""


class ArchivePathError(GatewayError):
    """The engine refused an archive operation on a path: ``code`` is an errno value."""

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(detail or os.strerror(code))
        self.code = code
        self.detail = detail

    @classmethod
    def from_status(cls, status: int, detail: str | None = None) -> ArchivePathError:
        """404 is a missing path, 403 a refused one; anything else an I/O error with ``detail``."""
        if status == 404:
            return cls(errno.ENOENT)
        if status == 403:
            return cls(errno.EACCES)
        return cls(errno.EIO, detail)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for a ``tcp://`` engine with TLS: the CA that signed the engine's certificate
    (None: the system's CAs) and the gateway's client certificate and key (None: none)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the engine's certificate and host name."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True, slots=True)
class EngineState:
    """How one engine of a fleet is doing (``/readyz``, ``sshgw engine list``)."""

    name: str
    url: str
    state: str  # "up", "down" or "starting"
    version: str = ""
    containers: int = 0
    error: str = ""


class ExecOptions(TypedDict, total=False):
    """How :meth:`Engine.exec` starts a process: as ``user`` (default: the image's), with
    ``env``, a ``tty`` or not, in ``workdir``, with ``stdin`` attached (default) or not."""

    user: str
    env: Mapping[str, str] | None
    tty: bool
    workdir: str | None
    stdin: bool


class RunOptions(TypedDict, total=False):
    """How :meth:`Engine.run` runs a short command: as ``user``, with ``input`` on its stdin
    (None: no stdin), keeping up to ``limit`` bytes of each output stream (default 1 MiB),
    for at most ``timeout`` seconds (default 30)."""

    user: str
    input: bytes | None
    limit: int
    timeout: float


class ExecStream(Protocol):
    """One process running inside a container: bytes in, bytes out, an exit code.

    Reads give ``(STDOUT|STDERR, data)`` tuples or ``None`` at the end of output.
    """

    @property
    def exec_id(self) -> str: ...

    @property
    def tty(self) -> bool: ...

    async def read(self) -> tuple[int, bytes] | None: ...

    async def write(self, data: bytes) -> None: ...

    def write_eof(self) -> None: ...

    async def resize(self, rows: int, cols: int) -> bool: ...

    async def wait(self, timeout: float = 10.0) -> int: ...

    async def close(self) -> None: ...


class ArchiveReader(Protocol):
    """A tar stream of a path in a container (archive API); close it when done."""

    async def read(self) -> bytes | None: ...

    async def close(self) -> None: ...


class Engine(Protocol):
    """A container engine: its containers, processes in them and their files (archive API).

    Errors are the project's own: :class:`~gateway.errors.EngineUnavailable`,
    :class:`~gateway.errors.NoSuchContainer`, :class:`~gateway.errors.ExecFailed` and, for
    archive paths, :class:`ArchivePathError`.
    """

    @property
    def endpoint(self) -> str: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    def states(self) -> list[EngineState]:
        """Each engine of a fleet and how it is doing; empty for a single engine."""
        ...

    async def list_containers(self, all: bool = True) -> list[Container]: ...

    async def resolve(self, ref: str) -> Container: ...

    async def exec(
        self, container_id: str, argv: Sequence[str], **opts: Unpack[ExecOptions]
    ) -> ExecStream: ...

    async def inspect_exec(self, exec_id: str) -> dict[str, Any]: ...

    async def resize_exec(self, exec_id: str, rows: int, cols: int) -> None: ...

    async def run(
        self, container_id: str, argv: Sequence[str], **opts: Unpack[RunOptions]
    ) -> tuple[int, bytes, bytes]: ...

    async def archive_stat(self, container_id: str, path: bytes) -> PathStat: ...

    async def archive_get(self, container_id: str, path: bytes) -> ArchiveReader: ...

    async def archive_put(
        self, container_id: str, folder: bytes, body: AsyncIterator[bytes]
    ) -> None: ...
