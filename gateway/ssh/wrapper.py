"""The tiny POSIX sh program every shell/exec session starts with inside the container.

It announces its PID (so the gateway can hang up or end the process when the client goes away,
using only the Docker API), looks up the login's home and shell in /etc/passwd, sets the initial
terminal size, then replaces itself with the login's shell, the way sshd does.

argv: sh -c WRAPPER sshgw MODE LOGIN ROWS COLS [COMMAND]
MODE is "shell" (login shell) or "exec" (``<shell> -c COMMAND``).
"""

from __future__ import annotations

import re

PID_MARK_START = b"\x1esshgw:"
PID_MARK_END = b"\x1e"
PID_MARK_RE = re.compile(rb"\x1esshgw:([0-9]{1,10})\x1e")
PID_MARK_MAX = 32

WRAPPER = r"""printf '\036sshgw:%s\036' "$$" >&2
m=$1 u=$2 rows=$3 cols=$4
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


def wrapper_argv(mode: str, login: str, rows: int, cols: int, command: str = "") -> list[str]:
    argv = ["/bin/sh", "-c", WRAPPER, "sshgw", mode, login, str(rows), str(cols)]
    if mode != "shell":
        argv.append(command)
    return argv


def kill_argv(pid: int, signal: str, group: bool) -> list[str]:
    """A command that signals ``pid`` (and its process group when ``group``) inside the container."""
    target = f"-- -{pid}" if group else str(pid)
    return [
        "/bin/sh",
        "-c",
        f"kill -{signal} {target} 2>/dev/null || kill -{signal} {pid} 2>/dev/null; :",
    ]


def alive_argv(pid: int) -> list[str]:
    return ["/bin/sh", "-c", f"kill -0 {pid} 2>/dev/null"]


OCI_PREFIX = b"OCI runtime exec failed"


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
