"""End-to-end test helpers: the gateway process, unique names, error-line checks, a PTY driver."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

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

REPO = Path(__file__).resolve().parents[2]
MOTD = "sshgw-e2e message of the day"

SSH_BASE_OPTS = (
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=30",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return path


class Gateway:
    """One running gateway process plus helpers to administer it and connect to it."""

    def __init__(self, root: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.keys_dir = root / "keys"
        self.data_dir.mkdir(parents=True)
        self.keys_dir.mkdir()
        self.log_path = root / "gateway.log"
        self.port = free_port()
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSHGW_")}
        env.update(
            {
                "SSHGW_DATA_DIR": str(self.data_dir),
                "SSHGW_MOTD": MOTD,
                "SSHGW_LOG_LEVEL": "DEBUG",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.keys: dict[str, Path] = {}
        # A key that belongs to nobody: used when a test must offer a key that is not registered.
        self.stranger_key = _keygen(self.keys_dir / "stranger", "stranger")

    # process -------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--metrics-listen",
                    f"127.0.0.1:{self.metrics_port}",
                ],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"gateway exited with {self.proc.returncode} before listening:\n{self.log()}",
                    pytrace=False,
                )
            if self._banner():
                return
            if time.monotonic() > deadline:
                self.stop(check=False)
                pytest.fail(
                    f"gateway sent no SSH banner in {timeout}s:\n{self.log()}", pytrace=False
                )
            time.sleep(0.2)

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                data = b""
                while b"\n" not in data and len(data) < 512:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                return data.startswith(b"SSH-2.0-")
        except OSError:
            return False

    def stop(self, check: bool = True) -> None:
        """TERM, then KILL; with ``check``, fail when TERM alone did not stop it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
            needed_kill = False
        except subprocess.TimeoutExpired:
            needed_kill = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        assert proc.returncode is not None
        if check and needed_kill:
            pytest.fail(f"gateway did not stop on SIGTERM:\n{self.log()[-4000:]}", pytrace=False)

    def log(self, since: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    # administration ------------------------------------------------------------------------

    def cli(
        self, *args: str, input: str | bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m gateway ARGS`` with the gateway's environment."""
        data = input.decode() if isinstance(input, bytes) else input
        res = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            cwd=REPO,
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            pytest.fail(
                f"sshgw {' '.join(args)} failed with {res.returncode}:\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}",
                pytrace=False,
            )
        return res

    def new_key(self, name: str) -> Path:
        """A fresh ed25519 key pair (not registered); returns the private key path."""
        return _keygen(self.keys_dir / name, name)

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
            *SSH_BASE_OPTS,
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-i",
            str(self._key_for(login, key)),
            *extra_opts,
            "-l",
            login,
            "127.0.0.1",
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
