"""The PROXY protocol, versions 1 (text) and 2 (binary), as a TCP balancer sends it; sans I/O.

A balancer in TCP mode (HAProxy ``send-proxy`` / ``send-proxy-v2``, cloud load balancers) puts
one header before the client's first byte saying who the client is. The spec is HAProxy's
``proxy-protocol.txt``. This module only parses: :class:`HeaderReader` is fed the connection's
first bytes and says "more", "here is the header and the bytes after it" (they belong to the
SSH server) or raises :class:`HeaderError`. It never looks past the header, and holds at most
one read beyond :data:`V1_MAX` / ``16 + max_v2`` bytes before it decides.

Strict by design (``gateway.ssh.proxied`` accepts a header only from trusted balancers, and
requires it from them):

- v1: ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` or ``PROXY UNKNOWN …\\r\\n``, printable
  ASCII, at most 107 bytes with the CRLF; addresses must be of the named family, ports decimal
  0-65535. ``UNKNOWN``: the connection's own address is kept.
- v2: the 12-byte signature, version 2, command LOCAL (a balancer's own connection, e.g. a
  health check: its own address is kept, the address block is ignored) or PROXY; families
  UNSPEC (own address kept), INET and INET6 over STREAM (the address), UNIX over STREAM (own
  address kept: no IP to show); DGRAM and unknown values are errors. The address block plus
  TLVs may be at most ``max_v2`` bytes (:data:`V2_MAX_BODY`); TLVs are skipped.
- Anything that is not a prefix of either signature is an error at once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.errors import InvalidInput

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_MAX_BODY = 4096  # addresses and TLVs; HAProxy's own TLVs take far less

LOCAL = "LOCAL"
PROXY = "PROXY"

_V2_INET = 0x1
_V2_INET6 = 0x2
_V2_UNIX = 0x3
_V2_STREAM = 0x1


class HeaderError(Exception):
    """Not a valid PROXY protocol header. ``reason`` is a short metric label: ``too_long`` or
    ``invalid``; the message says what was wrong (safe to log: no bytes of the input)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source``/``dest`` are (address, port), or None where the spec says to
    keep the connection's own addresses (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC or UNIX)."""

    version: int
    command: str
    source: tuple[str, int] | None
    dest: tuple[str, int] | None
    length: int  # bytes the header took


class HeaderReader:
    """Feed the connection's first bytes until :meth:`feed` returns the header.

    ``feed`` returns None while more bytes are needed, the :class:`ProxyHeader` once it is
    complete (then :attr:`rest` holds the bytes received after it), and raises
    :class:`HeaderError` on anything else. Done or failed, it must not be fed again.
    """

    def __init__(self, max_v2: int = V2_MAX_BODY) -> None:
        self.max_v2 = max_v2
        self._buf = b""
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        self._buf += data
        header = parse_header(self._buf, self.max_v2)
        if header is not None:
            self.rest = self._buf[header.length :]
            self._buf = b""
        return header

    @property
    def buffered(self) -> int:
        return len(self._buf)


def parse_header(buf: bytes, max_v2: int = V2_MAX_BODY) -> ProxyHeader | None:
    """The header at the start of ``buf``; None when ``buf`` is a valid but incomplete start."""
    if buf[:1] == V1_PREFIX[:1]:
        if not V1_PREFIX.startswith(buf[: len(V1_PREFIX)]):
            raise HeaderError("not a PROXY protocol header")
        return _parse_v1(buf) if len(buf) >= len(V1_PREFIX) else None
    if not V2_SIGNATURE.startswith(buf[: len(V2_SIGNATURE)]):
        raise HeaderError("not a PROXY protocol header")
    return _parse_v2(buf, max_v2) if len(buf) >= V2_FIXED else None


def _parse_v1(buf: bytes) -> ProxyHeader | None:
    end = buf.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise HeaderError(f"PROXY v1 line longer than {V1_MAX} bytes", "too_long")
        return None
    if buf[end - 1 : end] != b"\r":
        raise HeaderError("PROXY v1 line not ended by CRLF")
    line = buf[: end - 1]
    if any(not 0x20 <= b <= 0x7E for b in line):
        raise HeaderError("PROXY v1 line with a byte that is not printable ASCII")
    parts = line.split(b" ")
    length = end + 1
    proto = parts[1] if len(parts) > 1 else b""
    if proto == b"UNKNOWN":
        return ProxyHeader(1, PROXY, None, None, length)  # the rest of the line is ignored
    if proto not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise HeaderError("PROXY v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if proto == b"TCP4" else 6
    src = _v1_address(parts[2], version)
    dst = _v1_address(parts[3], version)
    return ProxyHeader(1, PROXY, (src, _v1_port(parts[4])), (dst, _v1_port(parts[5])), length)


def _v1_address(raw: bytes, version: int) -> str:
    text = raw.decode("ascii")
    try:
        if "%" in text:  # a scope id is not an address on the wire
            raise ValueError
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise HeaderError("PROXY v1 header with a bad address") from None
    if addr.version != version:
        raise HeaderError("PROXY v1 address of the wrong family")
    return str(addr)


def _v1_port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or int(raw) > 65535:
        raise HeaderError("PROXY v1 header with a bad port")
    return int(raw)


def _parse_v2(buf: bytes, max_v2: int) -> ProxyHeader | None:
    version, command = buf[12] >> 4, buf[12] & 0x0F
    family, transport = buf[13] >> 4, buf[13] & 0x0F
    size = int.from_bytes(buf[14:16], "big")
    if version != 2:
        raise HeaderError("PROXY v2 header of another version")
    if command > 1:
        raise HeaderError("PROXY v2 header with an unknown command")
    if family > _V2_UNIX or transport > 2:
        raise HeaderError("PROXY v2 header with an unknown family or transport")
    if size > max_v2:
        raise HeaderError(f"PROXY v2 header longer than {max_v2} bytes", "too_long")
    length = V2_FIXED + size
    if len(buf) < length:
        return None
    if command == 0:  # LOCAL: the balancer's own connection; addresses ignored
        return ProxyHeader(2, LOCAL, None, None, length)
    if family in (_V2_INET, _V2_INET6) and transport != _V2_STREAM:
        raise HeaderError("PROXY v2 header for a transport other than TCP")
    if family == _V2_INET:
        return _v2_addresses(buf, 4, length)
    if family == _V2_INET6:
        return _v2_addresses(buf, 16, length)
    if family == _V2_UNIX and transport != _V2_STREAM:
        raise HeaderError("PROXY v2 header for a datagram socket")
    return ProxyHeader(2, PROXY, None, None, length)  # UNSPEC or UNIX: no IP address to show


def _v2_addresses(buf: bytes, width: int, length: int) -> ProxyHeader:
    body = buf[V2_FIXED:length]
    if len(body) < 2 * width + 4:
        raise HeaderError("PROXY v2 address block too short")
    src = ipaddress.ip_address(body[:width])
    dst = ipaddress.ip_address(body[width : 2 * width])
    ports = body[2 * width : 2 * width + 4]
    sport, dport = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:], "big")
    return ProxyHeader(2, PROXY, (str(src), sport), (str(dst), dport), length)


# Who may send a header -------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: list[str]) -> tuple[Network, ...]:
    """Addresses and CIDRs (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) as networks;
    :class:`InvalidInput` names the first bad one."""
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise InvalidInput(
                f"proxy_from: {item.strip()!r} is not an IP address or CIDR network"
            ) from None
    return tuple(nets)


def is_trusted(host: str, nets: tuple[Network, ...]) -> bool:
    """Whether ``host`` (a socket's peer address) is in ``nets``. An IPv4 peer seen on a
    dual-stack socket (``::ffff:10.0.0.1``) counts as its IPv4 address."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in nets)
