"""Two gateway replicas behind a real HAProxy (Debian's package) sending PROXY protocol v2, on
one PostgreSQL database and one host key directory (tests/e2e/cluster.py): balancing, the
client's address, the shared host keys, the PROXY protocol's guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.e2e.cluster import BALANCER, CLIENT, Cluster, Login, fresh_database, running_cluster
from tests.e2e.cluster import audit as _audit
from tests.e2e.cluster import metric as _metric
from tests.e2e.cluster import ssh as _ssh
from tests.e2e.helpers import unique, wait_until
from tests.support.memory import rss
from tests.support.openssh import CONNECT_TIMEOUT
from tests.support.process import HOST

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

MakeContainer = Callable[..., str]

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_base_url: str, docker_host: str
) -> Iterator[Cluster]:
    """Two replicas and HAProxy, shared by the module's tests (metrics are read as deltas)."""
    with (
        fresh_database(pg_base_url) as db,
        running_cluster(tmp_path_factory.mktemp("rp"), db, {}) as c,
    ):
        yield c


@pytest.fixture
def capped_cluster(tmp_path: Path, pg_url: str, docker_host: str) -> Iterator[Cluster]:
    """A cluster of its own with at most 2 unauthenticated connections per source."""
    with running_cluster(tmp_path, pg_url, {"SSHGW_MAX_STARTUPS_PER_SOURCE": "2"}) as c:
        yield c


@pytest.fixture
def login(cluster: Cluster, make_container: MakeContainer, busybox_image: str) -> Login:
    """A user with a key and a grant (shell, exec) on a running container."""
    container = make_container(busybox_image)
    user = unique("rp")
    key = cluster.admin.add_user(user)
    assert key is not None
    cluster.admin.grant(container, user=user, rights="shell,exec")
    return Login(user, container, key)


def test_sessions_alternate_and_the_audit_shows_the_client(cluster: Cluster, login: Login) -> None:
    user = login.user
    a, b = cluster.replicas
    served = []
    offsets = [g.log_size() for g in cluster.replicas]
    for i in range(4):
        before = [_metric(g, "sshgw_connections_opened_total") for g in cluster.replicas]
        res = _ssh(cluster, login.name, login.key, "echo", f"run{i}")
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"run{i}\n".encode()
        after = [_metric(g, "sshgw_connections_opened_total") for g in cluster.replicas]
        (which,) = [n for n in range(2) if after[n] == before[n] + 1]
        assert sum(after) == sum(before) + 1
        served.append(which)
    assert served in ([0, 1, 0, 1], [1, 0, 1, 0]), served

    # Both replicas wrote to the one database: every login and session shows the client's
    # address (127.0.0.2), never HAProxy's (127.0.0.3).
    def ended() -> bool:
        return [e["kind"] for e in _audit(b, "--user", user)].count("session.end") == 4

    assert wait_until(ended, timeout=60, interval=0.5), _audit(b, "--user", user)
    events = _audit(b, "--user", user)
    logins = [e for e in events if e["kind"] == "login"]
    assert len(logins) == 4
    for e in [*logins, *(e for e in events if e["kind"].startswith("session."))]:
        assert e["remote"].startswith(f"{CLIENT}:"), e
    sessions = json.loads(a.cli("sessions", "--user", user, "--json").stdout)
    assert len(sessions) == 4
    assert all(s["remote"].startswith(f"{CLIENT}:") for s in sessions), sessions
    assert len({s["remote"] for s in sessions}) == 4  # the client's own source ports
    # The logs too: each replica logged the client as the peer.
    for gw, offset in zip(cluster.replicas, offsets, strict=True):
        assert f"Peer address: {CLIENT}" in gw.log(offset)
        assert f"Peer address: {BALANCER}" not in gw.log(offset)


def test_the_host_key_through_the_balancer_never_changes(cluster: Cluster) -> None:
    shared = sorted(p.read_text().split()[1] for p in cluster.key_dir.glob("*.pub"))
    assert len(shared) == 2
    seen = []
    for _ in range(6):
        res = subprocess.run(
            ["ssh-keyscan", "-p", str(cluster.port), "-t", "ed25519,ecdsa", HOST],
            capture_output=True,
            text=True,
            timeout=60,
        )
        keys = sorted(line.split()[2] for line in res.stdout.splitlines() if line.strip())
        seen.append(keys)
    assert all(keys == shared for keys in seen), seen
    # Each replica loaded the keys it found and made none of its own.
    for gw in cluster.replicas:
        assert not list(gw.data_dir.glob("ssh_host_*"))
    assert "generated host key" not in cluster.replicas[1].log()
    fp = json.loads(cluster.replicas[1].cli("hostkey", "show", "--json").stdout)
    assert fp == json.loads(cluster.replicas[0].cli("hostkey", "show", "--json").stdout)


def _raw(port: int, source: str, payload: bytes, wait: float = 10.0) -> bytes:
    """Connect from ``source``, send ``payload``, return what comes back until the gateway
    closes (or ``wait`` seconds pass: then b'<open>' is appended)."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(wait)
        s.connect((HOST, port))
        with contextlib.suppress(OSError):
            s.sendall(payload)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            out += b"<open>"
        except OSError:
            pass
        return out


def test_a_trusted_address_without_a_header_is_refused(cluster: Cluster) -> None:
    gw = cluster.replicas[0]
    before = _metric(gw, "sshgw_proxy_header_refused_total", '{reason="invalid"}')
    missing = _metric(gw, "sshgw_proxy_header_refused_total", '{reason="missing"}')
    # An SSH client talking straight to the replica from the balancer's address: no banner.
    assert _raw(gw.port, BALANCER, b"SSH-2.0-OpenSSH_9.2\r\n") == b""
    res = subprocess.run(
        [
            *("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", *CONNECT_TIMEOUT),
            *("-b", BALANCER, "-p", str(gw.port), f"nobody@{HOST}", "true"),
        ],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 255
    assert _metric(gw, "sshgw_proxy_header_refused_total", '{reason="invalid"}') == before + 2
    assert "PROXY protocol header from 127.0.0.3:" in gw.log()
    # Silent: closed after login_timeout (5 s here), counted as missing.
    t0 = time.monotonic()
    assert _raw(gw.port, BALANCER, b"", wait=20) == b""
    assert 4 < time.monotonic() - t0 < 15
    assert _metric(gw, "sshgw_proxy_header_refused_total", '{reason="missing"}') == missing + 1
    assert "Traceback" not in gw.log()


async def _login_over(sock: socket.socket, login: Login) -> str:
    async with asyncssh.connect(
        sock=sock,
        username=login.name,
        client_keys=[str(login.key)],
        known_hosts=None,
        agent_path=None,
    ) as conn:
        res = await conn.run("echo hi", check=True)
        return str(res.stdout)


def _connect_with(port: int, source: str, header: bytes) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect((HOST, port))
    s.sendall(header)
    return s


def test_v1_and_v2_headers_written_by_hand(cluster: Cluster, login: Login) -> None:
    gw = cluster.replicas[1]
    v1 = b"PROXY TCP4 192.0.2.77 127.0.0.1 55555 22\r\n"
    v2 = (
        V2_SIG
        + b"\x21\x21"
        + struct.pack(">H", 36)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::42")
        + socket.inet_pton(socket.AF_INET6, "::1")
        + struct.pack(">HH", 44444, 22)
    )
    local = V2_SIG + b"\x20\x00\x00\x00"  # LOCAL: the balancer's own connection
    for header in (v1, v2, local):
        sock = _connect_with(gw.port, BALANCER, header)
        assert asyncio.run(_login_over(sock, login)) == "hi\n"

    def logged() -> list[str]:
        return [e["remote"] for e in _audit(gw, "--user", login.user, "--kind", "login")]

    assert wait_until(lambda: len(logged()) == 3, timeout=30), logged()
    remotes = logged()
    assert "192.0.2.77:55555" in remotes
    assert "[2001:db8::42]:44444" in remotes
    assert any(r.startswith(f"{BALANCER}:") for r in remotes)


def test_a_spoofed_header_from_an_untrusted_address_is_not_honoured(
    cluster: Cluster, login: Login
) -> None:
    gw = cluster.replicas[0]
    spoof = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 22\r\n"
    for source in (HOST, CLIENT):  # neither is in SSHGW_PROXY_FROM
        sock = _connect_with(gw.port, source, spoof)
        with pytest.raises((asyncssh.Error, OSError)):
            asyncio.run(_login_over(sock, login))
        sock.close()
    v2 = V2_SIG + b"\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.9") * 2 + b"\x9c\x40\x00\x16"
    sock = _connect_with(gw.port, HOST, v2)
    with pytest.raises((asyncssh.Error, OSError)):
        asyncio.run(_login_over(sock, login))
    sock.close()
    time.sleep(1)
    assert "203.0.113.9" not in gw.log()
    assert "handshake failed from 127.0.0.1:" in gw.log()
    assert all("203.0.113.9" not in json.dumps(e) for e in _audit(gw))


def test_oversized_and_garbage_headers_close_without_holding_memory(cluster: Cluster) -> None:
    gw = cluster.replicas[0]
    assert gw.proc is not None
    too_long = _metric(gw, "sshgw_proxy_header_refused_total", '{reason="too_long"}')
    invalid = _metric(gw, "sshgw_proxy_header_refused_total", '{reason="invalid"}')
    cases = [
        b"PROXY TCP4 " + b"1" * 200_000,  # a v1 line that never ends
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # no CR
        V2_SIG + b"\x21\x11\xff\xff" + b"\x00" * 100_000,  # 64 KiB announced
        V2_SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xaa" * 500,  # a TLS hello
        bytes(range(256)) * 100,
    ]
    for payload in cases:
        assert _raw(gw.port, BALANCER, payload) == b"", payload[:20]
    assert _metric(gw, "sshgw_proxy_header_refused_total", '{reason="too_long"}') == too_long + 2
    assert _metric(gw, "sshgw_proxy_header_refused_total", '{reason="invalid"}') == invalid + 4

    # Many connections that each send most of the largest header allowed, then wait: what
    # they make the gateway hold is bounded by the header limit (4 KiB each).
    base = rss(gw.proc.pid)
    held = []
    for _ in range(60):
        s = socket.socket()
        s.bind((BALANCER, 0))
        s.connect((HOST, gw.port))
        s.sendall(V2_SIG + b"\x21\x11\x10\x00" + b"\x00" * 4000)
        held.append(s)
    time.sleep(1)
    grown = rss(gw.proc.pid) - base
    for s in held:
        s.close()
    assert grown < 16 << 20, grown
    assert "Traceback" not in gw.log()
    # Every slot those connections took is free again (none leaked on any path).
    assert wait_until(lambda: _metric(gw, "sshgw_unauthenticated_connections") == 0, timeout=20)
    # The gateway still serves (through the balancer).
    assert _raw(cluster.port, HOST, b"", wait=5).startswith(b"SSH-2.0-")


def _banner(port: int, source: str) -> tuple[socket.socket, bytes]:
    """Connect from ``source`` and read the server's first line (b'' when it closes first)."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((HOST, port))
    try:
        return s, s.recv(256)
    except OSError:
        return s, b""


def test_the_per_source_cap_counts_the_client_not_the_balancer(capped_cluster: Cluster) -> None:
    cluster = capped_cluster

    def logs() -> str:
        tails = [g.log()[-3000:] for g in cluster.replicas]
        return "\n---\n".join([*tails, cluster.haproxy_log.read_text()[-2000:]])

    held = []
    try:
        # Round robin: two unauthenticated connections from 127.0.0.2 on each replica.
        for _ in range(4):
            sock, first = _banner(cluster.port, CLIENT)
            held.append(sock)
            assert first.startswith(b"SSH-2.0-"), logs()
        # The fifth from 127.0.0.2 (on replica 1) is over that client's cap ...
        sock, first = _banner(cluster.port, CLIENT)
        held.append(sock)
        assert first == b""
        # ... while another client behind the same balancer (on replica 2) is not.
        sock, first = _banner(cluster.port, "127.0.0.4")
        held.append(sock)
        assert first.startswith(b"SSH-2.0-"), logs()
    finally:
        for sock in held:
            sock.close()
    refused = [
        _metric(g, "sshgw_startups_refused_total", '{reason="per_source"}')
        for g in cluster.replicas
    ]
    assert sorted(refused) == [0.0, 1.0]  # on the replica that got the fifth
    for gw in cluster.replicas:
        assert wait_until(lambda g=gw: _metric(g, "sshgw_unauthenticated_connections") == 0, 20)
