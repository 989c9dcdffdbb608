"""Web terminal benchmark: keystroke-to-echo latency in the browser against ``ssh -tt``, both
through the same sshgw into the same container, measured in one run (blocks interleaved).

  ssh -tt   one byte written to the OpenSSH client's stdin → its echo read from its stdout
  websocket one byte sent on the terminal's WebSocket from a Python client (aiohttp) → its echo
            frame: the gateway's side of the browser path, without the browser
  browser   a key pressed in headless Chromium (Debian's chromium, Playwright) → xterm.js sent
            it on the WebSocket, → the first frame received after it (network and gateway),
            → the terminal's text changed (xterm.js rendered it: what a person sees; the
            figure the target is about); and, for comparison, a WebSocket the page opens
            itself (a second link) sending one byte and awaiting its echo, no key, no xterm.js

Times in the browser are the page's own clock (``performance.now()`` at keydown, at the frame,
at the DOM change), so the driver's round trips are not counted.

Run as root from the repository root (Docker, OpenSSH client and server, chromium):

    flock /tmp/bench.lock python -m bench.bench_web [--keys 200] [--json FILE]
                                                    [--screenshot docs/web-terminal.png]

Target (issue 14): the browser's median (and p95) keystroke-to-echo time within 2x of ssh's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Bench, BenchError, Gateway, dump_json, free_port, log, run
from tests.support.browser import chromium, wait_text

T = TypeVar("T")
TARGET = 2.0  # browser time / ssh time, at most
BLOCK = 20  # keystrokes per path before switching
KEYS = "abcdefghijklmnopqrstuvwxyz"
GAP = 0.03  # seconds between keystrokes: one echo at a time
READY = 'echo RE""ADY\n'  # the shell runs: its output, not its echo, says READY

# Installed before the page's scripts run (outside its Content-Security-Policy): the page's
# clock at every keydown and at every binary frame the terminal's WebSocket receives.
PROBE = """
window.__lat = {keys: [], sends: [], frames: [], paints: []};
document.addEventListener("keydown", () => window.__lat.keys.push(performance.now()), true);
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  send(data) {
    if (typeof data !== "string") window.__lat.sends.push(performance.now());
    super.send(data);
  }
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") window.__lat.frames.push(performance.now());
    });
  }
};
"""
# Once the terminal is open: the page's clock whenever the terminal's text changes.
WATCH = """() => {
  const rows = document.querySelector(".xterm-rows");
  let last = rows.textContent;
  new MutationObserver(() => {
    const now = rows.textContent;
    if (now !== last) { last = now; window.__lat.paints.push(performance.now()); }
  }).observe(rows, {childList: true, subtree: true, characterData: true});
}"""
TAKE = "() => { const l = window.__lat; const r = [l.keys, l.sends, l.frames, l.paints];"
TAKE += " l.keys = []; l.sends = []; l.frames = []; l.paints = []; return r; }"


# In the page, without a key or xterm.js: a WebSocket of its own (a second link's cookie) sends
# one byte and waits for its echo, N times: the browser's network path alone.
RAW_IN_PAGE = """async ([token, n, gap]) => {
  const r = await fetch("/web/login", {method: "POST", body: JSON.stringify({token}),
                                       headers: {"Content-Type": "application/json"}});
  if (r.status !== 204) return "login refused: " + r.status;
  const ws = new WebSocket(`ws://${location.host}/web/ws?cols=80&rows=24`);
  ws.binaryType = "arraybuffer";
  await new Promise((ok) => { ws.onopen = ok; });
  let seen = "", wake = null;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") seen += new TextDecoder().decode(ev.data);
    if (wake) wake();
  };
  const until = (s) => new Promise((ok) => {
    const check = () => { if (seen.includes(s)) { seen = ""; wake = null; ok(); } else wake = check; };
    check();
  });
  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
  ws.send(new TextEncoder().encode('echo RE""ADY\\n'));
  await until("READY\\r\\n");
  await sleep(300);
  seen = "";
  const out = [];
  for (let i = 0; i < n; i++) {
    const ch = "abcdefghijklmnopqrst"[i % 20];
    const t0 = performance.now();
    ws.send(new TextEncoder().encode(ch));
    await until(ch);
    out.push(performance.now() - t0);
    await sleep(gap);
    if (i % 20 === 19) { ws.send(new Uint8Array([21])); await sleep(200); seen = ""; }
  }
  ws.close();
  return out;
}"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class SshTerminal:
    """``ssh -tt alice+c@gw`` with pipes: a remote PTY, no local terminal (no local echo)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.fd_in, self.fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.seen = b""

    def read_until(self, want: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while want not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd_out], [], [], left)[0]:
                raise BenchError(f"ssh: {want!r} not seen; got {self.seen[-200:]!r}")
            data = os.read(self.fd_out, 65536)
            if not data:
                raise BenchError(f"ssh ended; got {self.seen[-200:]!r}")
            self.seen += data
        self.seen = self.seen[self.seen.index(want) + len(want) :]

    def key(self, ch: str) -> float:
        """Seconds from writing ``ch`` to reading its echo."""
        self.seen = b""
        t0 = time.perf_counter()
        os.write(self.fd_in, ch.encode())
        self.read_until(ch.encode())
        return time.perf_counter() - t0

    def clear_line(self) -> None:
        os.write(self.fd_in, b"\x15")  # ^U: the line editor forgets the typed keys
        time.sleep(0.2)
        self.drain()

    def drain(self) -> None:
        while select.select([self.fd_out], [], [], 0.05)[0]:
            if not os.read(self.fd_out, 65536):
                return
        self.seen = b""

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class WsTerminal:
    """The terminal's WebSocket from a Python client (aiohttp, in a thread of its own): the
    gateway's side of the browser path without the browser."""

    def __init__(self, origin: str, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._call(self._open(origin, url.split("#", 1)[1]))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _open(self, origin: str, token: str) -> None:
        self.http = aiohttp.ClientSession()
        headers = {"Origin": origin}
        async with self.http.post(
            f"{origin}/web/login", json={"token": token}, headers=headers
        ) as resp:
            if resp.status != 204:
                raise BenchError(f"the link was refused: {resp.status} {await resp.text()}")
            # A Secure cookie, which aiohttp's jar keeps for https only: sent by hand.
            cookie = {"Cookie": f"sshgw_web={resp.cookies['sshgw_web'].value}"}
        self.ws = await self.http.ws_connect(f"{origin}/web/ws", origin=origin, headers=cookie)
        await self.ws.send_bytes(READY.encode())
        await self._until(b"READY\r\n")
        while True:  # the prompt and whatever else came
            try:
                await asyncio.wait_for(self.ws.receive(), 0.3)
            except TimeoutError:
                break

    async def _until(self, want: bytes) -> None:
        assert self.ws is not None
        seen = b""
        while want not in seen:
            msg = await asyncio.wait_for(self.ws.receive(), 20)
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise BenchError(f"websocket: {msg.type} {msg.data!r}")
            seen += msg.data

    async def _key(self, ch: str) -> float:
        assert self.ws is not None
        t0 = time.perf_counter()
        await self.ws.send_bytes(ch.encode())
        await self._until(ch.encode())
        return time.perf_counter() - t0

    def key(self, ch: str) -> float:
        return self._call(self._key(ch))

    async def _clear(self) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(b"\x15")
        with contextlib.suppress(TimeoutError):
            while True:
                await asyncio.wait_for(self.ws.receive(), 0.2)

    def clear_line(self) -> None:
        self._call(self._clear())

    async def _close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()

    def close(self) -> None:
        self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def web_bench(keep: bool) -> Bench:
    """The common bench (container, sshd, sshgw) with sshgw's web listener on."""
    b = Bench(keep=keep)
    port = free_port()
    b.gateway = Gateway(
        b.tmp / "gateway",
        {
            "SSHGW_HTTP_LISTEN": f"127.0.0.1:{port}",
            "SSHGW_HTTP_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "SSHGW_RECORDING": "false",  # neither path records: the same work on both
        },
    )
    return b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=200, help="keystrokes measured per path")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--screenshot", type=Path, help="save a screenshot of the terminal page here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--chromium-arg", action="append", default=[], help="an extra chromium flag (repeatable)"
    )
    args = ap.parse_args(argv)

    ssh_t: list[float] = []
    ws_t: list[float] = []
    web_send: list[float] = []
    web_raw: list[float] = []
    web_frame: list[float] = []
    web_paint: list[float] = []
    try:
        with web_bench(args.keep) as b, chromium(b.tmp / "chromium", args.chromium_arg) as browser:
            target = f"{b.user}+{b.container.name}"
            gw_ssh = b.gw_ssh(":")  # [ssh, options…, -T, …, alice+c@127.0.0.1, ":"]
            ssh = SshTerminal(["ssh", "-tt", *[a for a in gw_ssh[1:-1] if a != "-T"]])
            os.write(ssh.fd_in, READY.encode())
            ssh.read_until(b"READY\r\n")
            ssh.drain()
            login = gw_ssh[-2].replace(target, b.user)
            out = run([*gw_ssh[:-2], login, "web " + b.container.name]).stdout.decode()
            url = out.split()[0]
            browser.add_init_script(PROBE)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => document.body.dataset.state === 'open'")
            page.keyboard.type(READY)
            wait_text(page, r"^READY")
            page.evaluate(WATCH)
            page.evaluate(TAKE)
            origin = url.split("/web/", 1)[0]
            link = run([*gw_ssh[:-2], login, "web " + b.container.name]).stdout.decode().split()[0]
            raw = WsTerminal(origin, link)

            log(f"{args.keys} keystrokes per path, in blocks of {BLOCK}")
            while len(ssh_t) < args.keys or len(web_paint) < args.keys:
                for ch in KEYS[:BLOCK]:
                    ssh_t.append(ssh.key(ch))
                    time.sleep(GAP)
                ssh.clear_line()
                for ch in KEYS[:BLOCK]:
                    ws_t.append(raw.key(ch))
                    time.sleep(GAP)
                raw.clear_line()
                for ch in KEYS[:BLOCK]:
                    page.keyboard.press(ch)
                    page.wait_for_function(
                        "() => window.__lat.paints.length > 0 && window.__lat.frames.length > 0",
                        polling=25,  # the page's own clock times it: no need to hurry
                    )
                    time.sleep(GAP)
                    keys, sends, frames, paints = page.evaluate(TAKE)
                    if len(keys) != 1 or len(sends) != 1:
                        raise BenchError(f"expected one keydown and one send: {keys} {sends}")
                    web_send.append((sends[0] - keys[0]) / 1000)
                    web_frame.append((frames[0] - keys[0]) / 1000)
                    web_paint.append((paints[0] - keys[0]) / 1000)
                page.keyboard.press("Control+U")
                page.wait_for_timeout(200)
                page.evaluate(TAKE)
            ssh.close()
            raw.close()
            token = run([*gw_ssh[:-2], login, "web " + b.container.name]).stdout.decode()
            got = page.evaluate(RAW_IN_PAGE, [token.split()[0].split("#")[1], args.keys, GAP * 1e3])
            if isinstance(got, str):
                raise BenchError(got)
            web_raw = [t / 1000 for t in got]
            if args.screenshot:
                page.keyboard.type("clear; uname -a; echo $((6*7)); ls /\n")
                wait_text(page, r"^42\s*$")
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshot))
                log(f"screenshot: {args.screenshot}")
    except BenchError as exc:
        print(f"bench_web: {exc}", file=sys.stderr)
        return 1

    rows = [
        ("ssh -tt through sshgw", ssh_t[: args.keys]),
        ("websocket client (Python)", ws_t[: args.keys]),
        ("browser: websocket only", web_raw[: args.keys]),
        ("browser: key sent", web_send[: args.keys]),
        ("browser: frame received", web_frame[: args.keys]),
        ("browser: echo on screen", web_paint[: args.keys]),
    ]
    base_med, base_p95 = statistics.median(rows[0][1]), pct(rows[0][1], 95)
    print()
    print(f"Keystroke to echo ({args.keys} keys per path, interleaved in blocks of {BLOCK})")
    print(f"  {'path':<26} {'median':>9} {'p95':>9} {'max':>9} {'median x':>9} {'p95 x':>7}")
    result: dict[str, Any] = {"keys": args.keys, "paths": []}
    for name, times in rows:
        med, p95 = statistics.median(times), pct(times, 95)
        print(
            f"  {name:<26} {med * 1000:>7.2f}ms {p95 * 1000:>7.2f}ms {max(times) * 1000:>7.2f}ms"
            f" {med / base_med:>8.2f}x {p95 / base_p95:>6.2f}x"
        )
        result["paths"].append(
            {
                "name": name,
                "median_ms": med * 1000,
                "p95_ms": p95 * 1000,
                "max_ms": max(times) * 1000,
            }
        )
    ratio = statistics.median(web_paint) / base_med
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"  target: browser echo on screen within {TARGET:.0f}x of ssh -tt (median): {verdict}")
    result["ratio_median"] = ratio
    if args.json:
        dump_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
