"""Peers that have not authenticated: connection floods, password guessing, the banner.

Attacks that succeeded on an earlier gateway (docs/SECURITY.md, "Unauthenticated peers"): it held
every connection that sent nothing but a banner until the login timeout, let one connection try
passwords without end (each an argon2 check of 64 MiB), answered guesses at full speed, wrote one
audit row per failed attempt (even for a key an agent merely offered), and told every client its
exact version.

Different loopback source addresses (127.0.0.2 …) stand for different hosts: the gateway listens on
127.0.0.1 and sees the address the client socket was bound to.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import selectors
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncssh
import pytest

import gateway as gateway_pkg
from tests.e2e.helpers import SSH_BASE_OPTS, Gateway, GatewayFactory, unique, wait_until
from tests.e2e.test_metrics_prometheus import sample, scrape
from tests.support.openssh import KEYS_ONLY
from tests.support.process import read_banner

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

# Small limits so a flood is quick to make: refuse some from 10 unauthenticated connections on,
# all from 20, and more than 8 from one source.
FLOOD_SETTINGS = {
    "SSHGW_MAX_STARTUPS": "10:50:20",
    "SSHGW_MAX_STARTUPS_PER_SOURCE": "8",
}


def user_with_grant(gateway: Gateway, container: str, password: str | None = None) -> str:
    user = unique("ua")
    gateway.add_user(user, password=password)
    gateway.grant(container, user=user, rights="shell,exec", logins="app")
    return user


def logins(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    res = gateway.cli("audit", "--kind", "login", "--user", user, "--json")
    return list(json.loads(res.stdout))


def failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["detail"]["result"] == "failure"]


def attempts(rows: list[dict[str, Any]]) -> int:
    """Failed attempts an audit trail accounts for (a summed row carries its count)."""
    return sum(int(r["detail"].get("count") or 1) for r in failures(rows))


# --- connection floods -----------------------------------------------------------------------


@dataclass
class Probe:
    sock: socket.socket
    source: str
    received: bytes = b""
    closed_after: float | None = None  # seconds after the banner was sent


def flood(port: int, sources: list[str], each: int) -> list[Probe]:
    """``each`` connections from every source address, each sending only an SSH banner."""
    probes = []
    for source in sources:
        for _ in range(each):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((source, 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            s.sendall(b"SSH-2.0-flood_0.1\r\n")
            s.setblocking(False)
            probes.append(Probe(s, source))
    return probes


def watch(probes: list[Probe], seconds: float) -> None:
    """Read from all probes for ``seconds``; note which ones the gateway closed, and when."""
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    for p in probes:
        sel.register(p.sock, selectors.EVENT_READ, p)
    try:
        while len(sel.get_map()):
            left = t0 + seconds - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.5)):
                p: Probe = key.data
                try:
                    data = p.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:  # reset: closed too
                    data = b""
                if data:
                    p.received += data
                else:
                    p.closed_after = time.monotonic() - t0
                    sel.unregister(p.sock)
    finally:
        sel.close()


@contextmanager
def flooded(port: int, sources: list[str], each: int) -> Iterator[list[Probe]]:
    probes = flood(port, sources, each)
    try:
        watch(probes, 5.0)
        yield probes
    finally:
        for p in probes:
            p.sock.close()


def unauthenticated_drained(gateway: Gateway) -> bool:
    return sample(scrape(gateway), "sshgw_unauthenticated_connections") == 0


@pytest.fixture(scope="module")
def flood_gateway(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory(FLOOD_SETTINGS)


def test_flood_from_one_source_is_cut_at_the_per_source_cap(
    flood_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = flood_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    with flooded(gw.port, ["127.0.0.2"], 30) as probes:
        held = [p for p in probes if p.closed_after is None]
        refused = [p for p in probes if p.closed_after is not None]
        # Eight may wait for their key exchange; the other 22 are closed at once, before the
        # gateway said anything (no banner: no key exchange work for them).
        assert len(held) == 8, f"{len(held)} of 30 connections from one source held open"
        assert len(refused) == 22
        assert all(p.received == b"" for p in refused), [p.received[:40] for p in refused]
        assert all(p.received.startswith(b"SSH-2.0-") for p in held)
        # Another host is not affected by one host's flood: a real login works meanwhile.
        res = gw.ssh(f"{user}+{c}", "echo in")
        assert res.returncode == 0, res.stderr
        assert res.stdout == b"in\n"
        body = scrape(gw)
        assert sample(body, "sshgw_startups_refused_total", reason="per_source") >= 22
        assert sample(body, "sshgw_unauthenticated_connections") >= 8
    # Closed connections give their slots back.
    assert wait_until(lambda: unauthenticated_drained(gw), timeout=30), scrape(gw)


def test_flood_from_many_sources_is_cut_at_max_startups(
    flood_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = flood_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    assert wait_until(lambda: unauthenticated_drained(gw), timeout=30)
    sources = [f"127.0.0.{i}" for i in range(3, 8)]
    with flooded(gw.port, sources, 6) as probes:
        held = [p for p in probes if p.closed_after is None]
        refused = [p for p in probes if p.closed_after is not None]
        # From 10 on some are refused, from 20 on all: at most 20 held, at least 10 closed.
        assert 10 <= len(held) <= 20, f"{len(held)} of 30 connections held open"
        assert len(refused) >= 10
        assert all(p.received == b"" for p in refused)
        assert sample(scrape(gw), "sshgw_startups_refused_total", reason="startups") >= 10
    # Once the flood is gone, a real login works again.
    assert wait_until(lambda: unauthenticated_drained(gw), timeout=30), scrape(gw)
    res = gw.ssh(f"{user}+{c}", "echo in")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"in\n"


def test_twenty_simultaneous_logins_from_one_host_work(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    # Default settings: parallel tools (ansible forks, pdsh, IDEs) open many at once.
    c = make_container(busybox_image)
    user = user_with_grant(gateway, c)

    def one(i: int) -> subprocess.CompletedProcess[bytes]:
        return gateway.ssh(f"{user}+{c}", f"echo {i}", timeout=120)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    for i, res in enumerate(results):
        assert res.returncode == 0, (i, res.stderr)
        assert res.stdout == f"{i}\n".encode()


# --- authentication attempts -----------------------------------------------------------------


class Guesser(asyncssh.SSHClient):
    """Tries one wrong password after another on the same connection, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.asked: list[float] = []  # when each password was asked for
        self.ended = 0.0  # when the connection ended

    def password_auth_requested(self) -> str | None:
        self.asked.append(time.monotonic())
        if len(self.asked) > self.limit:
            return None
        return f"wrong-guess-{len(self.asked)}"

    def kbdint_auth_requested(self) -> str | None:
        return None  # passwords only, through the password method


async def guess(
    gateway: Gateway, login: str, limit: int, source: str = "127.0.0.1"
) -> tuple[Guesser, BaseException | None]:
    client = Guesser(limit)
    try:
        async with asyncio.timeout(180):
            conn = await asyncssh.connect(
                "127.0.0.1",
                gateway.port,
                username=login,
                local_addr=(source, 0),
                client_factory=lambda: client,
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                preferred_auth="password",
            )
        conn.close()
    except (asyncssh.Error, OSError) as exc:
        client.ended = time.monotonic()
        return client, exc
    client.ended = time.monotonic()
    return client, None


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture(scope="module")
def tries_gateway(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory({"SSHGW_MAX_AUTH_TRIES": "3"})


async def test_too_many_passwords_on_one_connection_are_disconnected(
    tries_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = tries_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c, password="the-right-one")
    client, exc = await guess(gw, f"{user}+{c}", limit=20)
    # The third failure ends the connection, as OpenSSH's MaxAuthTries does.
    assert isinstance(exc, asyncssh.DisconnectError), repr(exc)
    assert exc.code == asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE
    assert exc.reason == "Too many authentication failures"
    assert len(client.asked) == 3, f"{len(client.asked)} passwords tried on one connection"
    assert sample(scrape(gw), "sshgw_auth_too_many_failures_total") >= 1


def test_too_many_keys_are_disconnected_with_openssh(
    tries_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = tries_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c)
    strangers = [gw.new_key(unique("k")) for _ in range(5)]
    ids = [opt for k in strangers for opt in ("-i", str(k))]
    argv = [
        "ssh",
        *SSH_BASE_OPTS,
        "-p",
        str(gw.port),
        *KEYS_ONLY,
        "-o",
        "LogLevel=INFO",
        *ids,
        "-l",
        f"{user}+{c}",
        "127.0.0.1",
        "true",
    ]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert res.returncode == 255
    assert b"Too many authentication failures" in res.stderr, res.stderr
    # The user's own key still works on a new connection (keys are not throttled).
    ok = gw.ssh(f"{user}+{c}", "echo in")
    assert ok.returncode == 0, ok.stderr


def test_a_key_offered_before_the_right_one_is_no_audit_event(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = user_with_grant(gateway, c)
    right = gateway.keys[user]
    # The stranger key is asked about first (a query, refused), then the right key logs in.
    res = gateway.ssh(
        f"{user}+{c}",
        "echo in",
        key=gateway.stranger_key,
        extra_opts=["-i", str(right)],
    )
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: len(logins(gateway, user)) >= 1, timeout=30)
    time.sleep(1.0)  # the audit writer batches: give a stray failure row time to arrive
    rows = logins(gateway, user)
    assert [r["detail"]["result"] for r in rows] == ["success"], rows
    # A login that fails with keys only is one event, when the connection ends.
    bad = gateway.ssh(f"{user}+{c}", "true", key=gateway.stranger_key)
    assert bad.returncode == 255
    assert wait_until(lambda: len(failures(logins(gateway, user))) >= 1, timeout=30)
    (row,) = failures(logins(gateway, user))
    assert row["detail"]["method"] == "publickey"
    assert row["remote"].startswith("127.0.0.1:")


@pytest.fixture(scope="module")
def guess_gateway(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory({"SSHGW_MAX_AUTH_TRIES": "8"})


async def test_password_guessing_is_slowed_down_and_summed_in_the_audit(
    guess_gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = guess_gateway
    c = make_container(busybox_image)
    user = user_with_grant(gw, c, password="the-right-one")
    client, exc = await guess(gw, f"{user}+{c}", limit=8)
    assert isinstance(exc, asyncssh.DisconnectError), repr(exc)
    assert len(client.asked) == 8
    # How long each of the 8 attempts took, up to the answer (the last one: the disconnect).
    waited = gaps([*client.asked, client.ended])
    # The first failures are free; then each attempt waits longer (0.5, 1, 2, 4 s …). Only
    # lower bounds are asserted: a slow machine makes them longer, never shorter.
    assert waited[-1] >= 3.0, waited
    assert sum(waited[-3:]) >= 5.0, waited
    assert sample(scrape(gw), "sshgw_auth_throttled_total") >= 3

    # Many connections from another host, one wrong guess each, as another user.
    other = user_with_grant(gw, c, password="the-other-right-one")
    for _ in range(6):
        _, exc = await guess(gw, f"{other}+{c}", limit=1, source="127.0.0.2")
        assert isinstance(exc, asyncssh.PermissionDenied), repr(exc)

    def written() -> tuple[int, int]:
        return len(failures(logins(gw, user))), len(failures(logins(gw, other)))

    assert wait_until(lambda: written()[0] >= 2 and written()[1] >= 3, timeout=30)
    await asyncio.sleep(1.0)
    # Not one row per attempt: 8 guesses on one connection are the first one plus one sum;
    # 6 guesses from one host within a minute are three rows and a sum held back.
    rows = logins(gw, user)
    assert len(failures(rows)) == 2, rows
    assert attempts(rows) == 8, rows
    rows = logins(gw, other)
    assert len(failures(rows)) == 3, rows
    # The sum held back is written at the latest when the gateway stops: nothing is lost.
    gw.stop()
    rows = logins(gw, other)
    assert len(failures(rows)) == 4, rows
    assert attempts(rows) == 6, rows
    assert all(r["remote"].startswith("127.0.0.2") for r in failures(rows))
    (summed,) = [r for r in failures(rows) if int(r["detail"].get("count") or 1) > 1]
    assert summed["detail"]["count"] == 3
    assert summed["detail"]["users"] == [other]
    # The log names no password.
    assert "wrong-guess" not in gw.log()


# --- what a peer learns before logging in ----------------------------------------------------


def test_banner_carries_no_version_number(gateway: Gateway) -> None:
    data = read_banner(gateway.port, timeout=10)
    assert data.split(b"\r\n", 1)[0] == b"SSH-2.0-sshgw"
    res = subprocess.run(
        [
            "ssh",
            "-v",
            *SSH_BASE_OPTS,
            "-p",
            str(gateway.port),
            "-o",
            "BatchMode=yes",
            "-i",
            str(gateway.stranger_key),
            "-l",
            "nobody",
            "127.0.0.1",
            "true",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert re.search(rb"remote software version sshgw\r?$", res.stderr, re.M), res.stderr[-2000:]
    assert gateway_pkg.__version__.encode() not in res.stderr


def test_server_version_setting_is_what_clients_see(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"SSHGW_SERVER_VERSION": "Gate_1"})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        assert s.recv(64).startswith(b"SSH-2.0-Gate_1\r\n")
