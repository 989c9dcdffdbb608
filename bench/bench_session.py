"""Session benchmark: sshgw against OpenSSH sshd and the docker CLI, measured side by side.

  (a) connect + authenticate + run ``:``   ssh through sshgw | ssh to sshd | docker exec
  (b) ``cat`` of a 200 MB file to /dev/null  (sshgw reads it inside the container, sshd reads
      the same bytes on the host, docker exec reads them in the container; for reference, sshd
      also runs ``docker exec … cat``: the engine path behind a C SSH server)

Run as root from the repository root (needs Docker, OpenSSH client and server):

    python -m bench.bench_session [--connect-runs 20] [--cat-runs 3] [--size-mb 200] [--json FILE]

Targets (issue 2): (a) sshgw <= 0.5x OpenSSH's time; (b) sshgw >= 0.8x OpenSSH's throughput.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CIPHER,
    Bench,
    BenchError,
    Series,
    count_output,
    data_file,
    dump_json,
    interleave,
    log,
    print_table,
    run,
)
from tests.support.memory import status_kib

CONNECT_TARGET = 0.5  # sshgw time / OpenSSH time, at most
CAT_TARGET = 0.8  # sshgw MB/s / OpenSSH MB/s, at least


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--connect-runs", type=int, default=20, help="runs of (a) per path")
    ap.add_argument("--cat-runs", type=int, default=3, help="runs of (b) per path")
    ap.add_argument("--size-mb", type=int, default=200, help="file size for (b), in MB (10^6)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    size = args.size_mb * 1_000_000

    try:
        with Bench(keep=args.keep) as b:
            gw_pid = b.gateway.proc.pid if b.gateway.proc else 0

            # Sanity: every path works and answers what it should.
            out = run(b.gw_ssh("echo sshgw-ok")).stdout
            if out != b"sshgw-ok\n":
                raise BenchError(f"sshgw answered {out!r} to 'echo sshgw-ok'")
            run(b.sshd_ssh(":"))
            run(b.docker_exec("sh", "-c", ":"))

            # (a) connect + auth + run ':'
            log(f"(a) connect + auth + ':' x{args.connect_runs} per path")
            a_gw = Series("sshgw (ssh alice+c@gw :)")
            a_ssh = Series("OpenSSH sshd (ssh host :)")
            a_dx = Series("docker exec c sh -c :")
            interleave(
                [
                    (a_gw, b.gw_ssh(":")),
                    (a_ssh, b.sshd_ssh(":")),
                    (a_dx, b.docker_exec("sh", "-c", ":")),
                ],
                args.connect_runs,
            )

            # (b) cat of a large file
            log(f"(b) cat of {args.size_mb} MB x{args.cat_runs} per path")
            with data_file(b.tmp, size) as host_file:
                inside = "/tmp/payload.bin"
                run(["docker", "cp", str(host_file), f"{b.container.name}:{inside}"])
                paths = [
                    (Series("sshgw (cat in container)", nbytes=size), b.gw_ssh(f"cat {inside}")),
                    (
                        Series("OpenSSH sshd (cat on host)", nbytes=size),
                        b.sshd_ssh(f"cat {host_file}"),
                    ),
                    (Series("docker exec c cat", nbytes=size), b.docker_exec("cat", inside)),
                    # The same engine path behind a C SSH server: sshd runs the docker CLI.
                    (
                        Series("OpenSSH sshd -> docker exec", nbytes=size),
                        b.sshd_ssh(" ".join(b.docker_exec("cat", inside))),
                    ),
                ]
                # One untimed, counted run each: checks the byte count and warms the page cache.
                for s, cmd in paths:
                    got = count_output(cmd)
                    if got != size:
                        raise BenchError(f"{s.name}: got {got} bytes, expected {size}")
                rss_before = status_kib(gw_pid, "VmRSS")
                # Only the sshgw path uses the gateway: its CPU time is that path's cost.
                cpu_before = cpu_seconds(gw_pid)
                interleave(paths, args.cat_runs)
                gw_cpu = (cpu_seconds(gw_pid) - cpu_before) / args.cat_runs
                rss_peak = status_kib(gw_pid, "VmHWM")
            b_gw, b_ssh, b_dx, b_sdx = (s for s, _ in paths)
    except BenchError as exc:
        print(f"bench_session: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"bench_session: timed out: {exc}", file=sys.stderr)
        return 1

    print()
    print(
        f"sshgw session benchmark - {time.strftime('%Y-%m-%d %H:%M')} - {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}, cipher {CIPHER}"
    )
    print_table(
        "(a) connect + auth + run ':' (wall time per run)", [a_gw, a_ssh, a_dx], a_ssh, False
    )
    print_table(f"(b) cat {args.size_mb} MB > /dev/null", [b_gw, b_ssh, b_dx, b_sdx], b_ssh, True)
    a_ratio = a_gw.median / a_ssh.median
    b_ratio = b_gw.mbps / b_ssh.mbps
    print()
    print(
        f"(a) sshgw / OpenSSH time       = {a_ratio:.2f}x  (target <= {CONNECT_TARGET}x):"
        f" {'met' if a_ratio <= CONNECT_TARGET else 'MISSED'}"
    )
    print(
        f"(b) sshgw / OpenSSH throughput = {b_ratio:.2f}x  (target >= {CAT_TARGET}x):"
        f" {'met' if b_ratio >= CAT_TARGET else 'MISSED'}"
    )
    print(
        f"    for reference: OpenSSH sshd running 'docker exec' = {b_sdx.mbps / b_ssh.mbps:.2f}x,"
        f" sshgw / that = {b_gw.mbps / b_sdx.mbps:.2f}x"
    )
    if gw_cpu:
        print(
            f"gateway CPU per (b) run: {gw_cpu:.2f} s"
            f" ({gw_cpu / b_gw.median * 100:.0f}% of one core over the run)"
        )
    if rss_before:
        print(
            f"gateway memory: RSS {rss_before / 1024:.0f} MiB before (b),"
            f" peak {rss_peak / 1024:.0f} MiB"
        )
    if args.json:
        dump_json(
            args.json,
            {
                "connect": [s.as_dict() for s in (a_gw, a_ssh, a_dx)],
                "cat": [s.as_dict() for s in (b_gw, b_ssh, b_dx, b_sdx)],
                "connect_ratio": round(a_ratio, 3),
                "cat_ratio": round(b_ratio, 3),
                "gateway_rss_kib": {"before": rss_before, "peak": rss_peak},
                "gateway_cpu_s_per_cat": round(gw_cpu, 3),
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
