"""Cost of observability: metrics + audit trail + recordings on vs off, measured in one run.

Three gateways serve the same container, and every measurement is interleaved across them:

  on        the defaults: metrics, audit trail (SQLite), asciicast recording of PTY sessions
  settings  SSHGW_AUDIT=false SSHGW_RECORDING=false (metrics stay on)
  none      every Observer hook replaced by a no-op (no metrics, no audit, no recording)

Measured:
  (a) session start: connect + auth + run ':' (no PTY), and with a PTY (`ssh -tt`, recorded)
  (b) throughput: `cat` of a large file (no PTY), and `cat` of a text file through a PTY (recorded)

Run as root from the repository root (needs Docker and the OpenSSH client):

    python -m bench.bench_observe [--start-runs 20] [--cat-runs 3] [--size-mb 200]
                                  [--pty-size-mb 50] [--json FILE]

Target (issue 4): "on" costs less than 5 % against "none" in session-start time and throughput.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CIPHER,
    BenchError,
    Container,
    Gateway,
    Series,
    count_output,
    data_file,
    dump_json,
    interleave,
    keygen,
    log,
    run,
    ssh_argv,
)

TARGET = 0.05  # at most 5 % slower

# Runs `sshgw serve` with every Observer hook a no-op: the baseline without any observability.
NULL_OBSERVER = r"""
import asyncio, sys
import gateway.app
from gateway.observe import Observer


class NullTrack:
    def __init__(self, info):
        self.info = info
        self.killed = asyncio.Event()

    def to_container(self, n): pass
    def from_container(self, data): pass
    def input(self, data): pass
    def resize(self, cols, rows): pass
    def file_op(self, op, path, nbytes, result, seconds): pass
    def end(self, exit_status, reason): pass


class NullObserver(Observer):
    audit_enabled = False

    async def start(self): pass
    async def stop(self): pass
    # connection_opened/closed stay: the revocation re-check of every channel needs them.
    def handshake_failed(self, remote, reason): pass
    def auth_attempt(self, method, ok, user, remote, reason=""): pass
    def access_denied(self, reason, user, container, right, remote): pass
    def docker_error(self, op): pass
    def exec_started(self, seconds): pass
    def session_started(self, info): return NullTrack(info)


gateway.app.Observer = NullObserver
from gateway.cli import main
sys.argv[0] = "sshgw"
main()
"""


class BenchGateway(Gateway):
    """A gateway started either normally or with the no-op observer."""

    def __init__(
        self, root: Path, extra_env: Mapping[str, str] | None = None, null: bool = False
    ) -> None:
        super().__init__(root, extra_env)
        self.null = null
        if null:
            self.what = "sshgw (no observer)"

    def command(self) -> list[str]:
        if not self.null:
            return super().command()
        return [sys.executable, "-c", NULL_OBSERVER, *self.serve_args()]


def text_file(path: Path, size: int) -> Path:
    """``size`` bytes of terminal-like text (printable lines, some UTF-8)."""
    line = ("sshgw bench line — übersicht 0123456789 abcdefghijklmnopqrstuvwxyz ✓\n").encode()
    with path.open("wb") as f:
        left = size
        block = line * (65536 // len(line))
        while left > 0:
            chunk = block[:left]
            f.write(chunk)
            left -= len(chunk)
    return path


def pct(value: float, base: float, higher_is_better: bool) -> float:
    """Cost in percent against the baseline (positive = worse)."""
    if higher_is_better:
        return (base / value - 1.0) * 100.0 if value else float("inf")
    return (value / base - 1.0) * 100.0


def print_rows(title: str, rows: list[Series], throughput: bool) -> None:
    base = rows[-1]
    print()
    print(title)
    print(
        f"  {'gateway':<44} {'n':>3} {'median':>10} {'min':>10} {'max':>10}"
        + (f" {'MB/s':>8}" if throughput else "")
        + f" {'cost vs none':>13}"
    )
    for s in rows:
        cost = pct(s.mbps, base.mbps, True) if throughput else pct(s.median, base.median, False)
        print(
            f"  {s.name:<44} {len(s.times):>3} {s.median * 1000:>8.1f}ms"
            f" {min(s.times) * 1000:>8.1f}ms {max(s.times) * 1000:>8.1f}ms"
            + (f" {s.mbps:>8.1f}" if throughput else "")
            + f" {cost:>+12.1f}%"
        )


# (c) The observer's own CPU cost, in-process ----------------------------------------------------


class _NoEngine:
    async def ping(self) -> None:
        return None


async def _micro(root: Path, sessions: int, nbytes: int, chunk: int) -> dict[str, float]:
    """Process CPU time (all threads: the loop, aiosqlite, recording conversion) spent by the
    Observer per session and per byte, with a real SQLite audit trail and real recordings."""
    import asyncio
    import uuid

    from gateway.config import Settings
    from gateway.observe import Observer, SessionInfo
    from gateway.store import Store

    settings = Settings(data_dir=root, metrics_listen="127.0.0.1:0")
    store = Store.from_url(settings.effective_database_url)
    await store.upgrade()
    obs = Observer(settings, store, _NoEngine())  # type: ignore[arg-type]
    await obs.start()

    def info(kind: str, pty: bool) -> SessionInfo:
        return SessionInfo(
            id=uuid.uuid4().hex,
            conn_id="c",
            user="alice",
            container="bench",
            container_id=None,
            login="app",
            kind=kind,
            command=None if pty else ":",
            remote="127.0.0.1:40000",
            pty=pty,
            term="xterm",
            cols=80,
            rows=24,
            record=True,
            connected_at=time.monotonic(),
        )

    async def settle() -> None:
        await obs.writer.flush(timeout=60)
        if obs._conversions:
            await asyncio.wait(set(obs._conversions), timeout=60)

    out: dict[str, float] = {}
    for label, kind, pty in (("session_exec", "exec", False), ("session_pty", "shell", True)):
        await settle()
        c0 = time.process_time()
        for i in range(sessions):
            obs.connection_opened(f"c{i}", "127.0.0.1:40000")
            obs.auth_attempt("publickey", True, "alice", "127.0.0.1:40000")
            obs.exec_started(0.04)
            t = obs.session_started(info(kind, pty))
            t.from_container(b"$ ")
            t.end(0, "exit")
            obs.connection_closed(f"c{i}")
            if i % 50 == 49:
                await settle()
        await settle()
        out[label] = (time.process_time() - c0) / sessions
    data = (b"sshgw bench line 0123456789 abcdefghijklmnopqrstuvwxyz\r\n" * (chunk // 50 + 1))[
        :chunk
    ]
    for label, kind, pty in (("byte_exec", "exec", False), ("byte_pty", "shell", True)):
        await settle()
        t = obs.session_started(info(kind, pty))
        c0 = time.process_time()
        for _ in range(nbytes // chunk):
            t.to_container(1)
            t.from_container(data)
        c1 = time.process_time()
        t.end(0, "exit")
        await settle()
        out[label] = (c1 - c0) / nbytes  # on the data path
        out[label + "_after"] = (time.process_time() - c1) / nbytes  # after the session
    await obs.stop()
    await store.close()
    return out


def micro(root: Path, sessions: int, nbytes: int, chunk: int) -> dict[str, float]:
    import asyncio

    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_micro(root, sessions, nbytes, chunk))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--start-runs", type=int, default=20, help="runs of (a) per gateway")
    ap.add_argument("--cat-runs", type=int, default=3, help="runs of (b) per gateway")
    ap.add_argument("--size-mb", type=int, default=200, help="file size for cat, MB (10^6)")
    ap.add_argument("--pty-size-mb", type=int, default=50, help="text size for PTY cat, MB")
    ap.add_argument("--micro-sessions", type=int, default=300, help="sessions for (c)")
    ap.add_argument("--micro-mb", type=int, default=100, help="MB streamed for (c)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    size = args.size_mb * 1_000_000
    pty_size = args.pty_size_mb * 1_000_000

    tmp = Path(tempfile.mkdtemp(prefix="sshgw-bench-observe-"))
    key = keygen(tmp / "client_ed25519", "bench-client")
    container = Container()
    configs = [
        ("on (metrics + audit + recording)", {}, False),
        (
            "settings (SSHGW_AUDIT/RECORDING=false)",
            {"SSHGW_AUDIT": "false", "SSHGW_RECORDING": "false"},
            False,
        ),
        ("none (no-op observer)", {}, True),
    ]
    gateways = [BenchGateway(tmp / f"gw{i}", env, null) for i, (_, env, null) in enumerate(configs)]
    results: dict[str, Any] = {}
    try:
        log(f"container {container.name}")
        container.start()
        for gw, (name, _, _) in zip(gateways, configs, strict=True):
            log(f"sshgw '{name}' on 127.0.0.1:{gw.port}")
            gw.start()
            gw.cli("user", "add", "alice", "--key", f"{key}.pub")
            gw.cli(
                "grant", "add", "--user", "alice", "--target", "bench*", "--rights", "shell,exec"
            )

        def cmd(gw: Gateway, command: str, pty: bool = False) -> list[str]:
            return ssh_argv(
                gw.port, f"alice+{container.name}", key, command, extra=["-tt"] if pty else []
            )

        for gw in gateways:  # sanity and warm-up
            out = run(cmd(gw, "echo ok")).stdout
            if out != b"ok\n":
                raise BenchError(f"gateway on port {gw.port} answered {out!r}")

        def series(
            label: str, make: Callable[[Gateway], list[str]], nbytes: int = 0
        ) -> list[tuple[Series, list[str]]]:
            return [
                (Series(f"{name}", nbytes=nbytes), make(gw))
                for gw, (name, _, _) in zip(gateways, configs, strict=True)
            ]

        log(f"(a) session start x{args.start_runs} per gateway (exec, then PTY)")
        a_exec = series("exec", lambda gw: cmd(gw, ":"))
        a_pty = series("pty", lambda gw: cmd(gw, ":", pty=True))
        interleave(a_exec + a_pty, args.start_runs)

        log(
            f"(b) cat {args.size_mb} MB (no PTY) and {args.pty_size_mb} MB text through a PTY,"
            f" x{args.cat_runs}"
        )
        with data_file(tmp, size) as payload:
            run(["docker", "cp", str(payload), f"{container.name}:/tmp/payload.bin"])
        text = text_file(tmp / "text.txt", pty_size)
        run(["docker", "cp", str(text), f"{container.name}:/tmp/text.txt"])
        b_cat = series("cat", lambda gw: cmd(gw, "cat /tmp/payload.bin"), size)
        b_pty = series("pty cat", lambda gw: cmd(gw, "cat /tmp/text.txt", pty=True), pty_size)
        for s, argv_ in b_cat:
            got = count_output(argv_)
            if got != size:
                raise BenchError(f"{s.name}: got {got} bytes, expected {size}")
        for _, argv_ in b_pty:
            count_output(argv_)  # warm-up (a PTY turns \n into \r\n: no exact count)
        interleave(b_cat + b_pty, args.cat_runs)

        log(f"(c) observer CPU in-process: {args.micro_sessions} sessions, {args.micro_mb} MB")
        cpu = micro(tmp / "micro", args.micro_sessions, args.micro_mb * 1_000_000, 4096)

        rec_dir = gateways[0].data_dir / "recordings"
        rec_bytes = (
            sum(p.stat().st_size for p in rec_dir.rglob("*.cast")) if rec_dir.exists() else 0
        )
        rows = {
            "start_exec": [s for s, _ in a_exec],
            "start_pty": [s for s, _ in a_pty],
            "cat": [s for s, _ in b_cat],
            "cat_pty": [s for s, _ in b_pty],
        }
    except BenchError as exc:
        print(f"bench_observe: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"bench_observe: timed out: {exc}", file=sys.stderr)
        return 1
    finally:
        for gw in gateways:
            gw.stop()
        container.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"sshgw observability cost - {time.strftime('%Y-%m-%d %H:%M')} - {platform.node()},"
        f" {platform.python_implementation()} {platform.python_version()}, cipher {CIPHER}"
    )
    print_rows("(a) session start: connect + auth + ':' (no PTY)", rows["start_exec"], False)
    print_rows(
        "(a) session start: connect + auth + ':' with a PTY (recorded when on)",
        rows["start_pty"],
        False,
    )
    print_rows(f"(b) cat {args.size_mb} MB > /dev/null (no PTY)", rows["cat"], True)
    print_rows(
        f"(b) cat {args.pty_size_mb} MB of text through a PTY (recorded when on)",
        rows["cat_pty"],
        True,
    )
    print()
    verdicts = {}
    for key_, label, thr in (
        ("start_exec", "session start (exec)", False),
        ("start_pty", "session start (PTY, recorded)", False),
        ("cat", "throughput (exec cat)", True),
        ("cat_pty", "throughput (PTY cat, recorded)", True),
    ):
        on, none = rows[key_][0], rows[key_][-1]
        cost = pct(on.mbps, none.mbps, True) if thr else pct(on.median, none.median, False)
        best = (min(on.times) / min(none.times) - 1.0) * 100.0
        verdicts[key_] = round(cost, 2)
        print(
            f"{label:<32} on vs none: median {cost:+6.1f}%, best run {best:+6.1f}%"
            f"  (target < {TARGET * 100:.0f}%)"
        )
    print(f"recordings written by 'on': {rec_bytes / 1e6:.1f} MB")

    # The observer's own CPU, against what the no-op gateway needs per session and per byte.
    start_none = rows["start_exec"][-1].median
    start_pty_none = rows["start_pty"][-1].median
    ns_exec = 1e9 / (rows["cat"][-1].mbps * 1e6)
    ns_pty = 1e9 / (rows["cat_pty"][-1].mbps * 1e6)
    shares = {
        "session_exec": cpu["session_exec"] / start_none * 100,
        "session_pty": cpu["session_pty"] / start_pty_none * 100,
        "byte_exec": cpu["byte_exec"] * 1e9 / ns_exec * 100,
        "byte_pty": cpu["byte_pty"] * 1e9 / ns_pty * 100,
    }
    print()
    print(
        "(c) observer CPU (process time, all threads; SQLite audit, real recordings, 4 KiB chunks)"
    )
    print(
        f"  per exec session   {cpu['session_exec'] * 1e6:8.0f} us"
        f"  = {shares['session_exec']:5.2f}% of a session start ({start_none * 1e3:.0f} ms)"
    )
    print(
        f"  per PTY session    {cpu['session_pty'] * 1e6:8.0f} us"
        f"  = {shares['session_pty']:5.2f}% of a PTY session start ({start_pty_none * 1e3:.0f} ms)"
    )
    print(
        f"  per byte, exec     {cpu['byte_exec'] * 1e9:8.2f} ns"
        f"  = {shares['byte_exec']:5.2f}% of the gateway's {ns_exec:.1f} ns/B (exec cat)"
    )
    print(
        f"  per byte, PTY      {cpu['byte_pty'] * 1e9:8.2f} ns"
        f"  = {shares['byte_pty']:5.2f}% of the gateway's {ns_pty:.1f} ns/B (PTY cat),"
        " recording spool included"
    )
    print(
        f"  + after a PTY session, writing the asciicast file: {cpu['byte_pty_after'] * 1e9:.2f}"
        " ns per recorded byte (worker thread, off the data path)"
    )
    for k, v in shares.items():
        verdicts[f"observer_cpu_{k}"] = round(v, 3)
    if args.json:
        results = {k: [s.as_dict() for s in v] for k, v in rows.items()}
        results["cost_percent"] = verdicts
        results["recording_bytes"] = rec_bytes
        dump_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
