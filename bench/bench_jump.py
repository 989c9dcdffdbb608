"""ProxyJump benchmark: ``cat`` of a 200 MB file through ``ssh -J alice@gw alice@c`` against the
direct sshgw path ``ssh alice+c@gw``, measured side by side in one run.

The jump path carries an inner SSH connection inside a channel of the outer one (the gateway
serves both, gateway.ssh.jump): every byte is encrypted twice by the gateway and decrypted twice
by the client.

Run as root from the repository root (needs Docker, OpenSSH client and server):

    python -m bench.bench_jump [--runs 3] [--size-mb 200] [--json FILE]

Target (issue 12): ProxyJump >= 0.8x the direct sshgw path's throughput.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_session import cpu_seconds
from bench.common import (
    CIPHER,
    Bench,
    BenchError,
    Series,
    count_output,
    data_file,
    dump_json,
    log,
    machine_busy,
    print_table,
    run,
    time_run,
)
from tests.support.memory import status_kib
from tests.support.openssh import jump_config

JUMP_TARGET = 0.8  # ProxyJump MB/s / direct sshgw MB/s, at least


def gw_config(b: Bench) -> Path:
    """An ssh_config with the gateway as host ``gw`` (the README's ProxyJump example)."""
    return jump_config(b.tmp / "ssh_config_jump", b.gateway.port, b.user, b.key, cipher=CIPHER)


def jump_ssh(b: Bench, config: Path, command: str) -> list[str]:
    # The inner user name is the gateway user's own: the grant's default login, as alice+c.
    return ["ssh", "-F", str(config), "-J", "gw", "-T", f"{b.user}@{b.container.name}", command]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path")
    ap.add_argument("--size-mb", type=int, default=200, help="file size, in MB (10^6)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    size = args.size_mb * 1_000_000

    try:
        with Bench(keep=args.keep) as b:
            gw_pid = b.gateway.proc.pid if b.gateway.proc else 0
            config = gw_config(b)
            out = run(jump_ssh(b, config, "echo jump-ok")).stdout
            if out != b"jump-ok\n":
                raise BenchError(f"ProxyJump answered {out!r} to 'echo jump-ok'")
            log(f"cat of {args.size_mb} MB x{args.runs} per path")
            with data_file(b.tmp, size) as host_file:
                inside = "/tmp/payload.bin"
                run(["docker", "cp", str(host_file), f"{b.container.name}:{inside}"])
                direct = Series("sshgw (ssh alice+c@gw cat)", nbytes=size)
                jump = Series("ProxyJump (ssh -J gw c cat)", nbytes=size)
                paths = [
                    (direct, b.gw_ssh(f"cat {inside}")),
                    (jump, jump_ssh(b, config, f"cat {inside}")),
                ]
                for s, cmd in paths:  # untimed and counted: checks the bytes, warms the cache
                    got = count_output(cmd)
                    if got != size:
                        raise BenchError(f"{s.name}: got {got} bytes, expected {size}")
                rss_before = status_kib(gw_pid, "VmRSS")
                gw_cpu: dict[str, list[float]] = {s.name: [] for s, _ in paths}
                for _ in range(args.runs):  # round-robin: drift on the machine hits both alike
                    for s, cmd in paths:
                        busy, cpu = machine_busy(), cpu_seconds(gw_pid)
                        s.times.append(time_run(cmd))
                        s.cpu.append(machine_busy() - busy)
                        gw_cpu[s.name].append(cpu_seconds(gw_pid) - cpu)
                rss_peak = status_kib(gw_pid, "VmHWM")
    except BenchError as exc:
        print(f"bench_jump: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"bench_jump: timed out: {exc}", file=sys.stderr)
        return 1

    print()
    print(
        f"sshgw ProxyJump benchmark - {time.strftime('%Y-%m-%d %H:%M')} - {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}, cipher {CIPHER}"
    )
    print_table(f"cat {args.size_mb} MB > /dev/null", [direct, jump], direct, True)
    print("  (the ratio column is against the direct sshgw path here)")
    ratio = jump.mbps / direct.mbps
    print()
    print(
        f"ProxyJump / direct sshgw throughput = {ratio:.2f}x  (target >= {JUMP_TARGET}x):"
        f" {'met' if ratio >= JUMP_TARGET else 'MISSED'}"
    )
    for name, values in gw_cpu.items():
        print(f"gateway CPU per run, {name}: {sorted(values)[len(values) // 2]:.2f} s")
    if rss_before:
        print(
            f"gateway memory: RSS {rss_before / 1024:.0f} MiB before, peak {rss_peak / 1024:.0f} MiB"
        )
    if args.json:
        dump_json(
            args.json,
            {
                "cat": [s.as_dict() for s in (direct, jump)],
                "jump_ratio": round(ratio, 3),
                "gateway_cpu_s": {k: sorted(v) for k, v in gw_cpu.items()},
                "gateway_rss_kib": {"before": rss_before, "peak": rss_peak},
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
