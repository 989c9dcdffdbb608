"""The tiny POSIX sh program every shell/exec session starts with inside the container.

It announces its PID (so the gateway can hang up or end the process when the client goes away,
using only the Docker API), looks up the login's home and shell in /etc/passwd, sets the initial
terminal size, then replaces itself with the login's shell, the way sshd does.

argv: sh -c WRAPPER sshgw MODE LOGIN ROWS COLS NONCE [COMMAND]
MODE is "shell" (login shell) or "exec" (``<shell> -c COMMAND``). NONCE is a fresh random value
per session: the marker ``\x1esshgw:NONCE:PID\x1e`` is accepted only with it, only from the first
``PID_MARK_MAX`` bytes of the exec's own output (so neither the command nor another process can
forge the PID the gateway signals), and the PID must be a group the exec itself started (> 1).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Literal

PID_MARK_START = b"\x1esshgw:"
PID_MARK_END = b"\x1e"
NONCE_BYTES = 16
# Only this many bytes at the start of the exec's own output are examined for the marker.
PID_MARK_MAX = 256
PID_MAX = 4_194_304  # the kernel's largest pid_max
_PID_RE = re.compile(rb"([1-9][0-9]{0,9})\x1e")
_PID_PARTIAL_RE = re.compile(rb"[0-9]{0,10}")
_NONCE_RE = re.compile(r"[0-9a-f]{16,64}")


def new_nonce() -> str:
    """A fresh per-session secret for the PID marker."""
    return secrets.token_hex(NONCE_BYTES)


def pid_mark(nonce: str, pid: int) -> bytes:
    """The marker the wrapper prints (for tests and documentation)."""
    return PID_MARK_START + nonce.encode() + b":" + str(pid).encode() + PID_MARK_END


@dataclass(frozen=True)
class MarkScan:
    """What the first bytes of an exec's output say about its PID.

    ``found``: the marker with this session's nonce is at ``start:end`` and names ``pid``;
    ``more``: it may still come (too few bytes seen); ``none``: it will not (give up).
    """

    state: Literal["found", "more", "none"]
    pid: int = 0
    start: int = 0
    end: int = 0


def scan_pid_mark(head: bytes, nonce: str) -> MarkScan:
    """Look for this session's PID marker in the first ``PID_MARK_MAX`` bytes of ``head``.

    Markers with another nonce (forged, or the old format) are skipped. A marker with the right
    nonce but a PID that is not an integer in 2..PID_MAX ends the search: no PID is taken.
    """
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError("bad nonce")
    full = len(head) >= PID_MARK_MAX
    head = head[:PID_MARK_MAX]
    prefix = PID_MARK_START + nonce.encode() + b":"
    if PID_MARK_START[:1] not in head:
        return MarkScan("none" if head else "more")
    pos = 0
    while (i := head.find(PID_MARK_START[:1], pos)) != -1:
        tail = head[i:]
        if tail.startswith(prefix):
            rest = tail[len(prefix) :]
            m = _PID_RE.match(rest)
            if m is not None:
                pid = int(m.group(1))
                if not 1 < pid <= PID_MAX:
                    return MarkScan("none")
                return MarkScan("found", pid, i, i + len(prefix) + m.end())
            if _PID_PARTIAL_RE.fullmatch(rest) and not full:
                return MarkScan("more")
            return MarkScan("none")  # the right nonce with a malformed PID: never guess
        if prefix.startswith(tail) and not full:
            return MarkScan("more")  # a marker may be cut at the end of what arrived
        pos = i + 1
    return MarkScan("none" if full else "more")


WRAPPER = r"""printf '\036sshgw:%s:%s\036' "$5" "$$" >&2
m=$1 u=$2 rows=$3 cols=$4
set -- "$1" "$2" "$3" "$4" "${6-}"
n= h=/ s=
if [ -r /etc/passwd ]; then
  while IFS=: read -r pn _ pu _ _ ph ps; do
    if [ "$pn" = "$u" ] || [ "$pu" = "${u%%:*}" ]; then n=$pn h=$ph s=$ps; break; fi
  done < /etc/passwd
fi
if [ -z "$s" ] || [ ! -x "$s" ]; then s=/bin/sh; fi
[ -n "$h" ] || h=/
cd "$h" 2>/dev/null || cd /
export HOME="$h" SHELL="$s"
if [ -n "$n" ]; then export USER="$n" LOGNAME="$n"; fi
if [ "$rows" -gt 0 ] 2>/dev/null; then stty rows "$rows" cols "$cols" 2>/dev/null; fi
if [ "$m" = shell ]; then exec "$s" -l; fi
exec "$s" -c "$5"
"""


def wrapper_argv(
    mode: str, login: str, rows: int, cols: int, command: str = "", *, nonce: str
) -> list[str]:
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError("bad nonce")
    argv = ["/bin/sh", "-c", WRAPPER, "sshgw", mode, login, str(rows), str(cols), nonce]
    if mode != "shell":
        argv.append(command)
    return argv


# Run as the session's login. Acts only when PID is still what the exec started: a session and
# group leader (pgid = sid = PID) whose parent is outside the container (ppid 0), never PID <= 1.
_OWN_GROUP = (
    'p={pid}; [ "$p" -gt 1 ] || exit 3; '
    '{{ read -r st < /proc/$p/stat; }} 2>/dev/null || exit 3; set -- ${{st##*") "}}; '
    '[ "$2" = 0 ] && [ "$3" = "$p" ] && [ "$4" = "$p" ] || exit 3; '
)


def _checked_pid(pid: int) -> int:
    if type(pid) is not int or not 1 < pid <= PID_MAX:
        raise ValueError(f"refusing to signal pid {pid!r}")
    return pid


def kill_argv(pid: int, signal: str) -> list[str]:
    """Signals the process group the wrapper ``pid`` leads, and nothing else."""
    if not signal.isalnum():
        raise ValueError(f"bad signal {signal!r}")
    pid = _checked_pid(pid)
    return ["/bin/sh", "-c", _OWN_GROUP.format(pid=pid) + f"kill -{signal} -{pid} 2>/dev/null"]


def alive_argv(pid: int) -> list[str]:
    """Exit 0 while ``pid`` is still the wrapper's own group leader."""
    pid = _checked_pid(pid)
    return ["/bin/sh", "-c", _OWN_GROUP.format(pid=pid) + f"kill -0 {pid} 2>/dev/null"]


def explain_start_failure(output: bytes, container: str, login: str) -> str | None:
    """Turn the engine's text for a process that could not start into one clear line."""
    text = output.decode("utf-8", "replace")
    if not text.startswith("OCI runtime exec failed") and "unable to find user" not in text:
        return None
    if "unable to find user" in text or "no matching entries in passwd" in text:
        return f"login {login!r} does not exist in container {container}"
    if "/bin/sh" in text and ("no such file" in text or "not found" in text):
        return f"container {container} has no shell (/bin/sh)"
    return f"cannot start a process in container {container}"
