"""Scale benchmark: many engines behind one gateway, one gateway vs two behind HAProxy.

  (a) login latency (connect + authenticate + run ``:``) through a gateway serving 1 engine with
      10 containers vs one serving 3 engines with 300 containers each (extra ``dockerd``
      instances, tests/support/engines.py; the 300 are created, not started: a directory holds
      every container); interleaved runs
  (b) the RSS of the gateway serving the 3 engines (after (a))
  (c) session start rate (``ssh … true`` from parallel clients for a fixed time) through one
      gateway vs two replicas behind HAProxy (PROXY protocol v2, one PostgreSQL database)

Run as root from the repository root, under the benchmark lock:

    flock /tmp/bench.lock python -m bench.bench_scale [--runs 20] [--seconds 20] [--clients 6]

Target (issue 13): (a) 3 x 300 within 10% of 1 x 10.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BenchError,
    Gateway,
    Series,
    client_opts,
    interleave,
    log,
    print_table,
    ssh_argv,
)
from tests.e2e.cluster import BALANCER, accepts, fresh_database, haproxy_config
from tests.support.engines import ExtraEngine, start_engines
from tests.support.memory import status_kib
from tests.support.openssh import keygen
from tests.support.process import HOST, free_port, stop_process

LOGIN_TARGET = 1.10  # 3 x 300 login time / 1 x 10 login time, at most
PG_URL = os.environ.get("SSHGW_TEST_PG_URL", "postgresql+asyncpg://sshgw:sshgw@127.0.0.1:5432")


def create_many(engine: ExtraEngine, prefix: str, n: int) -> None:
    """``n`` containers created (not started) on ``engine``, four ``docker create`` at a time."""

    def one(i: int) -> None:
        res = subprocess.run(
            ["docker", "-H", engine.url, "create", "--network", "none", "--name",
             f"{prefix}-{i:04d}", "--label", "sshgw-bench=1", "sshgw-test/busybox:1", "sleep", "1"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        if res.returncode != 0:
            raise BenchError(f"docker create on {engine.name}: {res.stderr.decode().strip()}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))


def gateway_with_engines(
    root: Path, key: Path, engines: Sequence[ExtraEngine], env: dict[str, str] | None = None
) -> Gateway:
    gw = Gateway(root, env)
    gw.start()
    gw.cli("user", "add", "alice", "--key", f"{key}.pub")
    gw.cli("grant", "add", "--user", "alice", "--target", "*", "--rights", "shell,exec")
    for e in engines:
        gw.cli("engine", "add", e.name, e.url)
    return gw


def wait_listed(gw: Gateway, key: Path, target: str, timeout: float = 60) -> None:
    """Until the gateway reaches ``target`` (it reads the engines every SSHGW_ENGINE_POLL_INTERVAL)."""
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run(ssh_argv(gw.port, f"alice+{target}", key, ":"), capture_output=True)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{target} not reachable through the gateway: {res.stderr!r}")
        time.sleep(0.5)


def start_rate(argv_for: Sequence[list[str]], clients: int, seconds: float) -> float:
    """Sessions started and ended per second by ``clients`` parallel loops of ``argv``."""
    done = [0] * clients
    failed: list[bytes] = []
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        argv = argv_for[i % len(argv_for)]
        while time.monotonic() < stop:
            res = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
            if res.returncode == 0:
                done[i] += 1
            elif len(failed) < 3:
                failed.append(res.stderr)

    began = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        log(f"  failures: {failed}")
    return sum(done) / (time.monotonic() - began)


@contextlib.contextmanager
def haproxy(tmp: Path, backends: list[int]) -> Iterator[int]:
    exe = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if exe is None:
        raise BenchError("haproxy not found (apt-get install haproxy)")
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, backends))
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not accepts(port):
            if time.monotonic() > deadline:
                raise BenchError("haproxy did not accept connections")
            time.sleep(0.2)
        yield port
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="login runs per gateway in (a)")
    ap.add_argument("--containers", type=int, default=300, help="containers per engine, 3 engines")
    ap.add_argument("--seconds", type=float, default=20, help="duration of each rate run in (c)")
    ap.add_argument("--clients", type=int, default=6, help="parallel clients in (c)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sshgw-bench-scale-"))
    key = keygen(tmp / "client_ed25519", "bench-client")
    engines: list[ExtraEngine] = []
    gateways: list[Gateway] = []
    try:
        log("starting 4 extra dockerd (e0: 1 x 10; e1-e3: 3 x N)")
        engines = start_engines(["e0", "e1", "e2", "e3"])
        e0, *three = engines
        e0.run("target-e0", ["sleep", "100000"])
        create_many(e0, "small", 9)
        for e in three:
            log(f"creating {args.containers} containers on {e.name}")
            create_many(e, f"c-{e.name}", args.containers - (1 if e.name == "e3" else 0))
        three[-1].run("target-e3", ["sleep", "100000"])
        small = gateway_with_engines(tmp / "small", key, [e0])
        big = gateway_with_engines(tmp / "big", key, three)
        gateways += [small, big]
        wait_listed(small, key, "target-e0")
        wait_listed(big, key, "target-e3")
        time.sleep(3)  # the directories are listed (events streams open)

        log(f"(a) login + ':' x{args.runs} per gateway")
        a_small = Series("1 engine x 10 containers")
        a_big = Series(f"3 engines x {args.containers}")
        interleave(
            [
                (a_small, ssh_argv(small.port, "alice+target-e0", key, ":")),
                (a_big, ssh_argv(big.port, "alice+target-e3", key, ":")),
            ],
            args.runs,
        )
        big_pid = big.proc.pid if big.proc else 0
        rss, hwm = status_kib(big_pid, "VmRSS"), status_kib(big_pid, "VmHWM")
        small_pid = small.proc.pid if small.proc else 0
        rss_small = status_kib(small_pid, "VmRSS")
        for g in gateways:
            g.stop()
        gateways.clear()

        log("(c) session start rate: one gateway vs two behind HAProxy (PostgreSQL)")
        with fresh_database(PG_URL) as url:
            env = {
                "SSHGW_DATABASE_URL": url,
                "SSHGW_HOST_KEY_DIR": str(tmp / "hostkeys"),
                "SSHGW_PROXY_PROTOCOL": "true",
                "SSHGW_PROXY_FROM": BALANCER,
            }
            r1, r2 = Gateway(tmp / "r1", env), Gateway(tmp / "r2", env)
            r1.cli("db", "upgrade")  # PostgreSQL: the schema is an admin's step
            for g in (r1, r2):
                g.start()
                gateways.append(g)
            r1.cli("user", "add", "alice", "--key", f"{key}.pub")
            r1.cli("grant", "add", "--user", "alice", "--target", "*", "--rights", "exec")
            r1.cli("engine", "add", "e0", e0.url)
            opts = [*client_opts(key), "-T", "-o", "ConnectTimeout=30"]
            with haproxy(tmp, [r1.port]) as p1, haproxy(tmp, [r1.port, r2.port]) as p2:

                def via(port: int) -> list[str]:
                    return ["ssh", *opts, "-b", "127.0.0.2", "-p", str(port),
                            f"alice+target-e0@{HOST}", "true"]  # fmt: skip

                time.sleep(6)  # both replicas read the engine
                subprocess.run(via(p2), check=True, capture_output=True, timeout=60)
                log(f"  one gateway, {args.clients} clients, {args.seconds:g} s")
                rate_one = start_rate([via(p1)], args.clients, args.seconds)
                log(f"  two replicas, {args.clients} clients, {args.seconds:g} s")
                rate_two = start_rate([via(p2)], args.clients, args.seconds)
    except BenchError as exc:
        print(f"bench_scale: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"bench_scale: timed out: {exc}", file=sys.stderr)
        return 1
    finally:
        for g in gateways:
            with contextlib.suppress(Exception):
                g.stop()
        for e in engines:
            e.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"sshgw scale benchmark - {time.strftime('%Y-%m-%d %H:%M')} - {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print_table("(a) login + run ':' (wall time per run)", [a_small, a_big], a_small, False)
    ratio = a_big.median / a_small.median
    print("  ('vs OpenSSH' above: vs the 1 x 10 gateway)")
    print()
    print(f"(b) gateway RSS with 3 engines x {args.containers}: {rss / 1024:.1f} MiB")
    print(f"    (peak {hwm / 1024:.1f} MiB; the 1 x 10 gateway: {rss_small / 1024:.1f} MiB)")
    print()
    print(f"(c) session starts per second, {args.clients} parallel clients, {args.seconds:g} s")
    print(f"  one gateway behind HAProxy   {rate_one:6.1f}/s")
    print(f"  two replicas behind HAProxy  {rate_two:6.1f}/s   {rate_two / rate_one:.2f}x")
    print()
    verdict = "ok" if ratio <= LOGIN_TARGET else "MISSED"
    print(
        f"target (a): 3 x {args.containers} login time <= {LOGIN_TARGET:.2f}x 1 x 10: {ratio:.2f}x {verdict}"
    )
    return 0 if ratio <= LOGIN_TARGET else 2


if __name__ == "__main__":
    sys.exit(main())
