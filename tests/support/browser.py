"""Debian's Chromium, headless, driven by Playwright for Python (never ``playwright install``:
the browser is the system's ``/usr/bin/chromium``, which scripts/test.sh installs).

``chromium(profile_dir)`` is a fresh browser context (its own user data directory, so no
cookie, cache or setting carries over from another run); the web terminal's tests and
bench/bench_web.py use it. :func:`terminal_text` reads what xterm.js shows (its DOM renderer's
rows), :func:`wait_text` waits for a pattern in it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(profile_dir: Path, extra_args: Sequence[str] = ()) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile in ``profile_dir``; closed on exit."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=[*ARGS, *extra_args],
            viewport={"width": 900, "height": 500},
        )
        try:
            yield context
        finally:
            context.close()


def terminal_text(page: Page) -> str:
    """The terminal's visible lines, as xterm.js's DOM renderer shows them."""
    return str(page.eval_on_selector(".xterm-rows", "el => el.innerText"))


def wait_text(page: Page, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    """Wait until ``pattern`` (a regular expression) is on the terminal; its match."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = terminal_text(page)
        found = regex.search(text)
        if found:
            return found
        page.wait_for_timeout(50)
    raise AssertionError(f"{pattern!r} not on the terminal within {timeout}s:\n{text}")


def status(page: Page) -> str:
    """The page's status line (connecting, connected, session ended …)."""
    return str(page.text_content("#status") or "")
