"""End-to-end test helpers: the gateway process, unique names, error-line checks, a PTY driver.

:class:`Gateway` is :class:`tests.support.gateway.GatewayProcess` with pytest failures, users,
keys, grants and the OpenSSH client (options from :mod:`tests.support.openssh`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.gateway import REPO, GatewayProcess
from tests.support.openssh import CONNECT_TIMEOUT, NO_CONFIG, client_opts, keygen
from tests.support.process import HOST, SetupError, free_port

__all__ = [
    "MOTD",
    "REPO",
    "SSH_BASE_OPTS",
    "Gateway",
    "GatewayFactory",
    "PtyProcess",
    "container_pids",
    "container_processes",
    "docker",
    "free_port",
    "has_process",
    "kill_client_and_check_no_orphan",
    "no_traceback",
    "one_line_error",
    "set_winsize",
    "unique",
    "wait_until",
]

_counter = itertools.count(1)


def unique(prefix: str = "u") -> str:
    """A short name that is unique in this run and valid as a gateway user name."""
    return f"{prefix}{next(_counter)}x{uuid.uuid4().hex[:6]}"


def one_line_error(stderr: bytes) -> str:
    """The client's stderr must be exactly one non-empty line and no traceback; return it."""
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, f"traceback in client output: {text!r}"
    assert 'File "' not in text, f"traceback-like text in client output: {text!r}"
    lines = [ln for ln in text.replace("\r", "").split("\n") if ln.strip()]
    assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}: {text!r}"
    return lines[0]


def no_traceback(*outputs: bytes) -> None:
    for out in outputs:
        text = out.decode("utf-8", "replace")
        assert "Traceback" not in text, f"traceback in client output: {text!r}"


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def docker(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def container_processes(name: str) -> str:
    """The process table of a container as the host sees it (``docker top``)."""
    return docker("top", name, "-eo", "pid,args").stdout


def container_pids(name: str) -> dict[int, str]:
    """PID (host namespace) to command line of every process in the container."""
    pids: dict[int, str] = {}
    for line in container_processes(name).splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            pids[int(pid)] = args.strip()
    return pids


def has_process(name: str, pattern: str) -> bool:
    return re.search(pattern, container_processes(name)) is not None


def kill_client_and_check_no_orphan(argv: Sequence[str], container: str, pattern: str) -> None:
    """Start the ssh client ``argv``, SIGKILL it once ``pattern`` runs in ``container``, and
    check that the gateway ends that process."""
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_until(lambda: has_process(container, pattern), 30), "command never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone = wait_until(lambda: not has_process(container, pattern), 20)
    assert gone, f"process left behind in {container}:\n{docker('top', container).stdout}"


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyProcess:
    """A process whose stdin/stdout/stderr are a pseudo-terminal we drive from the master side."""

    def __init__(
        self, argv: Sequence[str], rows: int = 24, cols: int = 80, env: dict[str, str] | None = None
    ) -> None:
        self.master, self.slave = os.openpty()
        set_winsize(self.slave, rows, cols)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
        self.buffer = b""

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read_some(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:  # EIO: every slave side is closed
            return b""

    def read_until(self, pattern: bytes | re.Pattern[bytes], timeout: float = 20) -> bytes:
        """Read until ``pattern`` appears in the output since the last match; return that output."""
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(pattern, bytes):
                idx = self.buffer.find(pattern)
                end = idx + len(pattern) if idx >= 0 else -1
            else:
                m = pattern.search(self.buffer)
                end = m.end() if m else -1
            if end >= 0:
                out, self.buffer = self.buffer[:end], self.buffer[end:]
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out waiting for {pattern!r}; output so far: {self.buffer[-2000:]!r}"
                )
            chunk = self._read_some(min(left, 0.5))
            if not chunk and self.proc.poll() is not None:
                # drain what is left, then give up
                more = self._read_some(0.2)
                if not more:
                    raise AssertionError(
                        f"process exited ({self.proc.returncode}) before {pattern!r}; "
                        f"output: {self.buffer[-2000:]!r}"
                    )
                chunk = more
            self.buffer += chunk

    def drain(self, timeout: float = 0.5) -> bytes:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            chunk = self._read_some(0.1)
            if chunk:
                self.buffer += chunk
            elif self.proc.poll() is not None:
                break
        out, self.buffer = self.buffer, b""
        return out

    def resize(self, rows: int, cols: int) -> None:
        set_winsize(self.slave, rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"process did not exit; output: {self.buffer[-2000:]!r}")
            chunk = self._read_some(0.2)
            self.buffer += chunk
        self.buffer += self._read_some(0.1)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the gateway under test ---------------------------------------------------------------

MOTD = "sshgw-e2e message of the day"

# No user config, trust the test host, errors only; a connection attempt gives up after 30 s.
SSH_BASE_OPTS = (*NO_CONFIG, *CONNECT_TIMEOUT)


class Gateway(GatewayProcess):
    """One running gateway process plus helpers to administer it and connect to it."""

    def __init__(self, root: Path, extra_env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            root,
            # No drain on SIGTERM (the tests that test it set one): a test's stop is at once.
            {
                "SSHGW_MOTD": MOTD,
                "SSHGW_LOG_LEVEL": "DEBUG",
                "PYTHONUNBUFFERED": "1",
                "SSHGW_DRAIN_TIMEOUT": "0",
            },
            extra_env,
        )
        self.keys_dir = root / "keys"
        self.data_dir.mkdir(parents=True)
        self.keys_dir.mkdir()
        self.keys: dict[str, Path] = {}
        # A key that belongs to nobody: used when a test must offer a key that is not registered.
        self.stranger_key = keygen(self.keys_dir / "stranger", "stranger")

    # process -------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        try:
            super().start(timeout)
        except SetupError as exc:
            pytest.fail(f"{exc}:\n{self.log()}", pytrace=False)

    def stop(self, check: bool = True) -> None:
        """TERM, then KILL; with ``check``, fail when TERM alone did not stop it."""
        if not self.terminate() and check:
            pytest.fail(f"gateway did not stop on SIGTERM:\n{self.log()[-4000:]}", pytrace=False)

    # administration ------------------------------------------------------------------------

    def cli(
        self, *args: str, input: str | bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m gateway ARGS`` with the gateway's environment."""
        data = input.decode() if isinstance(input, bytes) else input
        res = super().cli(*args, input=data, timeout=timeout)
        if check and res.returncode != 0:
            pytest.fail(
                f"sshgw {' '.join(args)} failed with {res.returncode}:\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}",
                pytrace=False,
            )
        return res

    def new_key(self, name: str) -> Path:
        """A fresh ed25519 key pair (not registered); returns the private key path."""
        return keygen(self.keys_dir / name, name)

    def add_user(self, name: str, key: bool = True, password: str | None = None) -> Path | None:
        """``sshgw user add NAME [--key PUB] [--password-stdin]``; returns the private key path."""
        args = ["user", "add", name]
        path: Path | None = None
        if key:
            path = self.new_key(name)
            args += ["--key", f"{path}.pub"]
            self.keys[name] = path
        if password is not None:
            args.append("--password-stdin")
        self.cli(*args, input=(password + "\n") if password is not None else None)
        return path

    def add_key(self, user: str, key: Path | None = None, expires: str | None = None) -> Path:
        """``sshgw key add USER PUB [--expires DATE]``; returns the private key path."""
        path = key or self.new_key(f"{user}-{len(list(self.keys_dir.iterdir()))}")
        args = ["key", "add", user, f"{path}.pub"]
        if expires is not None:
            args += ["--expires", expires]
        self.cli(*args)
        return path

    def grant(
        self,
        target: str,
        user: str | None = None,
        group: str | None = None,
        rights: str = "shell,exec",
        logins: str | None = None,
        labels: Sequence[str] = (),
        expires: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``sshgw grant add (--user U | --group G) --target GLOB --rights R [--logins L] ...``."""
        args = ["grant", "add"]
        if user is not None:
            args += ["--user", user]
        if group is not None:
            args += ["--group", group]
        args += ["--target", target, "--rights", rights]
        for label in labels:
            args += ["--label", label]
        if logins is not None:
            args += ["--logins", logins]
        if expires is not None:
            args += ["--expires", expires]
        return self.cli(*args)

    # clients -------------------------------------------------------------------------------

    def _key_for(self, login: str, key: Path | None) -> Path:
        if key is not None:
            return key
        return self.keys.get(login.split("+", 1)[0], self.stranger_key)

    def ssh_cmd(
        self,
        login: str,
        *remote_args: str,
        key: Path | None = None,
        extra_opts: Sequence[str] = (),
    ) -> list[str]:
        """The argv of an OpenSSH client call to this gateway (for Popen and PTY use)."""
        return [
            "ssh",
            *client_opts(self._key_for(login, key)),
            *CONNECT_TIMEOUT,
            "-p",
            str(self.port),
            *extra_opts,
            "-l",
            login,
            HOST,
            *remote_args,
        ]

    def ssh(
        self,
        login: str,
        *remote_args: str,
        key: Path | None = None,
        input: bytes | None = None,
        extra_opts: Sequence[str] = (),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the OpenSSH client; stdin is ``input`` or /dev/null. Output stays bytes."""
        return subprocess.run(
            self.ssh_cmd(login, *remote_args, key=key, extra_opts=extra_opts),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


class GatewayFactory:
    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.running: list[Gateway] = []

    def __call__(self, extra_env: Mapping[str, str] | None = None) -> Gateway:
        gw = Gateway(self.tmp.mktemp("gw"), extra_env)
        self.running.append(gw)
        gw.start()
        return gw

    def stop_all(self) -> None:
        errors = []
        for gw in self.running:
            try:
                gw.stop()
            except BaseException as exc:  # still stop the others
                errors.append(exc)
        self.running.clear()
        if errors:
            raise errors[0]
