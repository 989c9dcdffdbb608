"""A process's memory as Linux reports it (``/proc/PID/status``), and its growth over time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM`` …); 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss(pid: int) -> int:
    """Resident set size of a live process in bytes; :class:`ProcessLookupError` when the
    process is gone (a dead gateway must not read as one that stayed small)."""
    kib = status_kib(pid, "VmRSS")
    if not kib:
        raise ProcessLookupError(f"no VmRSS for pid {pid}")
    return kib * 1024


async def watch_growth(pid: int, base: int, seconds: float) -> int:
    """The largest RSS growth over ``base`` seen within ``seconds`` (sampled every 0.25 s)."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid) - base)
        if peak > 2 << 30:  # far past any bound: do not take the machine down
            break
        await asyncio.sleep(0.25)
    return max(peak, rss(pid) - base)
