"""Gateway replicas behind a real HAProxy (Debian's package) sending PROXY protocol v2, on one
PostgreSQL database and one host key directory: what test_replicas, test_drain and
test_replica_loss share.

HAProxy listens on 127.0.0.1 and connects to the replicas from 127.0.0.3 (``source``), the only
address in ``SSHGW_PROXY_FROM``; clients connect to HAProxy from 127.0.0.2 (``ssh -b``). So the
audit shows 127.0.0.2 only when the header was honoured (without it: 127.0.0.3), and the
readiness probe of the test launcher (from 127.0.0.1, not trusted) still gets a banner.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.helpers import Gateway, wait_until
from tests.support.openssh import CONNECT_TIMEOUT, KEYS_ONLY
from tests.support.process import HOST, free_port, stop_process

CLIENT = "127.0.0.2"  # where the ssh client connects from
BALANCER = "127.0.0.3"  # where HAProxy connects to the replicas from (trusted)


@dataclass
class Cluster:
    replicas: list[Gateway]
    port: int  # HAProxy's frontend
    key_dir: Path
    known_hosts: Path
    haproxy_log: Path

    @property
    def admin(self) -> Gateway:
        return self.replicas[0]


@dataclass
class Login:
    user: str
    container: str
    key: Path

    @property
    def name(self) -> str:
        return f"{self.user}+{self.container}"


def haproxy_config(port: int, backends: list[int], redispatch: bool = False) -> str:
    """Round robin over the replicas; with ``redispatch``, a connection a replica refuses (its
    listener closed: it drains) is retried once on another."""
    servers = "\n".join(
        f"    server gw{i} {HOST}:{p} send-proxy-v2 source {BALANCER}"
        for i, p in enumerate(backends, 1)
    )
    retry = "    retries 1\n    option redispatch 1\n" if redispatch else ""
    return f"""global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
{retry}
listen ssh
    bind {HOST}:{port}
    balance roundrobin
{servers}
"""


@contextlib.contextmanager
def running_cluster(
    tmp_path: Path, pg_url: str, settings: Mapping[str, str], redispatch: bool = False
) -> Iterator[Cluster]:
    """Two replicas and HAProxy (``redispatch``: see :func:`haproxy_config`)."""
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if haproxy is None:
        pytest.fail("haproxy not found (apt-get install haproxy)", pytrace=False)
    key_dir = tmp_path / "hostkeys"
    env = {
        "SSHGW_DATABASE_URL": pg_url,
        "SSHGW_HOST_KEY_DIR": str(key_dir),
        "SSHGW_PROXY_PROTOCOL": "true",
        "SSHGW_PROXY_FROM": BALANCER,
        "SSHGW_LOGIN_TIMEOUT": "5",
        **settings,
    }
    replicas: list[Gateway] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        replicas += [Gateway(tmp_path / name, env) for name in ("gw1", "gw2")]
        replicas[0].cli("db", "upgrade")  # PostgreSQL: the schema is an admin's step
        for gw in replicas:
            gw.start()
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(haproxy_config(port, [g.port for g in replicas], redispatch))
        res = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        log_path = tmp_path / "haproxy.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [haproxy, "-db", "-f", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert wait_until(lambda: accepts(port), timeout=20), log_path.read_text()
        known_hosts = tmp_path / "known_hosts"
        lines = [
            f"[{HOST}]:{port} {p.read_text().split()[0]} {p.read_text().split()[1]}"
            for p in sorted(key_dir.glob("*.pub"))
        ]
        known_hosts.write_text("\n".join(lines) + "\n")
        yield Cluster(replicas, port, key_dir, known_hosts, log_path)
    finally:
        stop_process(proc)
        for gw in replicas:
            gw.stop(check=False)


@contextlib.contextmanager
def fresh_database(pg_base_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for a module's cluster (``pg_url`` is per test)."""
    name = f"sshgw_t_{uuid.uuid4().hex[:12]}"
    admin_db = f"postgresql://{urlsplit(pg_base_url).netloc}/postgres"

    def psql(sql: str) -> subprocess.CompletedProcess[str]:
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_db, "-tAc", sql]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    res = psql(f'CREATE DATABASE "{name}"')
    assert res.returncode == 0, res.stderr
    try:
        yield f"{pg_base_url}/{name}"
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def started_session(cluster: Cluster, offsets: list[int], timeout: float = 30) -> tuple[int, str]:
    """Which replica logged a session start after ``offsets`` (its log sizes), and the
    session's id prefix (12 hex digits, as the log shows it)."""
    found: list[tuple[int, str]] = []

    def seen() -> bool:
        for n, gw in enumerate(cluster.replicas):
            m = re.search(r"session=([0-9a-f]{12})\] session started:", gw.log(offsets[n]))
            if m:
                found.append((n, m.group(1)))
                return True
        return False

    assert wait_until(seen, timeout=timeout, interval=0.05), "no session started"
    return found[0]


def open_session(
    cluster: Cluster, login: Login, command: str
) -> tuple[subprocess.Popen[bytes], int, str]:
    """``command`` in a session through the balancer, left running: the ssh client, the index
    of the replica that serves it and the session's id prefix."""
    offsets = [g.log_size() for g in cluster.replicas]
    client = subprocess.Popen(
        ssh_argv(cluster, login.name, login.key, command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    which, sid = started_session(cluster, offsets)
    return client, which, sid


def accepts(port: int) -> bool:
    """A banner through HAProxy. (A probe that only connects and closes leaves HAProxy to
    open its server connection later, out of turn with the test's own connections.)"""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=5) as s:
        return s.recv(64).startswith(b"SSH-2.0-")
    return False


def ssh_argv(cluster: Cluster, login: str, key: Path, *cmd: str) -> list[str]:
    """OpenSSH through HAProxy from 127.0.0.2, with the shared host keys as the only known ones
    (StrictHostKeyChecking=yes: a changed host key fails the call)."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={cluster.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        *KEYS_ONLY,
        *CONNECT_TIMEOUT,
        "-i",
        str(key),
        "-b",
        CLIENT,
        "-p",
        str(cluster.port),
        "-l",
        login,
        HOST,
        *cmd,
    ]


def ssh(cluster: Cluster, login: str, key: Path, *cmd: str) -> subprocess.CompletedProcess[bytes]:
    argv = ssh_argv(cluster, login, key, *cmd)
    return subprocess.run(argv, capture_output=True, timeout=90, stdin=subprocess.DEVNULL)


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://{HOST}:{gw.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def readyz(gw: Gateway) -> tuple[int, str]:
    """``/readyz``: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{gw.metrics_port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def audit(gw: Gateway, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(gw.cli("audit", "--json", *args).stdout))


def sessions(gw: Gateway, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(gw.cli("sessions", "--json", *args).stdout))
