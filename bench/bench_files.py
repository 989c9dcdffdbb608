"""File transfer benchmark: sshgw's SFTP/SCP against OpenSSH's internal-sftp and ``docker cp``.

Measured side by side in one run, interleaved round-robin:

  (a) get of a 200 MB file   sftp / scp through sshgw | sftp / scp from sshd (internal-sftp,
                              the same bytes on the host) | docker cp container:file host
  (b) put of a 200 MB file   the same paths the other way
  (c) ``ls -l`` of a directory of 10 000 files   sftp through sshgw | sftp to sshd | docker exec ls

Every transfer lands in a file on the same disk; each path's result is checked once (sha256).
The gateway's RSS is sampled during the transfers.

Run as root from the repository root (needs Docker, OpenSSH client and server):

    python -m bench.bench_files [--runs 3] [--size-mb 200] [--files 10000] [--json FILE]

Targets (issue 3): sshgw >= 0.8x OpenSSH's throughput and >= 1.0x docker cp's; listing <= 1 s.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CIPHER,
    Bench,
    BenchError,
    Series,
    client_opts,
    data_file,
    dump_json,
    interleave,
    log,
    print_table,
    run,
)

OPENSSH_TARGET = 0.8
DOCKER_TARGET = 1.0
LIST_TARGET = 1.0  # seconds


def sftp_opts(port: int, key: Path) -> list[str]:
    """Options for scp and sftp (their port flag is -P)."""
    return [*client_opts(key), "-P", str(port)]


class BatchFile:
    """``sftp -b FILE``: the batch commands live in a file so the argv can be re-run as is."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.n = 0

    def __call__(self, commands: str) -> Path:
        self.n += 1
        path = self.directory / f"batch{self.n}.txt"
        path.write_text(commands)
        return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class RssSampler(threading.Thread):
    """Samples a process's RSS (KiB) every 50 ms; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.first = self.rss()
        self._stop_event = threading.Event()

    def rss(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def check(name: str, got: str, want: str) -> None:
    if got != want:
        raise BenchError(f"{name}: the transferred file differs (sha256 {got[:12]} != {want[:12]})")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path")
    ap.add_argument("--size-mb", type=int, default=200, help="file size, in MB (10^6)")
    ap.add_argument("--files", type=int, default=10_000, help="entries of the listed directory")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    size = args.size_mb * 1_000_000

    try:
        with Bench(keep=args.keep) as b:
            c = b.container.name
            gw_pid = b.gateway.proc.pid if b.gateway.proc else 0
            b.gateway.cli(
                "grant", "add", "--user", b.user, "--target", "bench*",
                "--rights", "sftp-read,sftp-write", "--logins", "root",
            )  # fmt: skip
            gw = sftp_opts(b.gateway.port, b.key)
            ssh = sftp_opts(b.sshd.port, b.key)
            gw_dest = f"{b.user}+{c}@127.0.0.1"
            sshd_dest = "root@127.0.0.1"
            work = b.tmp / "work"
            work.mkdir()
            batch = BatchFile(b.tmp)

            with data_file(b.tmp, size) as src:
                want = sha256(src)
                inside = "/tmp/payload.bin"
                run(["docker", "cp", str(src), f"{c}:{inside}"])
                down = work / "down.bin"
                host_up = work / "up-host.bin"
                in_up = "/tmp/up.bin"

                get_paths = [
                    (
                        Series("sshgw sftp get", nbytes=size),
                        ["sftp", *gw, "-b", str(batch(f"get {inside} {down}\n")), gw_dest],
                    ),
                    (Series("sshgw scp get", nbytes=size), ["scp", *gw, f"{gw_dest}:{inside}", str(down)]),
                    (
                        Series("OpenSSH sftp get", nbytes=size),
                        ["sftp", *ssh, "-b", str(batch(f"get {src} {down}\n")), sshd_dest],
                    ),
                    (Series("OpenSSH scp get", nbytes=size), ["scp", *ssh, f"{sshd_dest}:{src}", str(down)]),
                    (Series("docker cp get", nbytes=size), ["docker", "cp", f"{c}:{inside}", str(down)]),
                ]  # fmt: skip
                put_paths = [
                    (
                        Series("sshgw sftp put", nbytes=size),
                        ["sftp", *gw, "-b", str(batch(f"put {src} {in_up}\n")), gw_dest],
                    ),
                    (Series("sshgw scp put", nbytes=size), ["scp", *gw, str(src), f"{gw_dest}:{in_up}"]),
                    (
                        Series("OpenSSH sftp put", nbytes=size),
                        ["sftp", *ssh, "-b", str(batch(f"put {src} {host_up}\n")), sshd_dest],
                    ),
                    (Series("OpenSSH scp put", nbytes=size), ["scp", *ssh, str(src), f"{sshd_dest}:{host_up}"]),
                    (Series("docker cp put", nbytes=size), ["docker", "cp", str(src), f"{c}:{in_up}"]),
                ]  # fmt: skip

                # One untimed run of each path, checked end to end (and the page cache warmed).
                log("checking every path once")
                for s, cmd in get_paths:
                    down.unlink(missing_ok=True)
                    run(cmd)
                    check(s.name, sha256(down), want)
                for s, cmd in put_paths:
                    run(cmd)
                    if s.name.startswith("OpenSSH"):
                        got = sha256(host_up)
                    else:
                        got = run(["docker", "exec", c, "sha256sum", in_up]).stdout.split()[0]
                        got = got.decode()
                    check(s.name, got, want)

                sampler = RssSampler(gw_pid)
                sampler.start()
                log(f"(a) get of {args.size_mb} MB x{args.runs} per path")
                interleave(get_paths, args.runs)
                log(f"(b) put of {args.size_mb} MB x{args.runs} per path")
                interleave(put_paths, args.runs)
                sampler.stop()

            # (c) listing
            log(f"(c) ls -l of {args.files} files x{args.runs} per path")
            many_in = "/tmp/many"
            many_host = b.tmp / "many"
            many_host.mkdir()
            for i in range(args.files):
                (many_host / f"file-{i:05d}").touch()
            run(
                ["docker", "exec", c, "sh", "-c",
                 f"mkdir {many_in} && cd {many_in} && i=0; "
                 f"while [ $i -lt {args.files} ]; do : > file-$i; i=$((i+1)); done"],
                timeout=600,
            )  # fmt: skip
            list_paths = [
                (Series("sshgw sftp ls -l"), ["sftp", *gw, "-b", str(batch(f"ls -l {many_in}\n")), gw_dest]),
                (
                    Series("OpenSSH sftp ls -l"),
                    ["sftp", *ssh, "-b", str(batch(f"ls -l {many_host}\n")), sshd_dest],
                ),
                (Series("docker exec ls -l"), ["docker", "exec", c, "ls", "-l", many_in]),
            ]  # fmt: skip
            shown = run(list_paths[0][1]).stdout.count(b"\n-rw")
            if shown < args.files:
                raise BenchError(f"the sshgw listing shows {shown} files, not {args.files}")
            interleave(list_paths, args.runs)
    except BenchError as exc:
        print(f"bench_files: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"bench_files: timed out: {exc}", file=sys.stderr)
        return 1

    gets = [s for s, _ in get_paths]
    puts = [s for s, _ in put_paths]
    lists = [s for s, _ in list_paths]
    print()
    print(
        f"sshgw file benchmark - {time.strftime('%Y-%m-%d %H:%M')} - {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}, cipher {CIPHER}"
    )
    print_table(f"(a) get {args.size_mb} MB (into a file)", gets, gets[2], True)
    print_table(f"(b) put {args.size_mb} MB (from a file)", puts, puts[2], True)
    print_table(f"(c) ls -l of {args.files} files", lists, lists[1], False)
    print()
    verdicts: dict[str, float] = {}

    def verdict(label: str, value: float, target: float, at_least: bool = True) -> None:
        ok = value >= target if at_least else value <= target
        sign = ">=" if at_least else "<="
        verdicts[label] = round(value, 3)
        print(f"{label:<44} = {value:6.2f}  (target {sign} {target}): {'met' if ok else 'MISSED'}")

    for what, rows in (("get", gets), ("put", puts)):
        gw_sftp, gw_scp, o_sftp, o_scp, dcp = rows
        verdict(
            f"{what}: sshgw sftp / OpenSSH sftp throughput",
            gw_sftp.mbps / o_sftp.mbps,
            OPENSSH_TARGET,
        )
        verdict(
            f"{what}: sshgw scp / OpenSSH scp throughput", gw_scp.mbps / o_scp.mbps, OPENSSH_TARGET
        )
        verdict(
            f"{what}: sshgw sftp / docker cp throughput", gw_sftp.mbps / dcp.mbps, DOCKER_TARGET
        )
        verdict(f"{what}: sshgw scp / docker cp throughput", gw_scp.mbps / dcp.mbps, DOCKER_TARGET)
    verdict("ls -l of the directory through sshgw, seconds", lists[0].median, LIST_TARGET, False)
    growth = max(0, sampler.peak - sampler.first)
    print(
        f"gateway RSS: {sampler.first / 1024:.0f} MiB before the transfers, peak"
        f" {sampler.peak / 1024:.0f} MiB (+{growth / 1024:.0f} MiB)"
    )
    if args.json:
        dump_json(
            args.json,
            {
                "get": [s.as_dict() for s in gets],
                "put": [s.as_dict() for s in puts],
                "list": [s.as_dict() for s in lists],
                "ratios": verdicts,
                "gateway_rss_kib": {"before": sampler.first, "peak": sampler.peak},
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
