"""Who the client is behind a reverse proxy: ``X-Forwarded-For`` and ``X-Forwarded-Proto``,
believed only from the proxies in ``SSHGW_HTTP_PROXY_FROM``; sans I/O.

The peer of the socket is the client unless it is a trusted proxy. Then ``X-Forwarded-For`` is
read from the right (the entry the nearest proxy appended) past every trusted proxy; the first
address that is not one is the client. Anything malformed keeps the peer: a header can make the
gateway believe less, never an address the proxy did not write.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.ssh.proxyproto import Network, is_trusted

# Entries of X-Forwarded-For looked at (from the right): a chain of proxies is short.
MAX_HOPS = 16


@dataclass(frozen=True, slots=True)
class Client:
    remote: str
    scheme: str | None  # "http"/"https" from a trusted proxy, else None (the socket's own)


def _address(text: str) -> str | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_of(
    peer: str | None,
    forwarded_for: list[str],
    forwarded_proto: list[str],
    trusted: tuple[Network, ...],
) -> Client:
    """The client of a request from ``peer`` carrying these header values (all occurrences)."""
    if not peer or not trusted or not is_trusted(peer, trusted):
        return Client(peer or "", None)
    remote = peer
    hops = [h for value in forwarded_for for h in value.split(",")]
    for hop in reversed(hops[-MAX_HOPS:]):
        addr = _address(hop)
        if addr is None:
            break
        remote = addr
        if not is_trusted(addr, trusted):
            break
    scheme = None
    protos = [p.strip().lower() for value in forwarded_proto for p in value.split(",")]
    if protos and protos[-1] in ("http", "https"):
        scheme = protos[-1]
    return Client(remote, scheme)
