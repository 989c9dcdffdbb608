"""Shared pieces of the benchmarks: a test container, an OpenSSH sshd on loopback, a running
sshgw, client command lines, timing and the result table.

The gateway launcher, the OpenSSH client options and key generation are the tests' own
(``tests/support``), so a benchmark measures the gateway the tests start, the same way.

Everything runs on this machine and is torn down at exit (``Bench`` is a context manager).
Benchmarks are not tests: they print figures and ratios measured side by side in one run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support import openssh
from tests.support.containers import docker_run_argv
from tests.support.gateway import GatewayProcess
from tests.support.openssh import keygen
from tests.support.process import (
    SetupError,
    free_port,
    run,
    stop_process,
    wait_for_banner,
)

__all__ = ["free_port", "keygen", "run", "stop_process", "wait_for_banner"]

REPO = Path(__file__).resolve().parent.parent
BUILD_IMAGES = REPO / "tests" / "images" / "build.sh"
BUSYBOX_IMAGE = "sshgw-test/busybox:1"
BENCH_LABEL = "sshgw-bench"
CIPHER = "aes128-gcm@openssh.com"

Argv = Sequence[str]
BenchError = SetupError  # a setup step failed; the message says which


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# Timing ------------------------------------------------------------------------------------------


def time_run(argv: Argv, *, stdout: int | IO[bytes] = subprocess.DEVNULL) -> float:
    """Wall time of one run of ``argv`` in seconds; a non-zero exit is an error."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-1000:]}"
        )
    return elapsed


def count_output(argv: Argv) -> int:
    """Run ``argv`` and count the bytes it writes to stdout (checks a data path end to end)."""
    with subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        total = 0
        while chunk := proc.stdout.read(1 << 20):
            total += len(chunk)
        err = proc.stderr.read() if proc.stderr else b""
        code = proc.wait()
    if code != 0:
        raise BenchError(f"{' '.join(argv)} exited {code}: {err.decode(errors='replace')[-1000:]}")
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, not idle or iowait) so far."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Series:
    """Repeated timings of one way of doing something."""

    name: str
    times: list[float] = field(default_factory=list)
    nbytes: int = 0
    # Machine-wide busy CPU seconds during each run (every process: client, server, engine).
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def mbps(self) -> float:
        return self.nbytes / 1e6 / self.median if self.nbytes and self.times else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self.times),
            "median_s": round(self.median, 5),
            "min_s": round(min(self.times), 5),
            "max_s": round(max(self.times), 5),
            "bytes": self.nbytes,
            "mb_per_s": round(self.mbps, 1) if self.nbytes else None,
            "machine_cpu_s": round(statistics.median(self.cpu), 4) if self.cpu else None,
        }


def timed(s: Series, argv: Argv, **kw: Any) -> None:
    """One run of ``argv`` added to ``s``: its wall time and the machine's busy CPU meanwhile."""
    busy = machine_busy()
    s.times.append(time_run(argv, **kw))
    s.cpu.append(machine_busy() - busy)


def interleave(series: Sequence[tuple[Series, Argv]], n: int, **kw: Any) -> None:
    """Run each command ``n`` times, round-robin, so drift on the machine hits all alike."""
    for _ in range(n):
        for s, argv in series:
            timed(s, argv, **kw)


def print_table(title: str, rows: Sequence[Series], baseline: Series, throughput: bool) -> None:
    print()
    print(title)
    head = f"  {'path':<28} {'n':>3} {'median':>10} {'min':>10} {'max':>10}"
    head += f" {'MB/s':>8} {'vs OpenSSH':>11}" if throughput else f" {'vs OpenSSH':>11}"
    head += f" {'CPU (all)':>10}"
    print(head)
    for s in rows:
        line = (
            f"  {s.name:<28} {len(s.times):>3} {s.median * 1000:>8.1f}ms"
            f" {min(s.times) * 1000:>8.1f}ms {max(s.times) * 1000:>8.1f}ms"
        )
        if throughput:
            ratio = s.mbps / baseline.mbps
            line += f" {s.mbps:>8.1f} {ratio:>10.2f}x"
        else:
            ratio = s.median / baseline.median
            line += f" {ratio:>10.2f}x"
        if s.cpu:
            line += f" {statistics.median(s.cpu) * 1000:>8.0f}ms"
        print(line)
    print("  (CPU (all): busy CPU time of the whole machine during one run, median)")


def dump_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# The pieces under test ------------------------------------------------------------------------------


def client_opts(key: Path) -> list[str]:
    """OpenSSH client options (ssh, scp, sftp): no user config, trust the test host, one key,
    and the cipher every benchmark uses."""
    return openssh.client_opts(key, cipher=CIPHER)


def ssh_argv(
    port: int,
    login: str,
    key: Path,
    command: str,
    *,
    extra: Sequence[str] = (),
) -> list[str]:
    """An OpenSSH client command line that reads no user config and trusts the test host."""
    return [
        "ssh",
        *client_opts(key),
        "-T",
        "-o",
        "ConnectTimeout=30",
        "-p",
        str(port),
        *extra,
        f"{login}@127.0.0.1",
        command,
    ]


class Container:
    """A detached busybox container (a long sleep) labelled for cleanup."""

    def __init__(self, image: str = BUSYBOX_IMAGE, prefix: str = "bench") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.image = image

    def start(self) -> None:
        if shutil.which("docker") is None:
            raise BenchError("docker CLI not found")
        run(["docker", "info"], timeout=60)
        run([str(BUILD_IMAGES), "busybox"], timeout=900)
        run(docker_run_argv(self.image, self.name, {BENCH_LABEL: "1"}))

    def exec(self, *argv: str) -> bytes:
        return run(["docker", "exec", self.name, *argv]).stdout

    def stop(self) -> None:
        run(["docker", "rm", "-f", "-v", self.name], check=False)


class Sshd:
    """OpenSSH sshd on loopback with its own config, host key and authorized_keys (runs as root)."""

    def __init__(self, root: Path, client_pub: Path) -> None:
        self.root = root
        self.port = free_port()
        self.client_pub = client_pub
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "sshd.log"

    def start(self) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(sshd).exists():
            raise BenchError("sshd not found (apt-get install openssh-server)")
        if os.geteuid() != 0:
            raise BenchError("the OpenSSH comparison needs root (sshd with UsePAM no)")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.root.mkdir(parents=True, exist_ok=True)
        hostkey = keygen(self.root / "ssh_host_ed25519_key", "bench-sshd")
        auth = self.root / "authorized_keys"
        shutil.copyfile(self.client_pub, auth)
        auth.chmod(0o600)
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {hostkey}",
                    f"AuthorizedKeysFile {auth}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        run([sshd, "-t", "-f", str(config)])
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_banner(self.port, self.proc, 30, "sshd")

    def stop(self) -> None:
        stop_process(self.proc)


class Gateway(GatewayProcess):
    """``python -m gateway serve`` on a free port with its own data directory and SQLite DB;
    warnings and errors only in its log."""

    what = "sshgw"

    def __init__(self, root: Path, extra_env: Mapping[str, str] | None = None) -> None:
        # No drain on SIGTERM: a benchmark's stop is at once.
        settings = {
            "SSHGW_LOG_LEVEL": "WARNING",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SSHGW_DRAIN_TIMEOUT": "0",
        }
        super().__init__(root, settings, extra_env)

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``python -m gateway ARGS``; a failure raises :class:`BenchError`."""
        res = super().cli(*args, input=input, timeout=timeout)
        if res.returncode != 0:
            raise BenchError(
                f"sshgw {' '.join(args)} exited {res.returncode}: {res.stderr.strip()[-2000:]}"
            )
        return res

    def start(self, timeout: float = 90) -> None:
        try:
            super().start(timeout)
        except BenchError as exc:
            raise BenchError(f"{exc}; log:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 4000) -> str:
        return self.log()[-n:]


class Bench(contextlib.ExitStack):
    """Temp directory, client key, container, sshd and sshgw, torn down on exit."""

    def __init__(self, keep: bool = False) -> None:
        super().__init__()
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="sshgw-bench-"))
        self.key = self.tmp / "client_ed25519"
        self.container = Container()
        self.sshd = Sshd(self.tmp / "sshd", self.tmp / "client_ed25519.pub")
        self.gateway = Gateway(self.tmp / "gateway")
        self.user = "alice"

    def __enter__(self) -> Bench:
        super().__enter__()
        try:
            if not self.keep:
                self.callback(shutil.rmtree, self.tmp, True)
            keygen(self.key, "bench-client")
            log(f"container {self.container.name}")
            self.callback(self.container.stop)
            self.container.start()
            log(f"sshd on 127.0.0.1:{self.sshd.port}")
            self.callback(self.sshd.stop)
            self.sshd.start()
            log(f"sshgw on 127.0.0.1:{self.gateway.port} (data {self.gateway.data_dir})")
            self.callback(self.gateway.stop)
            self.gateway.start()
            self.gateway.cli("user", "add", self.user, "--key", str(self.key) + ".pub")
            self.gateway.cli(
                "grant", "add", "--user", self.user, "--target", "bench*", "--rights", "shell,exec"
            )
        except BaseException:
            self.close()
            raise
        return self

    def gw_ssh(self, command: str) -> list[str]:
        return ssh_argv(self.gateway.port, f"{self.user}+{self.container.name}", self.key, command)

    def sshd_ssh(self, command: str) -> list[str]:
        return ssh_argv(self.sshd.port, "root", self.key, command)

    def docker_exec(self, *argv: str) -> list[str]:
        return ["docker", "exec", self.container.name, *argv]


@contextlib.contextmanager
def data_file(directory: Path, size: int) -> Iterator[Path]:
    """A file of ``size`` random bytes (written in 1 MiB chunks), removed afterwards."""
    path = directory / "payload.bin"
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
