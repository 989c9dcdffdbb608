"""Limits benchmark: the gateway's memory under clients that stop reading, and under many clients.

  (a) one client with a 1 GiB channel window runs ``cat /dev/zero`` and stops reading its TCP
      socket: the gateway's RSS growth after ``--watch`` seconds
  (b) one client pipelines 48 SFTP reads of 4 MiB (of a 256 MiB file) and stops reading: the
      gateway's RSS growth after ``--watch`` seconds
  (c) ``--transfers`` concurrent 1 MB transfers: OpenSSH ``ssh … cat`` clients that all connect
      first, then all read at once; each copy is checked by SHA-256: the gateway's peak RSS
  (d) ``--shells`` idle PTY shells (asyncssh clients, one connection each): the gateway's RSS
      once all are up, and its peak while they connected

Each part runs against its own, freshly started gateway (its idle RSS is printed too).
(a) and (b) are also asserted as a security bound in tests/security/test_memory.py.

Run as root from the repository root (needs Docker and the OpenSSH client):

    python -m bench.bench_limits [--transfers 500] [--shells 1000] [--watch 10] [--only abcd]
                                 [--json FILE]

Targets (issue 8, item 4): (a), (b) <= 64 MiB growth each; (c) <= 250 MiB peak; (d) <= 300 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncssh

from bench.common import (
    BenchError,
    Container,
    Gateway,
    dump_json,
    keygen,
    log,
    run,
    ssh_argv,
)
from tests.support import hostile
from tests.support.memory import status_kib, watch_growth

MIB = 1 << 20
NON_READING_TARGET = 64 * MIB  # growth, at most, for (a) and (b)
TRANSFERS_TARGET = 250 * MIB  # peak RSS, at most, for (c)
# (c) and (d) open hundreds of connections from one address at once; the default start-up
# limits (SSHGW_MAX_STARTUPS 100:30:300, 32 per source) refuse that by design, so the lab
# gateway allows it: what is measured here is memory, not the admission policy.
LAB_LIMITS = {"SSHGW_MAX_STARTUPS": "5000", "SSHGW_MAX_STARTUPS_PER_SOURCE": "5000"}
SHELLS_TARGET = 300 * MIB  # RSS, at most, for (d)
HUGE_WINDOW = 1 << 30
CONNECT_AT_ONCE = 16  # clients connecting at the same time (below any per-source limit)
TRANSFER_FILE = "/tmp/bench-1mb.bin"
BIG_FILE = "/tmp/bench-big.bin"


def rss(pid: int) -> int:
    return status_kib(pid, "VmRSS") * 1024


def peak_rss(pid: int) -> int:
    return status_kib(pid, "VmHWM") * 1024


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


@dataclass
class Result:
    name: str
    what: str  # "growth" | "peak" | "rss"
    value: int
    target: int
    idle: int
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measure": self.what,
            "bytes": self.value,
            "target_bytes": self.target,
            "met": self.met,
            "idle_rss_bytes": self.idle,
            "note": self.note,
        }


# The hostile clients of (a) and (b) (tests/support/hostile.py) ------------------------------------


async def non_reading_exec(
    port: int, login: str, key: asyncssh.SSHKey, pid: int, watch: float
) -> int:
    async with asyncssh.connect(
        "127.0.0.1", port, username=login, client_keys=[key], known_hosts=None, agent_path=None
    ) as conn:
        growth = await hostile.growth_under_cat_zero(conn, conn, pid, watch, HUGE_WINDOW)
        conn.abort()
    return growth


async def non_reading_sftp(
    port: int, login: str, key: asyncssh.SSHKey, pid: int, watch: float
) -> int:
    async with asyncssh.connect(
        "127.0.0.1", port, username=login, client_keys=[key], known_hosts=None, agent_path=None
    ) as conn:
        chan, sink = await conn.create_session(
            hostile.Sink, subsystem="sftp", encoding=None, window=HUGE_WINDOW
        )
        chan.write(hostile.sftp_packet(hostile.FXP_INIT, (3).to_bytes(4, "big")))  # INIT v3
        if (await sink.sftp_packet(timeout=60))[0] != hostile.FXP_VERSION:
            raise BenchError("sftp: no VERSION answer")
        req = (
            (1).to_bytes(4, "big") + hostile.sftp_string(BIG_FILE.encode()) + (1).to_bytes(4, "big")
        )
        chan.write(
            hostile.sftp_packet(hostile.FXP_OPEN, req + (0).to_bytes(4, "big"))
        )  # READ, no attrs
        kind, body = await sink.sftp_packet(timeout=60)
        if kind != hostile.FXP_HANDLE:
            raise BenchError(f"sftp: open answered type {kind}: {body[:200]!r}")
        handle = body[8 : 8 + int.from_bytes(body[4:8], "big")]
        await asyncio.sleep(0.5)
        base = rss(pid)
        hostile.stop_reading(conn)
        size = 4 * MIB
        for i in range(48):
            req = (2 + i).to_bytes(4, "big") + hostile.sftp_string(handle)
            req += (i * size).to_bytes(8, "big") + size.to_bytes(4, "big")
            chan.write(hostile.sftp_packet(hostile.FXP_READ, req))
        growth = await watch_growth(pid, base, watch)
        conn.abort()
    return growth


# (c) many concurrent transfers -------------------------------------------------------------------


async def transfers(
    port: int, login: str, key: Path, n: int, digest: str, size: int, pid: int
) -> float:
    """``n`` OpenSSH clients connect, then all read the file at once; returns the seconds taken."""
    argv = ssh_argv(port, login, key, f"echo ready; read x; cat {TRANSFER_FILE}")
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    procs: list[asyncio.subprocess.Process] = []

    async def connect() -> None:
        async with gate:
            p = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            procs.append(p)
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 180)
            if line != b"ready\n":
                err = await p.stderr.read() if p.stderr else b""
                raise BenchError(f"transfer client said {line!r}: {err.decode(errors='replace')}")

    async def finish(p: asyncio.subprocess.Process) -> None:
        assert p.stdout is not None and p.stderr is not None
        h = hashlib.sha256()
        total = 0
        while chunk := await p.stdout.read(1 << 16):
            h.update(chunk)
            total += len(chunk)
        err = await p.stderr.read()
        code = await p.wait()
        if code != 0 or total != size or h.hexdigest() != digest:
            raise BenchError(
                f"transfer: exit {code}, {total} bytes, sha256 ok={h.hexdigest() == digest}: "
                f"{err.decode(errors='replace')[-500:]}"
            )

    try:
        await asyncio.gather(*(connect() for _ in range(n)))
        log(f"(c) {n} sessions up (gateway RSS {mib(rss(pid))}); all read now")
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
        await asyncio.gather(*(finish(p) for p in procs))
        return time.perf_counter() - t0
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()


# (d) many idle shells ------------------------------------------------------------------------------


async def idle_shells(
    port: int, login: str, key: asyncssh.SSHKey, n: int, pid: int, settle: float
) -> tuple[int, int]:
    """``n`` PTY shells, each on its own connection, left idle; returns (RSS, peak RSS)."""
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    conns: list[asyncssh.SSHClientConnection] = []

    async def one() -> None:
        async with gate:
            conn = await asyncssh.connect(
                "127.0.0.1",
                port,
                username=login,
                client_keys=[key],
                known_hosts=None,
                agent_path=None,
            )
            conns.append(conn)
            proc = await conn.create_process(term_type="xterm", term_size=(80, 24), encoding=None)
            seen = b""
            async with asyncio.timeout(180):
                while b"# " not in seen and b"$ " not in seen:
                    chunk = await proc.stdout.read(4096)
                    if not chunk:
                        raise BenchError(f"shell ended before its prompt: {seen[-300:]!r}")
                    seen = seen[-4096:] + chunk

    try:
        await asyncio.gather(*(one() for _ in range(n)))
        log(f"(d) {n} shells up; idle for {settle:.0f} s")
        await asyncio.sleep(settle)
        return rss(pid), peak_rss(pid)
    finally:
        for conn in conns:
            conn.abort()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)


# Set-up ------------------------------------------------------------------------------------------------


class Env(contextlib.ExitStack):
    """Temp directory, client key, one container; gateways are started per part."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="sshgw-bench-limits-"))
        self.key_path = self.tmp / "client_ed25519"
        self.container = Container()
        self.user = "alice"
        self.parts = 0

    def __enter__(self) -> Env:
        super().__enter__()
        try:
            if not self.keep:
                self.callback(shutil.rmtree, self.tmp, True)
            keygen(self.key_path, "bench-client")
            self.key = asyncssh.read_private_key(str(self.key_path))
            log(f"container {self.container.name}")
            self.callback(self.container.stop)
            self.container.start()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def login(self) -> str:
        return f"{self.user}+{self.container.name}"

    @contextlib.contextmanager
    def gateway(self) -> Iterator[Gateway]:
        self.parts += 1
        gw = Gateway(self.tmp / f"gateway-{self.parts}", LAB_LIMITS)
        try:
            gw.start()
            gw.cli("user", "add", self.user, "--key", str(self.key_path) + ".pub")
            gw.cli(
                "grant",
                "add",
                "--user",
                self.user,
                "--target",
                "bench*",
                "--rights",
                "shell,exec,sftp-read",
            )
            time.sleep(1.0)  # let start-up settle before the idle figure
            yield gw
        finally:
            gw.stop()


def _pid(gw: Gateway) -> int:
    if gw.proc is None or gw.proc.poll() is not None:
        raise BenchError(f"the gateway is not running; log:\n{gw.log_tail()}")
    return gw.proc.pid


def _part(env: Env, fn: Callable[[Gateway, int], Awaitable[Result]]) -> Result:
    with env.gateway() as gw:
        return asyncio.run(fn(gw, _pid(gw)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--transfers", type=int, default=500, help="concurrent transfers in (c)")
    ap.add_argument("--shells", type=int, default=1000, help="idle PTY shells in (d)")
    ap.add_argument("--watch", type=float, default=10.0, help="seconds of not reading in (a), (b)")
    ap.add_argument("--only", default="abcd", help="which parts to run (letters)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)

    # (c) and (d) hold thousands of sockets and pipes (the gateway inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    results: list[Result] = []
    try:
        with Env(keep=args.keep) as env:
            c = env.container.name
            if "a" in args.only:
                log(f"(a) cat /dev/zero to a client that stops reading, {args.watch:.0f} s")

                async def part_a(gw: Gateway, pid: int) -> Result:
                    idle = rss(pid)
                    g = await non_reading_exec(gw.port, env.login, env.key, pid, args.watch)
                    return Result(
                        "(a) exec cat /dev/zero, client stops reading",
                        "growth",
                        g,
                        NON_READING_TARGET,
                        idle,
                        f"after {args.watch:.0f} s",
                    )

                results.append(_part(env, part_a))
            if "b" in args.only:
                log("(b) 48 pipelined SFTP reads of 4 MiB, client stops reading")
                run(["docker", "exec", c, "dd", "if=/dev/zero", f"of={BIG_FILE}", "bs=1M",
                     "seek=255", "count=1"])  # fmt: skip

                async def part_b(gw: Gateway, pid: int) -> Result:
                    idle = rss(pid)
                    g = await non_reading_sftp(gw.port, env.login, env.key, pid, args.watch)
                    return Result(
                        "(b) sftp 48 x 4 MiB reads, client stops reading",
                        "growth",
                        g,
                        NON_READING_TARGET,
                        idle,
                        f"after {args.watch:.0f} s",
                    )

                results.append(_part(env, part_b))
            if "c" in args.only:
                size = 1_000_000
                payload = os.urandom(size)
                digest = hashlib.sha256(payload).hexdigest()
                src = env.tmp / "1mb.bin"
                src.write_bytes(payload)
                run(["docker", "cp", str(src), f"{c}:{TRANSFER_FILE}"])
                run(["docker", "exec", c, "chmod", "644", TRANSFER_FILE])
                log(f"(c) {args.transfers} concurrent 1 MB transfers (ssh cat, SHA-256 checked)")

                async def part_c(gw: Gateway, pid: int) -> Result:
                    idle = rss(pid)
                    secs = await transfers(
                        gw.port, env.login, env.key_path, args.transfers, digest, size, pid
                    )
                    return Result(
                        f"(c) {args.transfers} concurrent 1 MB transfers",
                        "peak",
                        peak_rss(pid),
                        TRANSFERS_TARGET,
                        idle,
                        f"all {args.transfers} read in {secs:.1f} s, every SHA-256 ok",
                    )

                results.append(_part(env, part_c))
            if "d" in args.only:
                log(f"(d) {args.shells} idle PTY shells")

                async def part_d(gw: Gateway, pid: int) -> Result:
                    idle = rss(pid)
                    now, peak = await idle_shells(
                        gw.port, env.login, env.key, args.shells, pid, 5.0
                    )
                    return Result(
                        f"(d) {args.shells} idle PTY shells",
                        "rss",
                        now,
                        SHELLS_TARGET,
                        idle,
                        f"peak while connecting {mib(peak)}",
                    )

                results.append(_part(env, part_d))
    except BenchError as exc:
        print(f"bench_limits: {exc}", file=sys.stderr)
        return 1
    except (subprocess.TimeoutExpired, TimeoutError) as exc:
        print(f"bench_limits: timed out: {exc!r}", file=sys.stderr)
        return 1

    print()
    print(
        f"sshgw limits benchmark - {time.strftime('%Y-%m-%d %H:%M')} - {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}"
    )
    print(f"  {'part':<48} {'measure':>8} {'value':>12} {'target':>12}  {'':<7} idle RSS")
    for r in results:
        print(
            f"  {r.name:<48} {r.what:>8} {mib(r.value):>12} {'<= ' + mib(r.target):>12}"
            f"  {'met' if r.met else 'MISSED':<7} {mib(r.idle)}"
        )
        if r.note:
            print(f"  {'':<48} {r.note}")
    if args.json:
        dump_json(args.json, {"results": [r.as_dict() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
