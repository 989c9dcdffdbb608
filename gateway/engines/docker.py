"""The Docker engine: client pool, container directory and exec streams.

aiodocker/aiohttp exceptions never leave this module: they become
:class:`~gateway.errors.EngineUnavailable`, :class:`~gateway.errors.NoSuchContainer` or
:class:`~gateway.errors.ExecFailed`.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import aiodocker
import aiohttp

from gateway.engines.archive import DockerArchiveStream, stat_from_header
from gateway.engines.attach import AttachError, AttachProtocol, start_attached
from gateway.engines.base import (
    STDERR,
    STDOUT,
    ArchivePathError,
    ArchiveReader,
    Container,
    EngineState,
    ExecOptions,
    ExecStream,
    PathStat,
    RunOptions,
    TLSFiles,
    container_gone_text,
)
from gateway.errors import EngineUnavailable, ExecFailed, NoSuchContainer

log = logging.getLogger(__name__)

__all__ = ["STDERR", "STDOUT", "Container", "DockerEngine", "DockerExecStream", "ExecStream"]

# Archive transfers may stream for long; only connecting and silence are timed.
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
# dockerd compresses archives on the fly unless told not to (FACTS: 50 vs 390 MB/s).
_IDENTITY = {"Accept-Encoding": "identity"}
# The events stream is quiet for long; only connecting is timed (a fleet pings besides).
_EVENTS_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)


def _path_param(path: bytes) -> dict[str, str]:
    return {"path": path.decode("utf-8", "surrogateescape")}


def _container_from_inspect(data: Mapping[str, Any]) -> Container:
    cfg = data.get("Config") or {}
    state = data.get("State") or {}
    status = str(state.get("Status") or ("running" if state.get("Running") else "exited"))
    if status == "running" and state.get("Paused"):
        status = "paused"
    return Container(
        id=str(data["Id"]),
        name=str(data.get("Name", "")).lstrip("/"),
        image=str(cfg.get("Image") or data.get("Image", "")),
        state=status,
        labels=dict(cfg.get("Labels") or {}),
        user=str(cfg.get("User") or ""),
        network_mode=str((data.get("HostConfig") or {}).get("NetworkMode") or ""),
        addresses=_addresses(data),
    )


def _addresses(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The container's own addresses on its networks: IPv4 first, then global IPv6."""
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    v4: list[str] = []
    v6: list[str] = []
    for net in networks.values():
        if not isinstance(net, Mapping):
            continue
        for key, out in (("IPAddress", v4), ("GlobalIPv6Address", v6)):
            addr = net.get(key)
            if isinstance(addr, str) and addr and addr not in out:
                out.append(addr)
    return (*v4, *v6)


def _container_from_list(data: Mapping[str, Any]) -> Container:
    names = data.get("Names") or [""]
    return Container(
        id=str(data["Id"]),
        name=str(names[0]).lstrip("/"),
        image=str(data.get("Image", "")),
        state=str(data.get("State", "")),
        labels=dict(data.get("Labels") or {}),
    )


def _tls_failure(exc: BaseException) -> str:
    """``: TLS certificate not trusted (why)`` or ``: TLS handshake failed (why)`` when ``exc``
    or what it was raised from is a TLS error (aiodocker raises its 900 in an ``except``);
    otherwise empty."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, aiohttp.ClientConnectorCertificateError):
            seen = seen.certificate_error
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f": TLS certificate not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f": TLS handshake failed ({seen.reason or seen})"
        seen = seen.__cause__ or seen.__context__
    return ""


def _docker_message(exc: aiodocker.DockerError) -> str:
    msg = exc.message if isinstance(exc.message, str) else str(exc.message)
    return msg.strip() or f"HTTP {exc.status}"


class DockerExecStream:
    """One process running inside a container (see :class:`~gateway.engines.base.ExecStream`).

    A read returns everything of one stream that has arrived, joined. Backpressure: the socket
    is paused while the adaptive read-ahead is waiting to be read (:mod:`gateway.engines.attach`).
    """

    def __init__(
        self, engine: DockerEngine, exec_id: str, stream: AttachProtocol, tty: bool
    ) -> None:
        self.engine = engine
        self.exec_id = exec_id
        self.tty = tty
        self._stream = stream
        self._eof_sent = False
        self._closed = False
        self.exit_code: int | None = None

    def __repr__(self) -> str:
        if self.exit_code is not None:
            state = f"EXITED {self.exit_code}"
        elif self._closed:
            state = "CLOSED"
        elif self._eof_sent:
            state = "INPUT CLOSED"
        else:
            state = "OPEN"
        kind = ", TTY" if self.tty else ""
        return f"<{type(self).__name__} {self.exec_id[:12]} [{state}{kind}]>"

    async def read(self) -> tuple[int, bytes] | None:
        return await self._stream.read()

    async def write(self, data: bytes) -> None:
        if self._closed or self._eof_sent:
            return
        try:
            await self._stream.write(data)
        except OSError:
            raise EngineUnavailable("the process's input is closed") from None

    def write_eof(self) -> None:
        """Half-close stdin: the process sees EOF and its output keeps flowing.

        Never call this on a TTY exec (dockerd would cut the output).
        """
        if self._eof_sent or self._closed or self.tty:
            return
        self._eof_sent = True
        self._stream.write_eof()

    async def resize(self, rows: int, cols: int) -> bool:
        """Set the TTY size; False when the exec is not ready yet or already gone."""
        if not self.tty or rows <= 0 or cols <= 0:
            return True
        try:
            await self.engine.resize_exec(self.exec_id, rows, cols)
            return True
        except EngineUnavailable:
            return False

    async def wait(self, timeout: float = 10.0) -> int:
        """The exit code, once the process has ended (call after the output ended)."""
        if self.exit_code is not None:
            return self.exit_code
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            info = await self.engine.inspect_exec(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                self.exit_code = int(info["ExitCode"])
                return self.exit_code
            if time.monotonic() > deadline:
                raise EngineUnavailable("the container did not report an exit status")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stream.close()


def _tcp_target(host: str, ctx: ssl.SSLContext | None) -> dict[str, Any]:
    """Where exec streams connect for ``tcp://HOST[:PORT]`` (HOST may be ``[IPv6]``; port 2375)."""
    rest = host.removeprefix("tcp://").split("/", 1)[0]
    if rest.startswith("["):
        addr, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        addr, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return {"host": addr, "port": int(port or 2375), "ssl_context": ctx}


class DockerEngine:
    """A pool of connections to one Docker engine."""

    def __init__(
        self,
        host: str | None = None,
        tls_verify: bool | None = None,
        cert_path: Path | None = None,
        *,
        tls_files: TLSFiles | None = None,
    ) -> None:
        self._host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self._tls_files = tls_files
        self._tls_verify = tls_verify
        self._cert_path = cert_path
        self._docker: aiodocker.Docker | None = None
        self._connector: aiohttp.BaseConnector | None = None
        # Where exec streams connect (filled in with the client).
        self._attach_to: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return self._host

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = self._make_client()
        return self._docker

    def _make_client(self) -> aiodocker.Docker:
        host = self._host
        # The default connectors cap the pool at 100; every attached exec holds a connection.
        if host.startswith("unix://"):
            path = host.removeprefix("unix://")
            self._attach_to = {"unix_path": path}
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=path, limit=0)
            self._connector = connector
            return aiodocker.Docker(url="unix://localhost", connector=connector)
        if host.startswith("tcp://") and self._tls_files is not None:
            ctx = self._tls_files.context()
            self._attach_to = _tcp_target(host, ctx)
            self._connector = aiohttp.TCPConnector(ssl=ctx, limit=0)
            return aiodocker.Docker(
                url="https://" + host.removeprefix("tcp://"), connector=self._connector
            )
        if host.startswith("tcp://"):
            verify = self._tls_verify
            if verify is None:
                verify = os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
            cert_dir = self._cert_path or (
                Path(os.environ["DOCKER_CERT_PATH"]) if os.environ.get("DOCKER_CERT_PATH") else None
            )
            if verify or cert_dir is not None:
                ctx = ssl.create_default_context(
                    cafile=str(cert_dir / "ca.pem") if cert_dir else None
                )
                if cert_dir is not None:
                    ctx.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
                if not verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                url = "https://" + host.removeprefix("tcp://")
                self._attach_to = _tcp_target(host, ctx)
                self._connector = aiohttp.TCPConnector(ssl=ctx, limit=0)
                return aiodocker.Docker(url=url, connector=self._connector)
            url = "http://" + host.removeprefix("tcp://")
            self._attach_to = _tcp_target(host, None)
            self._connector = aiohttp.TCPConnector(limit=0)
            return aiodocker.Docker(url=url, connector=self._connector)
        raise EngineUnavailable(f"unsupported Docker endpoint {host!r} (use unix:// or tcp://)")

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            try:
                await docker.close()
            except Exception as exc:
                log.debug("docker client close: %r", exc)
        if self._connector is not None:
            connector, self._connector = self._connector, None
            await connector.close()

    # Low-level request helper ------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"Docker engine unreachable at {self._host}: {exc.__class__.__name__}"
            + _tls_failure(exc)
        )

    def _error(self, op: str, exc: aiodocker.DockerError) -> EngineUnavailable:
        """One clear line for an engine failure; connection trouble names the endpoint only."""
        message = _docker_message(exc)
        if exc.status >= 900 or "Cannot connect" in message:
            return EngineUnavailable(
                f"Docker engine unreachable at {self._host}{_tls_failure(exc)}"
            )
        return EngineUnavailable(f"Docker engine error ({op}): {message}")

    async def _json(
        self,
        op: str,
        path: str,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        data: Any = None,
    ) -> Any:
        try:
            return await self._client()._query_json(path, method=method, params=params, data=data)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise
            raise self._error(op, exc) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from None

    # Engine -----------------------------------------------------------------------------

    async def ping(self) -> None:
        try:
            async with self._client()._query("_ping") as resp:
                await resp.read()
        except aiodocker.DockerError as exc:
            raise self._error("ping", exc) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from None

    async def version(self) -> str:
        """The engine's version (``/version``), e.g. ``24.0.7``."""
        data = await self._json("version", "version")
        return str(data.get("Version") or "?") if isinstance(data, Mapping) else "?"

    async def events(self) -> AsyncGenerator[dict[str, Any]]:
        """The engine's container events (``/events``) as they come, until the stream ends.

        Raises :class:`~gateway.errors.EngineUnavailable` when the stream cannot be opened or
        breaks; a line that is not a JSON object is skipped.
        """
        filters = json.dumps({"type": ["container"]})
        cm = self._client()._query("events", params={"filters": filters}, timeout=_EVENTS_TIMEOUT)
        try:
            resp = await cm.__aenter__()
        except aiodocker.DockerError as exc:
            raise self._error("events", exc) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from None
        try:
            while True:
                try:
                    line = await resp.content.readline()
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                    raise self._unreachable(exc) from None
                if not line:
                    return
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    yield item
        finally:
            resp.close()
            await cm.__aexit__(None, None, None)

    def states(self) -> list[EngineState]:
        """One engine, not in a fleet: nothing to report beyond ``ping``."""
        return []

    # Container directory ------------------------------------------------------------------

    async def list_containers(self, all: bool = True) -> list[Container]:
        data = await self._json("list", "containers/json", params={"all": "1" if all else "0"})
        return sorted((_container_from_list(d) for d in data), key=lambda c: c.name)

    async def resolve(self, ref: str) -> Container:
        """A container by name or unique ID prefix, like the docker CLI."""
        if not ref or "/" in ref or ref.startswith("."):
            raise NoSuchContainer(ref)
        try:
            data = await self._json("inspect", f"containers/{ref}/json")
        except aiodocker.DockerError:
            raise NoSuchContainer(ref) from None
        except EngineUnavailable as exc:
            # An ambiguous ID prefix is answered with HTTP 500 "Multiple IDs found ...".
            if "multiple ids found" in exc.user_message.lower():
                raise NoSuchContainer(ref) from None
            raise
        c = _container_from_inspect(data)
        # Docker also matches ID prefixes; unless the name matched exactly, require at least
        # 4 hex characters, so a one- to three-letter login cannot sweep IDs.
        if ref != c.name and not (c.id.startswith(ref) and len(ref) >= 4):
            raise NoSuchContainer(ref)
        return c

    # Exec ---------------------------------------------------------------------------------

    async def exec(
        self, container_id: str, argv: Sequence[str], **opts: Unpack[ExecOptions]
    ) -> DockerExecStream:
        """Start ``argv`` in the container and attach to it."""
        tty = opts.get("tty", False)
        body: dict[str, Any] = {
            "AttachStdin": opts.get("stdin", True),
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
            "Cmd": list(argv),
            "Env": [f"{k}={v}" for k, v in (opts.get("env") or {}).items()],
            "User": opts.get("user", ""),
            "WorkingDir": opts.get("workdir") or "",
        }
        try:
            created = await self._json(
                "exec_create",
                f"containers/{container_id}/exec",
                method="POST",
                data=body,
            )
        except aiodocker.DockerError as exc:
            raise NoSuchContainer(container_id[:12]) from exc
        except EngineUnavailable as exc:
            if container_gone_text(exc.user_message):
                raise ExecFailed("container is not running") from None
            raise
        exec_id = str(created["Id"])
        try:
            stream = await start_attached(
                asyncio.get_running_loop(), exec_id, tty, **self._attach_to
            )
        except AttachError as exc:
            if container_gone_text(exc.message):
                raise ExecFailed("container is not running") from None
            raise ExecFailed(f"cannot start process: {exc.message}") from None
        except (TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None
        return DockerExecStream(self, exec_id, stream, tty)

    async def inspect_exec(self, exec_id: str) -> dict[str, Any]:
        try:
            data = await self._json("exec_inspect", f"exec/{exec_id}/json")
        except aiodocker.DockerError:
            raise EngineUnavailable("the process vanished from the engine") from None
        return dict(data)

    async def resize_exec(self, exec_id: str, rows: int, cols: int) -> None:
        try:
            async with self._client()._query(
                f"exec/{exec_id}/resize", method="POST", params={"h": rows, "w": cols}
            ) as resp:
                await resp.read()
        except aiodocker.DockerError as exc:
            raise EngineUnavailable(f"resize: {_docker_message(exc)}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise EngineUnavailable(f"resize: {exc.__class__.__name__}") from None

    async def run(
        self, container_id: str, argv: Sequence[str], **opts: Unpack[RunOptions]
    ) -> tuple[int, bytes, bytes]:
        """Run a short command to completion: (exit code, stdout, stderr).

        Output is kept up to ``limit`` bytes per stream, and the command gets ``timeout``
        seconds: a tool in the image that never stops talking cannot hold the gateway.
        """
        input = opts.get("input")
        limit = opts.get("limit", 1 << 20)
        timeout = opts.get("timeout", 30.0)
        st = await self.exec(container_id, argv, user=opts.get("user", ""), stdin=input is not None)
        try:
            async with asyncio.timeout(timeout):
                if input is not None:
                    if input:
                        await st.write(input)
                    st.write_eof()
                out = bytearray()
                err = bytearray()
                while (msg := await st.read()) is not None:
                    kind, data = msg
                    buf = out if kind == STDOUT else err
                    if len(buf) < limit:
                        buf += data[: limit - len(buf)]
                code = await st.wait()
        except TimeoutError:
            raise ExecFailed(f"{argv[0]}: did not finish within {timeout:g} s") from None
        finally:
            await st.close()
        return code, bytes(out), bytes(err)

    # Archive API (files of a container without a process in it) ---------------------------

    async def archive_stat(self, container_id: str, path: bytes) -> PathStat:
        """The engine's lstat of ``path`` (``HEAD``; links are resolved by the engine)."""
        docker = self._client()
        try:
            # Not through aiodocker's query helper: it cannot read the empty body of a HEAD error.
            await docker._check_version()
            url = docker._canonicalize_url(f"containers/{container_id}/archive")
            async with docker.session.head(url, params=_path_param(path)) as resp:
                status = resp.status
                header = resp.headers.get("X-Docker-Container-Path-Stat", "")
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        if status == 404:
            raise ArchivePathError(errno.ENOENT)
        if status != 200:
            raise ArchivePathError(errno.EIO, f"the engine answered HTTP {status}")
        try:
            return stat_from_header(header)
        except ValueError:
            raise ArchivePathError(errno.EIO, "unexpected answer from the engine") from None

    async def archive_get(self, container_id: str, path: bytes) -> ArchiveReader:
        """A tar stream of ``path`` (``GET``); the caller closes it."""
        cm = self._client()._query(
            f"containers/{container_id}/archive",
            method="GET",
            params=_path_param(path),
            headers=_IDENTITY,
            timeout=_STREAM_TIMEOUT,
        )
        try:
            resp = await cm.__aenter__()
        except aiodocker.DockerError as exc:
            raise ArchivePathError(errno.ENOENT if exc.status == 404 else errno.EIO) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        return DockerArchiveStream(resp, cm)

    async def archive_put(
        self, container_id: str, folder: bytes, body: AsyncIterator[bytes]
    ) -> None:
        """Unpack the tar ``body`` into the directory ``folder`` (``PUT``)."""
        try:
            async with self._client()._query(
                f"containers/{container_id}/archive",
                method="PUT",
                params=_path_param(folder),
                data=body,
                headers={"Content-Type": "application/x-tar", **_IDENTITY},
                timeout=_STREAM_TIMEOUT,
            ) as resp:
                await resp.read()
        except aiodocker.DockerError as exc:
            raise ArchivePathError.from_status(exc.status, str(exc.message)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
