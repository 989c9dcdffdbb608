"""What the SSH room shares: the process-wide :class:`Gateway`, the authenticated
:class:`Identity`, the owner of background tasks, and one session's :class:`SessionContext`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.routing import Target
from gateway.ssh.admission import Limits
from gateway.vocab import SessionKind

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.engines import Container, Engine
    from gateway.observe import Observer, SessionTrack
    from gateway.policy import Decision
    from gateway.ssh.auth import Credential
    from gateway.ssh.jump import Jumps
    from gateway.store import Store

log = logging.getLogger(__name__)


class TaskSet:
    """Owner of background tasks: every task is tracked and cancelled/awaited at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed: %r", task.get_name(), task.exception())

    async def close(self, timeout: float = 5.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)


@dataclass
class Gateway:
    """Everything a connection needs, shared by the whole process."""

    settings: Settings
    store: Store
    engine: Engine
    observer: Observer
    tasks: TaskSet = field(default_factory=TaskSet)
    motd: str | None = None
    # Set when the gateway shuts down: live sessions end their processes and say why.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    limits: Limits = field(init=False)
    # ProxyJump (gateway.ssh.jump), wired by app; None: direct-tcpip to the jump port is refused.
    jumps: Jumps | None = None

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings, self.observer, self.store)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who authenticated, and what they asked for in the login name."""

    user: str
    groups: frozenset[str]
    target: Target
    credential: Credential
    via: str | None = None  # "proxyjump": authenticated by the outer connection of a jump


class ByteReader(Protocol):
    """A session's input as the bridge reads it: an SSH channel's stdin (``asyncssh.SSHReader``)
    or the web terminal's; a terminal resize arrives as ``asyncssh.TerminalSizeChanged``."""

    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    """A session's output: ``write`` hands bytes over (copied), ``drain`` waits for room."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionContext:
    """One authorized session into a container: who, where, as whom, and its three streams."""

    ident: Identity
    kind: SessionKind  # SHELL, EXEC, SFTP or SCP
    command: str | None
    container: Container
    login: str  # the login the file server acts as (decision, image user, or root)
    decision: Decision
    track: SessionTrack
    pty: bool
    stdin: ByteReader
    stdout: ByteWriter
    stderr: ByteWriter
