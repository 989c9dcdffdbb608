"""Where a forwarded connection may go inside a container, and the relay that gets it there. Pure.

A ``direct-tcpip`` channel (``ssh -L``, ``ssh -D``) names a host and a port. :func:`plan_dest`
allows only the container itself: ``localhost``, ``127.0.0.1``, ``::1``, the container's name
(or the name the user logged in with) and the container's own addresses; everything else is
refused, so the gateway is never an open proxy. A container that uses the gateway host's network
(``host``) or another container's (``container:X``) is refused: its "localhost" is not its own.

A port is reached, first that works, on the container's address (a Docker network the gateway
routes to: services bound to all addresses), else through a relay exec'd in the container with
what the image has (:data:`RELAY_SCRIPT`: busybox ``nc``, ``socat``, ``bash``'s ``/dev/tcp``),
the only way to services bound to the container's loopback. The relay's argv is data: a constant
script and its positional arguments (an address :func:`plan_dest` chose, a validated port, a
nonce); nothing from the user is ever part of the script.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.ssh.wrapper import PID_MARK_END, scan_pid_mark

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# The relay tools, in the order the script tries them (for messages).
RELAY_TOOLS = ("nc (busybox)", "socat", "bash")

# sh -c RELAY_SCRIPT sshgw-relay HOST PORT NONCE
# Prints ``\x1esshgw:NONCE:PID\x1eTOOL`` and a newline on stderr once the tool is chosen (bash:
# once connected), then becomes the tool (same PID). "none": no tool (exit 127).
# - busybox nc half-closes the connection at EOF on its input and exits at EOF from the service;
# - socat does both, but waits at most 0.5 s (its -t) for the other direction after one EOF;
# - bash cannot half-close a /dev/tcp socket: at EOF on its input it keeps waiting for the
#   service to close (the client's later close ends it).
RELAY_SCRIPT = r"""h=$1 p=$2 n=$3
say() { printf '\036sshgw:%s:%s\036%s\n' "$n" "$$" "$1" >&2; }
if command -v nc >/dev/null 2>&1; then
  case $(nc --help 2>&1) in *BusyBox*) say nc; exec nc "$h" "$p" ;; esac
fi
if command -v socat >/dev/null 2>&1; then
  case $h in *:*) a="TCP6:[$h]:$p" ;; *) a="TCP4:$h:$p" ;; esac
  say socat; exec socat - "$a"
fi
if command -v bash >/dev/null 2>&1 && command -v cat >/dev/null 2>&1; then
  exec bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 111
printf "\036sshgw:%s:%s\036bash\n" "$3" "$$" >&2
exec 4<&0
cat <&4 >&3 &
w=$!
cat <&3
kill "$w" 2>/dev/null' sshgw-relay "$h" "$p" "$n"
fi
say none
exit 127
"""
RELAY_NONE = "none"
MARK_MAX = 512  # bytes of the relay's stderr looked at for its marker


class DestRefused(ValueError):
    """The forward's destination is not the container (the message says what is allowed)."""


@dataclass(frozen=True, slots=True)
class Dest:
    """Where to connect: ``direct`` addresses of the container tried from the gateway (in order),
    then ``inside``, the address the relay connects to from within the container."""

    inside: str
    direct: tuple[str, ...]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def plan_dest(
    dest_host: str,
    *,
    names: Sequence[str],
    addresses: Sequence[str],
    network_mode: str = "",
    host_network: bool = False,
) -> Dest:
    """Where a forward to ``dest_host`` goes in a container called ``names`` (its name, and the
    name the user asked for) with ``addresses`` (from the engine); raises :class:`DestRefused`.

    ``host_network``: allow a container on the host's network (relay only; its loopback is the
    gateway host's). A container sharing another container's network is always refused.
    """
    if network_mode == "host" and not host_network:
        raise DestRefused(
            "it uses the gateway host's network (its localhost is the gateway host), "
            "so forwarding into it is refused"
        )
    if network_mode.startswith("container:"):
        raise DestRefused("it shares another container's network, so forwarding into it is refused")
    own = [a for a in addresses if _ip(a) is not None]
    if network_mode == "host":
        own = []  # its addresses are the host's
    host = dest_host[1:-1] if dest_host.startswith("[") and dest_host.endswith("]") else dest_host
    if host.lower() == "localhost" or host in names or host == "127.0.0.1":
        return Dest("127.0.0.1", tuple(own[:1]))
    ip = _ip(host)
    if ip is not None and ip == ipaddress.IPv6Address("::1") and host == "::1":
        return Dest("::1", tuple(own[:1]))
    if ip is not None and str(ip) == host and any(_ip(a) == ip for a in own):
        return Dest(host, (host,))
    allowed = ", ".join([*LOOPBACK_NAMES, *dict.fromkeys(n for n in names if n), *own])
    raise DestRefused(f"only the container itself may be reached ({allowed})")


def relay_argv(inside: str, port: int, nonce: str) -> list[str]:
    """The relay's argv: the constant script, then an address from :func:`plan_dest`, the port
    and the nonce as positional parameters."""
    if _ip(inside) is None:
        raise ValueError(f"relay address must be an IP address: {inside!r}")
    if type(port) is not int or not 0 < port < 65536:
        raise ValueError(f"bad port {port!r}")
    return ["/bin/sh", "-c", RELAY_SCRIPT, "sshgw-relay", inside, str(port), nonce]


@dataclass(frozen=True, slots=True)
class RelayMark:
    """What the start of the relay's stderr said: ``state`` "found" (``pid``, ``tool``), "more"
    (may still come) or "none" (will not)."""

    state: str
    pid: int = 0
    tool: str = ""


def scan_relay_mark(head: bytes, nonce: str) -> RelayMark:
    """Find the relay's ``\\x1esshgw:NONCE:PID\\x1eTOOL\\n`` in the first bytes of its stderr."""
    found = scan_pid_mark(head[:MARK_MAX], nonce)
    if found.state != "found":
        return RelayMark(found.state if len(head) < MARK_MAX else "none")
    rest = head[found.end :]
    line, sep, _ = rest.partition(b"\n")
    if not sep:
        return RelayMark("more" if len(head) < MARK_MAX else "none")
    tool = line.decode("ascii", "replace")
    if tool not in ("nc", "socat", "bash", RELAY_NONE):
        return RelayMark("none")
    return RelayMark("found", found.pid, tool)


def relay_failure(stderr: bytes, stdout: bytes) -> str:
    """Why a relay ended before it was ready, in a few words (for the log and the user)."""
    text = (stderr + b"\n" + stdout).replace(PID_MARK_END, b" ").decode("utf-8", "replace")
    lower = text.lower()
    if "connection refused" in lower:
        return "connection refused"
    if "oci runtime" in lower or "no such file" in lower or "not found" in lower:
        return "no shell (/bin/sh) in the container to start a relay"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return first[:200] or "the relay ended at once"
