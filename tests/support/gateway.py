"""One gateway process under test: ``python -m gateway serve`` on free loopback ports.

The gateway runs with this interpreter (``sys.executable``, so a virtualenv's), from the
repository root, in a new session (its own process group), with an environment that holds no
``SSHGW_*`` setting of the caller's but its own data directory (SQLite database, host keys) and
the settings it is given. Its stdout and stderr go to ``gateway.log`` in its root directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.process import HOST, SetupError, free_port, wait_for_banner

REPO = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """A gateway with its own directory ``root``; ``settings`` and then ``extra_env`` are added
    to its environment. ``start()`` returns once it sends its SSH banner."""

    what = "gateway"  # how errors name it

    def __init__(
        self,
        root: Path,
        settings: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "gateway.log"
        self.port = free_port()
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSHGW_")}
        env["SSHGW_DATA_DIR"] = str(self.data_dir)
        env.update(settings or {})
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The argv that serves: ``python -m gateway serve --listen … --metrics-listen …``."""
        return [sys.executable, "-m", "gateway", *self.serve_args()]

    def serve_args(self) -> list[str]:
        return [
            "serve",
            "--listen",
            f"{HOST}:{self.port}",
            "--metrics-listen",
            f"{HOST}:{self.metrics_port}",
        ]

    def start(self, timeout: float = 90) -> None:
        """Start it and wait for its banner; :class:`SetupError` (after stopping it) when it
        exits first or sends none within ``timeout`` seconds."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_banner(self.port, self.proc, timeout, self.what)
        except SetupError:
            self.terminate()
            raise

    def stop(self) -> None:
        self.terminate()

    def terminate(self, grace: float = 20) -> bool:
        """TERM the gateway, then KILL its process group after ``grace`` seconds; True when it
        was not running or TERM alone stopped it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return True
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
            return False

    def log(self, since: int = 0) -> str:
        """The gateway's log from byte offset ``since``."""
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

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m gateway ARGS`` with the gateway's environment (not checked)."""
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            cwd=REPO,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
