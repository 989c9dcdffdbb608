"""rclone benchmark: rclone's SFTP backend through sshgw against the same rclone and OpenSSH's sshd.

Measured side by side in one run, interleaved round-robin, each way up and down:

  (a) ``rclone copy`` of one 200 MB file
  (b) ``rclone copy`` of a directory of 1000 small files (4 KiB each)

Through sshgw the files land in the container's /tmp; through sshd (internal-sftp, root) in a
directory on the host. Both sides run with ``--sftp-disable-hashcheck`` (sshgw grants no exec
here, so rclone could not ask the container for hashes) and rclone's defaults otherwise (4
transfers, 32 KiB requests). Every destination is new for each run and removed after it,
untimed; each path's result is checked once (sha256 of the large file, count and total size of
the small ones).

Run as root from the repository root (needs Docker, rclone, the OpenSSH client and server):

    python -m bench.bench_rclone [--runs 3] [--size-mb 200] [--files 1000] [--json FILE]

Target (issue 11): sshgw >= 0.7x the same rclone against OpenSSH.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Bench,
    BenchError,
    Series,
    data_file,
    dump_json,
    log,
    print_table,
    run,
    timed,
)

TARGET = 0.7
SMALL = 4096


def remote(port: int, user: str, key: Path) -> str:
    """An rclone on-the-fly SFTP remote (no config file entry needed)."""
    return f":sftp,host=127.0.0.1,port={port},user={user},key_file={key}:"


def rclone(*args: str) -> list[str]:
    return ["rclone", "--config", "/dev/null", "--sftp-disable-hashcheck", "-q", *args]


class Way:
    """One way of copying: a command for run ``i``, and how to clean up after it."""

    def __init__(
        self, series: Series, argv: Callable[[int], list[str]], clean: Callable[[int], None]
    ) -> None:
        self.series = series
        self.argv = argv
        self.clean = clean


def measure(ways: Sequence[Way], runs: int) -> None:
    """Round-robin: each way once per round, so drift on the machine hits all alike."""
    for i in range(runs):
        for w in ways:
            timed(w.series, w.argv(i))
            w.clean(i)


def tree_digest(directory: Path) -> str:
    """sha256 over the names and contents of a directory's files, in name order."""
    h = hashlib.sha256()
    for f in sorted(directory.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def box_digest(container: str, directory: str) -> str:
    """:func:`tree_digest` of a directory inside the container."""
    script = 'cd "$1" && for f in $(ls | sort); do printf "%s\\0" "$f"; cat "$f"; done'
    out = run(["docker", "exec", container, "sh", "-c", script, "sh", directory]).stdout
    return hashlib.sha256(out).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path")
    ap.add_argument("--size-mb", type=int, default=200, help="large file size, in MB (10^6)")
    ap.add_argument("--files", type=int, default=1000, help="number of small files")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if shutil.which("rclone") is None:
        print("bench_rclone: rclone is not installed (Debian package rclone)", file=sys.stderr)
        return 2
    size = args.size_mb * 1_000_000
    results: dict[str, list[Series]] = {}
    try:
        with Bench() as b:
            c = b.container.name
            b.gateway.cli(
                "grant", "add", "--user", b.user, "--target", "bench*",
                "--rights", "sftp-read,sftp-write", "--logins", "root",
            )  # fmt: skip
            gw = remote(b.gateway.port, f"{b.user}+{c}", b.key)
            sshd = remote(b.sshd.port, "root", b.key)
            host = b.tmp / "host"
            local = b.tmp / "local"
            host.mkdir()
            local.mkdir()

            def in_box(script: str) -> None:
                run(["docker", "exec", c, "sh", "-c", script])

            def rm_host(path: Path) -> Callable[[int], None]:
                return lambda i: shutil.rmtree(f"{path}{i}", ignore_errors=True)

            def rm_box(path: str) -> Callable[[int], None]:
                return lambda i: in_box(f"rm -rf {path}{i}")

            with data_file(b.tmp, size) as big:
                small = b.tmp / "small"
                small.mkdir()
                for n in range(args.files):
                    (small / f"f{n:05d}.bin").write_bytes(os.urandom(SMALL))
                (local / "big").mkdir()
                os.link(big, local / "big" / "payload.bin")
                # the same sources on each side, for the downloads
                run(["docker", "cp", str(local / "big"), f"{c}:/tmp/big"])
                run(["docker", "cp", str(small), f"{c}:/tmp/small"])
                shutil.copytree(local / "big", host / "big")
                shutil.copytree(small, host / "small")

                def ways(src_local: Path, src_name: str, label: str, nbytes: int) -> list[Way]:
                    return [
                        Way(Series(f"sshgw rclone {label} up", nbytes=nbytes),
                            lambda i: rclone("copy", str(src_local), f"{gw}/tmp/up{label}{i}"),
                            rm_box(f"/tmp/up{label}")),
                        Way(Series(f"OpenSSH rclone {label} up", nbytes=nbytes),
                            lambda i: rclone("copy", str(src_local), f"{sshd}{host}/up{label}{i}"),
                            rm_host(host / f"up{label}")),
                        Way(Series(f"sshgw rclone {label} down", nbytes=nbytes),
                            lambda i: rclone("copy", f"{gw}/tmp/{src_name}", f"{local}/dn{label}{i}"),
                            rm_host(local / f"dn{label}")),
                        Way(Series(f"OpenSSH rclone {label} down", nbytes=nbytes),
                            lambda i: rclone("copy", f"{sshd}{host}/{src_name}", f"{local}/dn{label}{i}"),
                            rm_host(local / f"dn{label}")),
                    ]  # fmt: skip

                big_ways = ways(local / "big", "big", "large", size)
                small_ways = ways(small, "small", "small", args.files * SMALL)

                log("checking every path once")
                want = {"large": tree_digest(local / "big"), "small": tree_digest(small)}
                for w in big_ways + small_ways:
                    res = subprocess.run(w.argv(999), capture_output=True, check=False)
                    if res.returncode != 0:
                        raise BenchError(f"{w.series.name}: {res.stderr.decode(errors='replace')}")
                    dest = w.argv(999)[-1].rpartition(":")[2]
                    got = (
                        box_digest(c, dest)
                        if w.series.name.startswith("sshgw rclone")
                        and (w.series.name.endswith("up"))
                        else tree_digest(Path(dest))
                    )
                    if got != want["large" if "large" in w.series.name else "small"]:
                        raise BenchError(f"{w.series.name}: the copy differs from the source")
                    w.clean(999)
                log(f"(a) rclone copy of {args.size_mb} MB x{args.runs} per path")
                measure(big_ways, args.runs)
                log(f"(b) rclone copy of {args.files} files x{args.runs} per path")
                measure(small_ways, args.runs)
                results = {
                    "large": [w.series for w in big_ways],
                    "small": [w.series for w in small_ways],
                }
    except BenchError as exc:
        print(f"bench_rclone: {exc}", file=sys.stderr)
        return 1

    ok = True
    for title, rows in results.items():
        for up_down in ("up", "down"):
            pair = [s for s in rows if s.name.endswith(up_down)]
            gw_s, ssh_s = pair[0], pair[1]
            what = f"{args.size_mb} MB" if title == "large" else f"{args.files} files of {SMALL} B"
            print_table(f"rclone copy of {what}, {up_down}", pair, ssh_s, throughput=True)
            ratio = gw_s.mbps / ssh_s.mbps
            verdict = "meets" if ratio >= TARGET else "MISSES"
            print(f"  sshgw / OpenSSH: {ratio:.2f}x ({verdict} the {TARGET}x target)")
            ok = ok and ratio >= TARGET
    if args.json:
        dump_json(args.json, {k: [s.as_dict() for s in v] for k, v in results.items()})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
