#!/usr/bin/env python3
"""The image's HEALTHCHECK: GET /healthz on the gateway's metrics listener.

The listener is SSHGW_METRICS_LISTEN (HOST:PORT, [V6]:PORT or :PORT; default 127.0.0.1:9122);
an unspecified host (0.0.0.0, ::) is reached on loopback. Exit 0 when /healthz answers 200,
else 1 with one line on stderr.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def target(listen: str) -> str:
    listen = listen.strip()
    if listen.startswith("["):
        host, _, rest = listen[1:].partition("]")
        port = rest.removeprefix(":")
    elif listen.count(":") == 1:
        host, _, port = listen.partition(":")
    else:
        host, port = listen, ""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port or '9122'}/healthz"


def main() -> int:
    url = target(os.environ.get("SSHGW_METRICS_LISTEN", "127.0.0.1:9122"))
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            if resp.status == 200:
                return 0
            print(f"unhealthy: {url} answered {resp.status}", file=sys.stderr)
    except OSError as exc:  # URLError and HTTPError (not 200) too
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
