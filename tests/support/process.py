"""Processes and ports on this machine: checked runs, free ports, SSH banners, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence

HOST = "127.0.0.1"


class SetupError(Exception):
    """A setup step failed; the message says which."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (stdin ``input`` or /dev/null, output captured as bytes); with ``check`` a
    non-zero exit raises :class:`SetupError` with the end of its stderr."""
    res = subprocess.run(
        list(argv),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=dict(env) if env is not None else None,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        raise SetupError(
            f"{' '.join(argv)!s} exited {res.returncode}: "
            f"{res.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return res


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """True when something on this host listens on TCP ``port`` (read from /proc, without
    connecting: a connection to a forwarded port would open a channel)."""
    want = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (fields[1] + " ").endswith(want) and fields[3] == "0A":
                    return True
    return False


def read_banner(port: int, timeout: float = 2) -> bytes:
    """What an SSH server on ``port`` sends first: up to its first newline (512 bytes at most)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        data = b""
        while b"\n" not in data and len(data) < 512:
            chunk = s.recv(512)
            if not chunk:
                break
            data += chunk
        return data


def wait_for_banner(
    port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Wait until ``proc`` answers on ``port`` with an SSH banner; :class:`SetupError` when it
    exits first or sends none within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SetupError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError):
            if read_banner(port).startswith(b"SSH-2.0-"):
                return
        if time.monotonic() > deadline:
            raise SetupError(f"{what} sent no SSH banner on port {port} within {timeout:.0f}s")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 15) -> None:
    """TERM the process group, then KILL it after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
