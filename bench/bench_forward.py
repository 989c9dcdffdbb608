"""Forwarding benchmark: ``ssh -L`` through sshgw against ``ssh -L`` through OpenSSH's sshd.

Measured side by side in one run, interleaved round-robin. Sections (``--only``, comma list):

  forward   a GET of a 200 MB file from busybox ``httpd`` in a container, with curl, through
            ``ssh -L`` via sshd on the host (sshd connects to the container's address) | via
            sshgw to the same address (direct) | via sshgw to the container's loopback (a
            busybox ``nc`` relay exec'd in the container)

  jump      ``cat`` of a 200 MB file through ProxyJump (``ssh -J gw alice@c``, the gateway serves
            the inner SSH connection itself) | through ``ssh alice+c@gw`` (the direct sshgw path)

Each section is one function ``section_NAME(bench, args) -> Section`` registered in
:data:`SECTIONS`; a section prints its table and verdicts from the rows it measured.
Every ``ssh -N -L`` client is started once per path (setup not timed) and each GET checks the
byte count.

Run as root from the repository root (needs Docker, OpenSSH client and server, curl):

    python -m bench.bench_forward [--only forward,jump] [--runs 3] [--size-mb 200] [--json FILE]

Targets (issue 12): sshgw ``-L`` >= 0.7x OpenSSH's throughput; ProxyJump >= 0.8x the direct sshgw
path's (it adds one inner SSH layer: the gateway encrypts every byte twice).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_session import cpu_seconds
from bench.common import (
    CIPHER,
    Bench,
    BenchError,
    Series,
    client_opts,
    count_output,
    data_file,
    dump_json,
    free_port,
    log,
    machine_busy,
    print_table,
    run,
    stop_process,
    timed,
)
from tests.support.openssh import jump_config
from tests.support.process import listening

FORWARD_TARGET = 0.7  # sshgw -L / OpenSSH -L throughput
JUMP_TARGET = 0.8  # ProxyJump / direct sshgw throughput
HTTPD_ALL = 8081  # busybox httpd on all addresses (reached on the container's address)
HTTPD_LOOP = 8080  # busybox httpd on 127.0.0.1 only (reached through a relay)


@dataclass
class Section:
    """What one section measured: its tables (title, rows, baseline) and its verdicts."""

    tables: list[tuple[str, list[Series], Series]] = field(default_factory=list)
    verdicts: list[tuple[str, float, float]] = field(default_factory=list)  # label, value, target


@contextlib.contextmanager
def forward_client(port: int, login: str, key: Path, dest: str) -> Iterator[int]:
    """``ssh -N -L LOCAL:dest`` to the SSH server on ``port``; yields the local port."""
    local = free_port()
    argv = [
        "ssh",
        *client_opts(key),
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-p",
        str(port),
        "-L",
        f"127.0.0.1:{local}:{dest}",
        f"{login}@127.0.0.1",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not listening(local):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise BenchError(f"ssh -L {dest} did not start: {err.strip()[-1000:]}")
            time.sleep(0.05)
        yield local
    finally:
        stop_process(proc)


def get(local: int, path: str, size: int) -> float:
    """Seconds for one ``curl`` GET of ``path`` through the local port; checks the size."""
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "300"]
    t0 = time.perf_counter()
    res = subprocess.run(
        [*argv, f"http://127.0.0.1:{local}{path}"], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - t0
    if res.returncode != 0 or res.stdout.strip() != str(size):
        raise BenchError(f"GET {path}: exit {res.returncode}, {res.stdout!r} bytes, {res.stderr}")
    return elapsed


def section_forward(b: Bench, args: argparse.Namespace) -> Section:
    size = args.size_mb * 1_000_000
    c = b.container.name
    b.container.exec(
        "sh",
        "-c",
        f"mkdir -p /www && head -c {size} /dev/urandom > /www/big.bin && "
        f"(httpd -p 0.0.0.0:{HTTPD_ALL} -h /www; httpd -p 127.0.0.1:{HTTPD_LOOP} -h /www)",
    )
    ip = (
        run(
            [
                "docker",
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                c,
            ]
        )
        .stdout.decode()
        .strip()
    )
    b.gateway.cli(
        "grant", "add", "--user", b.user, "--target", "bench*",
        "--rights", "forward", "--ports", f"{HTTPD_LOOP},{HTTPD_ALL}",
    )  # fmt: skip
    gw_login = f"{b.user}+{c}"
    paths = [
        (Series("OpenSSH sshd -L", nbytes=size), b.sshd.port, "root", f"{ip}:{HTTPD_ALL}"),
        (Series("sshgw -L (direct)", nbytes=size), b.gateway.port, gw_login, f"{c}:{HTTPD_ALL}"),
        (
            Series("sshgw -L (relay: nc)", nbytes=size),
            b.gateway.port,
            gw_login,
            f"localhost:{HTTPD_LOOP}",
        ),
    ]
    with contextlib.ExitStack() as stack:
        locals_ = [
            stack.enter_context(forward_client(p, login, b.key, d)) for _, p, login, d in paths
        ]
        for (s, *_), local in zip(paths, locals_, strict=True):
            get(local, "/big.bin", size)  # warm-up (page cache, first relay)
            log(f"{s.name}: warm")
        for _ in range(args.runs):
            for (s, *_), local in zip(paths, locals_, strict=True):
                busy = machine_busy()
                s.times.append(get(local, "/big.bin", size))
                s.cpu.append(machine_busy() - busy)
    rows = [s for s, *_ in paths]
    openssh, direct, relay = rows
    sec = Section()
    sec.tables.append((f"(forward) GET of {args.size_mb} MB through ssh -L, curl", rows, openssh))
    sec.verdicts.append(
        ("-L direct: sshgw / OpenSSH throughput", direct.mbps / openssh.mbps, FORWARD_TARGET)
    )
    sec.verdicts.append(
        ("-L relay: sshgw / OpenSSH throughput", relay.mbps / openssh.mbps, FORWARD_TARGET)
    )
    return sec


def section_jump(b: Bench, args: argparse.Namespace) -> Section:
    size = args.size_mb * 1_000_000
    c = b.container.name
    config = jump_config(b.tmp / "ssh_config_jump", b.gateway.port, b.user, b.key, cipher=CIPHER)
    # The inner user name is the gateway user's own: the grant's default login, as alice+c.
    jump = ["ssh", "-F", str(config), "-J", "gw", "-T", f"{b.user}@{c}"]
    gw_pid = b.gateway.proc.pid if b.gateway.proc else 0
    with data_file(b.tmp, size) as host_file:
        inside = "/tmp/payload.bin"
        run(["docker", "cp", str(host_file), f"{c}:{inside}"])
        paths = [
            (Series("sshgw (ssh alice+c@gw cat)", nbytes=size), b.gw_ssh(f"cat {inside}")),
            (Series("ProxyJump (ssh -J gw c cat)", nbytes=size), [*jump, f"cat {inside}"]),
        ]
        for s, cmd in paths:  # untimed and counted: checks the bytes, warms the page cache
            if (got := count_output(cmd)) != size:
                raise BenchError(f"{s.name}: got {got} bytes, expected {size}")
        gw_cpu: dict[str, list[float]] = {s.name: [] for s, _ in paths}
        for _ in range(args.runs):  # round-robin: drift on the machine hits both alike
            for s, cmd in paths:
                cpu = cpu_seconds(gw_pid)
                timed(s, cmd)
                gw_cpu[s.name].append(cpu_seconds(gw_pid) - cpu)
    for name, values in gw_cpu.items():
        log(f"gateway CPU per run, {name}: {statistics.median(values):.2f} s")
    direct, through = (s for s, _ in paths)
    sec = Section()
    sec.tables.append(
        (
            f"(jump) cat {args.size_mb} MB > /dev/null; ratio vs the direct sshgw path",
            [direct, through],
            direct,
        )
    )
    sec.verdicts.append(
        ("ProxyJump / direct sshgw throughput", through.mbps / direct.mbps, JUMP_TARGET)
    )
    return sec


# Sections, in the order they run. A new measurement is one more function here.
SECTIONS: dict[str, Callable[[Bench, argparse.Namespace], Section]] = {
    "forward": section_forward,
    "jump": section_jump,
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections to run (comma list)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path")
    ap.add_argument("--size-mb", type=int, default=200, help="payload size, in MB (10^6)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")

    results: dict[str, Section] = {}
    try:
        with Bench(keep=args.keep) as b:
            for name in chosen:
                log(f"section {name}")
                results[name] = SECTIONS[name](b, args)
    except BenchError as exc:
        print(f"bench_forward: {exc}", file=sys.stderr)
        return 1

    print(
        f"\nsshgw forwarding benchmark: {args.runs} runs per path, {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}, cipher {CIPHER}"
    )
    verdicts: dict[str, float] = {}
    for sec in results.values():
        for title, rows, baseline in sec.tables:
            print_table(title, rows, baseline, True)
    print()
    for sec in results.values():
        for label, value, target in sec.verdicts:
            verdicts[label] = round(value, 3)
            ok = "met" if value >= target else "MISSED"
            print(f"{label:<44} = {value:6.2f}  (target >= {target}): {ok}")
    if args.json:
        dump_json(
            args.json,
            {
                "sections": {
                    name: [s.as_dict() for _, rows, _ in sec.tables for s in rows]
                    for name, sec in results.items()
                },
                "verdicts": verdicts,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
