"""The SSH listener behind a TCP balancer: the PROXY protocol header first, then asyncssh.

With ``SSHGW_PROXY_PROTOCOL=true``, ``app`` listens through :func:`create_proxied_server`
instead of ``asyncssh.create_server``. Each accepted socket gets a :class:`HeaderProtocol`
before asyncssh sees a byte:

- From an address in ``SSHGW_PROXY_FROM`` (a balancer) a header is required: it is read with
  :class:`gateway.ssh.proxyproto.HeaderReader` (v1 or v2), and a connection that sends none
  within ``login_timeout``, a bad one, or closes first is closed without a byte sent, with a
  log line and ``sshgw_proxy_header_refused{reason}``.
- From any other address no header is accepted: the socket goes to asyncssh at once, so its
  bytes are SSH (a header there fails as a bad SSH version line). Nobody outside the trusted
  list can claim another address.

Then an ``asyncssh.SSHServerConnection`` is made with the listener's options, the socket
transport's protocol becomes that connection, and it gets a :class:`PeerTransport`: the
socket's transport whose ``peername`` is the client's address from the header (or the
socket's own, for LOCAL / UNKNOWN headers). Everything that asks the connection or its
transport for ``peername`` — ``GatewayConnection.connection_made`` (audit, logs, metrics,
throttling, the startup gate), asyncssh's own logs — sees the client. Bytes that came after
the header are handed to the connection as its first data.

Admission: while its header is read, a connection from a balancer holds a startup slot under a
key of its own (so it counts against ``max_startups`` but the balancer's address is not capped
by ``max_startups_per_source``: every client behind it shares that address). Once the header
names the client, ``GatewayConnection.connection_made`` moves the slot to the client's address
(``Limits.enter(source, held=…)``), where the per-source cap applies as for a direct client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import asyncssh

from gateway.ssh.admission import HELD_SLOT
from gateway.ssh.context import Gateway
from gateway.ssh.proxyproto import HeaderError, HeaderReader, Network, ProxyHeader, is_trusted
from gateway.ssh.transport import TransportProxy

log = logging.getLogger(__name__)

_slot_ids = itertools.count(1)


def _remote(peer: Any) -> str:
    if not peer:
        return "-"
    host, port = str(peer[0]), peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def create_proxied_server(
    gw: Gateway,
    server_factory: Callable[[], asyncssh.SSHServer],
    host: str,
    port: int,
    trusted: tuple[Network, ...],
    **options: Any,
) -> asyncssh.SSHAcceptor:
    """Listen on ``host:port`` like ``asyncssh.create_server(server_factory, host, port,
    **options)``, with the PROXY protocol from ``trusted`` addresses."""
    loop = asyncio.get_running_loop()
    conn_options = asyncssh.SSHServerConnectionOptions(server_factory=server_factory, **options)
    login_timeout = float(options.get("login_timeout") or 120.0)

    def accept() -> HeaderProtocol:
        return HeaderProtocol(gw, conn_options, trusted, login_timeout)

    server = await loop.create_server(accept, host, port, reuse_address=True)
    return asyncssh.SSHAcceptor(server, conn_options)


class HeaderProtocol(asyncio.Protocol):
    """One accepted socket until its PROXY protocol header is read (see the module doc)."""

    def __init__(
        self,
        gw: Gateway,
        options: asyncssh.SSHServerConnectionOptions,
        trusted: tuple[Network, ...],
        timeout: float,
    ) -> None:
        self._gw = gw
        self._options = options
        self._trusted = trusted
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._reader = HeaderReader()
        self._timer: asyncio.TimerHandle | None = None
        self._slot: str | None = None
        self._remote = "-"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = _remote(peer)
        if not peer or not is_trusted(str(peer[0]), self._trusted):
            self._hand_over(None, b"")  # not a balancer: its bytes are SSH
            return
        slot = f"proxy-header#{next(_slot_ids)}"
        reason = self._gw.limits.enter(slot)
        if reason is not None:
            log.debug("refused from %s before its PROXY header (%s)", self._remote, reason)
            transport.abort()
            return
        self._slot = slot
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout, self._refuse, "missing", "none in time")

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            header = self._reader.feed(data)
        except HeaderError as exc:
            self._refuse(exc.reason, str(exc))
            return
        if header is not None:
            self._hand_over(header, self._reader.rest)

    def eof_received(self) -> bool:
        self._refuse("closed", "the peer closed before sending one")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # Gone during the header (no hand-over happened: the connection would get this call).
        if self._slot is not None:
            self._gw.observer.proxy_header_refused(
                self._remote, "closed", "the peer closed before sending one"
            )
        self._finish()

    def _refuse(self, reason: str, detail: str) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._gw.observer.proxy_header_refused(self._remote, reason, detail)
        self._finish()
        self._transport.abort()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slot is not None:
            self._gw.limits.leave(self._slot)
            self._slot = None
        self._reader = HeaderReader()  # what it held is dropped

    def _hand_over(self, header: ProxyHeader | None, rest: bytes) -> None:
        """Give the socket to a new asyncssh connection, as coming from the header's source."""
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        slot, self._slot = self._slot, None
        conn = asyncssh.SSHServerConnection(asyncio.get_running_loop(), self._options)
        extra: dict[str, Any] = {}
        if header is not None and header.source is not None:
            extra["peername"] = header.source
        if slot is not None:
            extra[HELD_SLOT] = slot
        transport.set_protocol(conn)
        conn.connection_made(PeerTransport(transport, extra) if extra else transport)
        if slot is not None and self._gw.limits.gate.from_source(slot):
            self._gw.limits.leave(slot)  # the connection did not take it over
        if rest and not transport.is_closing():
            conn.data_received(rest)


class PeerTransport(TransportProxy):
    """A socket transport with some of its extra info replaced (the client's ``peername``)."""

    def __init__(self, inner: asyncio.Transport, extra: dict[str, Any]) -> None:
        super().__init__(inner)
        self._replaced = extra

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        return self._inner.get_extra_info(name, default)
