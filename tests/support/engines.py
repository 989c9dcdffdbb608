"""Extra Docker engines on this machine, for the many-engines tests and bench_scale.

Each :class:`ExtraEngine` is a ``dockerd`` of its own: its data root, exec root, pid file and
unix socket in a short directory under /tmp (unix socket paths are short), no bridge and no
iptables (nothing shared with the main engine), ``--live-restore`` (its containers outlive a
killed daemon and are there again when it comes back). The test busybox image is copied in from
the main engine (``docker save | docker load``, about a second).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.containers import docker_run_argv, owned_labels

BUSYBOX = "sshgw-test/busybox:1"


class EngineCli:
    """``docker -H URL ...`` for one engine, and the test containers made on it."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.made: list[str] = []

    def docker(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            ["docker", "-H", self.url, *args],
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"docker -H {self.name} {' '.join(args)}: {res.stderr.strip()}")
        return res

    def run(self, name: str, cmd: Sequence[str] = (), image: str = BUSYBOX) -> str:
        """A detached container without a network (labelled as a test's); its ID."""
        argv = docker_run_argv(image, name, owned_labels(), cmd=cmd)
        # docker run -d ... → docker -H URL run -d --network none ...
        args = [*argv[1:3], "--network", "none", *argv[3:]]
        cid = self.docker(*args).stdout.strip()
        self.made.append(cid)
        return cid

    def remove_made(self) -> None:
        if self.made:
            self.docker("rm", "-f", *self.made, check=False, timeout=120)
            self.made.clear()


class ExtraEngine(EngineCli):
    """One extra ``dockerd``; :meth:`start`, :meth:`kill` (SIGKILL), :meth:`stop`."""

    # In a network namespace of its own (see argv); False: the host's, with network_argv's bridge.
    own_netns = True

    def __init__(self, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"sshgw-{name}-", dir="/tmp"))
        self.socket = self.root / "d.sock"
        super().__init__(name, f"unix://{self.socket}")
        self.proc: subprocess.Popen[bytes] | None = None

    def network_argv(self) -> list[str]:
        """How dockerd's networking is set up (a subclass in the host's namespace overrides it)."""
        return ["--bridge=none", "--iptables=false", "--ip-masq=false"]

    def argv(self) -> list[str]:
        r = self.root
        # In a network namespace of its own: a dockerd started with --bridge=none deletes the
        # host's docker0 (moby's removeDefaultBridgeInterface), which breaks the main engine's
        # containers. unshare execs dockerd (same pid); the socket is a file, reachable as before.
        netns = ["unshare", "--net", "--"] if self.own_netns else []
        return [
            *netns,
            "dockerd",
            "--data-root",
            str(r / "data"),
            "--exec-root",
            str(r / "x"),
            "--pidfile",
            str(r / "pid"),
            "-H",
            self.url,
            *self.network_argv(),
            "--live-restore",
        ]

    def start(self, timeout: float = 60) -> None:
        try:
            self._start(timeout)
        except RuntimeError:
            # A containerd of the killed daemon may still hold its socket: once more without it.
            self._kill_leftovers(lambda argv: Path(argv[0]).name in ("containerd", "dockerd"))
            self._start(timeout)

    def _start(self, timeout: float) -> None:
        with (self.root / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.docker("version", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd {self.name} exited:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"dockerd {self.name} did not answer within {timeout:g} s")

    def log(self) -> str:
        return (self.root / "log").read_text(errors="replace")

    def load_busybox(self) -> None:
        save = subprocess.Popen(["docker", "save", BUSYBOX], stdout=subprocess.PIPE)
        assert save.stdout is not None
        res = subprocess.run(
            ["docker", "-H", self.url, "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            timeout=120,
            check=False,
        )
        save.stdout.close()
        save.wait(timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"loading {BUSYBOX} into {self.name}: {res.stderr.decode()}")

    def kill(self) -> None:
        """SIGKILL the daemon and its containerd (the containers live on in their shims: live
        restore; a new daemon starts its own containerd, which finds them)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._kill_leftovers(lambda argv: Path(argv[0]).name == "containerd")

    def stop(self) -> None:
        """Remove its containers, stop the daemon and its containerd, delete its directory."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._kill_leftovers()
        self._unmount()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self, which: Callable[[list[str]], bool] = lambda argv: True) -> None:
        """Processes of this engine still running (containerd, shims) that ``which`` picks; a
        shim's container process goes first (it would live on, orphaned)."""
        marker = str(self.root).encode()
        picked: list[int] = []
        shims: set[int] = set()
        parents: dict[int, int] = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                argv = cmdline.decode(errors="replace").split("\0")
                if marker in cmdline and which(argv):
                    picked.append(int(pid))
                    if "shim" in Path(argv[0]).name:
                        shims.add(int(pid))
        for pid in [c for c, parent in parents.items() if parent in shims] + picked:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _unmount(self) -> None:
        """What the daemon mounted under its directory (overlays, netns), deepest first."""
        with contextlib.suppress(OSError):
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
            for m in sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True):
                subprocess.run(["umount", "-l", m], capture_output=True, check=False)


def start_engines(names: Sequence[str]) -> list[ExtraEngine]:
    """Start ``names`` engines (one after the other: two cores) with busybox in each."""
    engines: list[ExtraEngine] = []
    try:
        for n in names:
            e = ExtraEngine(n)
            engines.append(e)
            e.start()
            e.load_busybox()
    except BaseException:
        for e in engines:
            e.stop()
        raise
    return engines
