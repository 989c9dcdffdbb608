"""Local port forwarding into containers with the real OpenSSH client: ``ssh -L`` and ``ssh -D``.

Services are busybox ``httpd`` and ``nc`` inside the busybox and Debian images, bound to the
container's loopback (reached through a relay exec'd in the container: busybox ``nc``, or bash's
``/dev/tcp`` on Debian) or to all addresses (reached on the container's address from the
gateway). A real HTTP GET goes through every forward; ``curl --socks5-hostname`` through
``ssh -D``. Refusals (a port outside ``--ports``, another host, no ``forward`` right, no relay
tool for a loopback-only service) are one clear line from OpenSSH; ``sessions kill`` and
revocation end the forwards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Gateway,
    docker,
    free_port,
    has_process,
    unique,
    wait_until,
)
from tests.support.memory import rss, watch_growth
from tests.support.openssh import jump_config
from tests.support.process import HOST, listening

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]
BODY = "hello from inside"
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def grant_forward(
    gateway: Gateway,
    container: str,
    user: str,
    ports: str | None,
    rights: str = "forward",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = ["grant", "add", "--user", user, "--target", container, "--rights", rights]
    if ports is not None:
        args += ["--ports", ports]
    return gateway.cli(*args, check=check)


def forward_user(gateway: Gateway, prefix: str, container: str, ports: str) -> str:
    """A new user with a key and the ``forward`` right on ``container`` for ``ports``."""
    user = unique(prefix)
    gateway.add_user(user)
    grant_forward(gateway, container, user, ports)
    return user


class Client:
    """``ssh -N`` with forwarding options, running until stopped; stderr kept in a file."""

    def __init__(self, gateway: Gateway, login: str, opts: list[str], tmp: Path) -> None:
        self.err_path = tmp / f"ssh-{unique('e')}.err"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 (closed in stop)
        argv = gateway.ssh_cmd(login, extra_opts=["-N", "-o", "ExitOnForwardFailure=yes", *opts])
        # OpenSSH reports a refused channel ("open failed: REASON") at its default level, INFO.
        argv = ["LogLevel=INFO" if a == "LogLevel=ERROR" else a for a in argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., tuple[Client, int]]]:
    made: list[Client] = []

    def start(
        gateway: Gateway, login: str, *forwards: str, socks: bool = False
    ) -> tuple[Client, int]:
        """``-L LPORT:DEST:PORT`` for each ``DEST:PORT`` (one local port, returned), or ``-D``."""
        lport = free_port()
        if socks:
            opts = ["-D", f"{HOST}:{lport}"]
        else:
            opts = [x for f in forwards for x in ("-L", f"{HOST}:{lport}:{f}")]
        client = Client(gateway, login, opts, tmp_path)
        made.append(client)
        ok = wait_until(lambda: listening(lport) or client.proc.poll() is not None, timeout=60)
        assert ok and client.proc.poll() is None, f"ssh did not start forwarding: {client.stderr}"
        return client, lport

    yield start
    for c in made:
        c.stop()


def http_get(url: str, *curl_opts: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", *curl_opts, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_service(container: str, argv: str, port: int, busybox: str = "") -> None:
    """Run ``busybox APPLET ...`` (``argv``) detached in ``container``; wait until it listens."""
    docker("exec", "-d", container, "sh", "-c", f"{busybox}{argv}")
    assert wait_until(
        lambda: (
            f":{port:04X} " in docker("exec", container, "cat", *TCP_TABLES, check=False).stdout
        ),
        timeout=20,
    ), f"{argv} did not start in {container}"


def start_httpd(container: str, bind: str, port: int, busybox: str = "") -> None:
    docker(
        "exec",
        container,
        "sh",
        "-c",
        f"mkdir -p /www && printf '%s' '{BODY}' > /www/index.html",
    )
    start_service(container, f"httpd -f -h /www -p {bind}:{port}", port, busybox)


def with_busybox(container: str, debian: bool) -> str:
    """The prefix that runs a busybox applet in ``container`` (Debian has no busybox: copied)."""
    if not debian:
        return ""
    docker("cp", "/bin/busybox", f"{container}:/usr/local/bin/busybox")
    return "/usr/local/bin/busybox "


def metric(text: str, series: str) -> float:
    """The value of one series in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def forward_sessions(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    rows = json.loads(gateway.cli("sessions", "--user", user, "--json").stdout)
    return [r for r in rows if r["kind"] == "forward"]


def events(gateway: Gateway, user: str, kind: str) -> list[dict[str, Any]]:
    return list(json.loads(gateway.cli("audit", "--kind", kind, "--user", user, "--json").stdout))


@pytest.mark.parametrize("image", ["busybox", "debian"])
def test_http_get_to_loopback_and_all_addresses(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    debian_image: str,
    clients: Callable[..., tuple[Client, int]],
    image: str,
) -> None:
    debian = image == "debian"
    c = make_container(debian_image if debian else busybox_image)
    bb = with_busybox(c, debian)
    start_httpd(c, "127.0.0.1", 8080, bb)  # loopback only: a relay in the container
    start_httpd(c, "0.0.0.0", 8081, bb)  # all addresses: the container's address
    user = forward_user(gateway, "fw", c, "8080-8081")

    for dest, via in (
        ("localhost:8080", "relay (bash)" if debian else "relay (nc)"),
        ("127.0.0.1:8081", "direct"),
        (f"{c}:8081", "direct"),
    ):
        client, lport = clients(gateway, f"{user}+{c}", dest)
        for _ in range(2):  # two connections through one forward
            res = http_get(f"http://{HOST}:{lport}/index.html")
            assert res.returncode == 0, f"{dest}: {res.stderr} / ssh: {client.stderr}"
            assert res.stdout == BODY
        client.stop()

        def of_dest(dest: str = dest) -> list[dict[str, Any]]:
            return [s for s in forward_sessions(gateway, user) if s["command"].startswith(dest)]

        assert wait_until(lambda: sum(1 for s in of_dest() if s["ended_at"]) == 2, timeout=30)
        rows = of_dest()
        assert all(s["command"] == f"{dest} via {via}" for s in rows), rows
        assert all(s["bytes_out"] > len(BODY) and s["bytes_in"] > 0 for s in rows), rows
        assert all(s["end_reason"] == "exit" for s in rows), rows

    starts = [e for e in events(gateway, user, "session.start") if e["detail"]["kind"] == "forward"]
    ends = [e for e in events(gateway, user, "session.end") if e["detail"]["kind"] == "forward"]
    assert len(starts) == 6 and len(ends) == 6
    assert {e["detail"]["port"] for e in starts} == {8080, 8081}
    assert all(e["container"] == c for e in starts + ends)
    assert all(e["detail"]["bytes_out"] > len(BODY) and "duration" in e["detail"] for e in ends)
    metrics = (
        urllib.request.urlopen(f"http://{HOST}:{gateway.metrics_port}/metrics", timeout=30)
        .read()
        .decode()
    )
    relay_opens = metric(metrics, 'sshgw_forward_opens_total{result="ok",via="relay"}')
    assert (
        relay_opens >= 2
        and metric(metrics, 'sshgw_forward_opens_total{result="ok",via="direct"}') >= 4
    )
    assert metric(metrics, 'sshgw_bytes_from_container_total{kind="forward"}') > 6 * len(BODY)
    assert metric(metrics, 'sshgw_sessions_active{kind="forward"}') == 0
    if not debian:
        # The relays ended with their connections.
        assert wait_until(lambda: not has_process(c, r"nc 127\.0\.0\.1 8080"), timeout=20)


def test_half_close_reaches_the_service_both_ways(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    """A service that answers only after EOF (``nc -q``, a database's COPY): the client's
    half-close reaches it and its answer still comes back, through the relay and directly."""
    c = make_container(busybox_image)
    answer = "wc -c; echo after-eof"
    start_service(c, f"nc -ll -p 9000 127.0.0.1 -e sh -c '{answer}'", 9000)
    start_service(c, f"nc -ll -p 9001 -e sh -c '{answer}'", 9001)
    user = forward_user(gateway, "fh", c, "9000,9001")
    for port in (9000, 9001):
        _, lport = clients(gateway, f"{user}+{c}", f"localhost:{port}")
        with socket.create_connection((HOST, lport), timeout=30) as s:
            s.sendall(b"x" * 100_000)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        assert got.split() == [b"100000", b"after-eof"], (port, got)

    # The service closes first (a greeting, then EOF): the client sees EOF. Through a relay the
    # forward then ends although the client keeps its socket open (the relay process is gone);
    # directly it stays half-open until the client closes, as with OpenSSH's sshd.
    for port in (9002, 9003):
        bind = "127.0.0.1" if port == 9002 else ""
        start_service(c, f"nc -ll -p {port} {bind} -e echo bye", port)
    grant_forward(gateway, c, user, "9002,9003")
    for port in (9002, 9003):
        _, lport = clients(gateway, f"{user}+{c}", f"localhost:{port}")
        with socket.create_connection((HOST, lport), timeout=30) as s:
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            assert got == b"bye\n"

            def ended(port: int = port) -> bool:
                rows = forward_sessions(gateway, user)
                return any(
                    r["ended_at"] for r in rows if r["command"].startswith(f"localhost:{port}")
                )

            if port == 9002:
                assert wait_until(ended, timeout=20), f"the forward to {port} did not end"


def refused(client: Client, lport: int) -> str:
    """Connect through the forward: the connection must close with nothing; the ssh client
    must say why in one line."""
    with socket.create_connection((HOST, lport), timeout=30) as s:
        s.settimeout(30)
        assert s.recv(100) == b""
    assert wait_until(lambda: "open failed" in client.stderr, timeout=20), client.stderr
    lines = [ln for ln in client.stderr.splitlines() if "open failed" in ln]
    assert len(lines) == 1, client.stderr
    assert "Traceback" not in client.stderr
    return lines[0]


def test_refusals_are_one_clear_line(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    c = make_container(busybox_image)
    other = make_container(busybox_image)
    start_httpd(c, "0.0.0.0", 8081)
    start_httpd(other, "0.0.0.0", 8081)
    other_ip = docker(
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        other,
    ).stdout.strip()
    user, no_forward, no_grant = unique("fr"), unique("fn"), unique("fg")
    for u in (user, no_forward, no_grant):
        gateway.add_user(u)
    grant_forward(gateway, c, user, "8081")
    grant_forward(gateway, c, no_forward, None, rights="shell,exec")

    # A port outside --ports.
    client, lport = clients(gateway, f"{user}+{c}", "localhost:8082")
    assert "port 8082 is not allowed" in refused(client, lport)
    # Another host: another container's address, a public name, the gateway host.
    for dest in (
        f"{other_ip}:8081",
        "example.com:8081",
        "0.0.0.0:8081",
        "127.0.0.2:8081",
    ):
        client, lport = clients(gateway, f"{user}+{c}", dest)
        line = refused(client, lport)
        assert f"forwarding to {dest.rsplit(':', 1)[0]} is not allowed" in line, line
    # No forward right; no grant at all (the container's existence is not revealed).
    client, lport = clients(gateway, f"{no_forward}+{c}", "localhost:8081")
    assert "no forward right" in refused(client, lport)
    client, lport = clients(gateway, f"{no_grant}+{c}", "localhost:8081")
    assert f"no such container, or access denied: {c}" in refused(client, lport)
    # A login without a container.
    client, lport = clients(gateway, user, "localhost:8081")
    assert "needs a container in the login name" in refused(client, lport)

    assert forward_sessions(gateway, user) == []
    denied = events(gateway, user, "denied")
    assert {e["detail"]["reason"] for e in denied} >= {
        "port_not_allowed",
        "dest_not_allowed",
    }


def test_no_relay_tool_for_a_loopback_service_is_one_clear_error(
    gateway: Gateway,
    make_container: MakeContainer,
    debian_image: str,
    noshell_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    # Debian without bash: dash, and neither nc nor socat (busybox's sh would bring its nc).
    c = make_container(debian_image)
    start_httpd(c, "127.0.0.1", 8080, with_busybox(c, True))
    docker("exec", c, "rm", "-f", "/usr/bin/bash", "/bin/bash")
    # No shell at all: the relay cannot even start.
    bare = make_container(noshell_image)
    docker("exec", "-d", bare, "/bbx/busybox", "httpd", "-f", "-p", "127.0.0.1:8080")
    user = forward_user(gateway, "fx", c, "8080")
    grant_forward(gateway, bare, user, "8080")

    client, lport = clients(gateway, f"{user}+{c}", "localhost:8080")
    line = refused(client, lport)
    assert f"cannot reach port 8080 in container {c}: connection refused on " in line, line
    assert "and the image has no relay tool (nc (busybox), socat, bash)" in line, line

    client, lport = clients(gateway, f"{user}+{bare}", "localhost:8080")
    line = refused(client, lport)
    assert f"cannot reach port 8080 in container {bare}: connection refused on " in line, line
    assert "relay: no shell (/bin/sh) in the container to start a relay" in line, line
    assert forward_sessions(gateway, user) == []


def test_nothing_listening_is_one_clear_error(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    """Neither the container's address nor the relay (busybox nc) gets a connection: the
    channel is refused with both reasons, as OpenSSH's sshd refuses it with its connect error."""
    c = make_container(busybox_image)
    user = forward_user(gateway, "fz", c, "9999")
    client, lport = clients(gateway, f"{user}+{c}", "localhost:9999")
    line = refused(client, lport)
    assert "connect failed: cannot reach port 9999 in container" in line, line
    assert "connection refused on " in line and "relay: connection refused" in line, line
    assert forward_sessions(gateway, user) == []


def test_socks_with_curl(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    c = make_container(busybox_image)
    start_httpd(c, "127.0.0.1", 8080)
    start_httpd(c, "0.0.0.0", 8081)
    user = forward_user(gateway, "fs", c, "8080,8081")
    client, lport = clients(gateway, f"{user}+{c}", socks=True)
    proxy = ("--socks5-hostname", f"{HOST}:{lport}")
    for url in ("http://localhost:8080/index.html", f"http://{c}:8081/index.html"):
        res = http_get(url, *proxy)
        assert res.returncode == 0 and res.stdout == BODY, (
            url,
            res.stderr,
            client.stderr,
        )
    res = http_get("http://example.com:8081/", *proxy)
    assert res.returncode != 0
    assert wait_until(lambda: "forwarding to example.com is not allowed" in client.stderr, 20)


def _echo(lport: int) -> socket.socket:
    s = socket.create_connection((HOST, lport), timeout=30)
    s.sendall(b"ping\n")
    assert s.recv(100) == b"ping\n"
    return s


def _closed(s: socket.socket) -> bool:
    try:
        s.settimeout(30)
        return s.recv(100) == b""
    except OSError:
        return True


def test_sessions_kill_and_revocation_end_forwards(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    c = make_container(busybox_image)
    start_service(c, "nc -ll -p 9000 127.0.0.1 -e cat", 9000)  # loopback: relay
    start_service(c, "nc -ll -p 9001 -e cat", 9001)  # all addresses: direct
    user = forward_user(gateway, "fk", c, "9000-9001")
    client, lport = clients(gateway, f"{user}+{c}", "localhost:9000")
    relayed = _echo(lport)
    assert wait_until(lambda: len(forward_sessions(gateway, user)) == 1, timeout=30)
    (row,) = forward_sessions(gateway, user)
    assert has_process(c, r"nc 127\.0\.0\.1 9000")
    res = gateway.cli("sessions", "kill", row["id"])
    assert "ended: killed" in res.stdout
    assert _closed(relayed)
    relayed.close()
    assert wait_until(lambda: not has_process(c, r"nc 127\.0\.0\.1 9000"), timeout=20), (
        "the killed forward's relay lives on in the container"
    )
    client.stop()

    client, lport = clients(gateway, f"{user}+{c}", "localhost:9001")
    direct = _echo(lport)
    t0 = time.monotonic()
    gateway.cli("user", "disable", user)
    assert _closed(direct)
    assert time.monotonic() - t0 < 15
    direct.close()
    assert wait_until(lambda: client.proc.poll() is not None, timeout=20)
    rows = forward_sessions(gateway, user)
    assert sorted(r["end_reason"] for r in rows) == ["killed", "revoked"], rows


def test_grant_ports_and_check_explain_the_decision(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("fc")
    gateway.add_user(user)
    res = grant_forward(gateway, c, user, "8000-8100,80")
    assert "ports 80,8000-8100" in res.stdout
    bad = grant_forward(gateway, c, user, "80-", check=False)
    assert bad.returncode != 0 and "--ports" in bad.stderr and "Traceback" not in bad.stderr
    (g,) = [
        x for x in json.loads(gateway.cli("grant", "list", "--json").stdout) if x["user"] == user
    ]
    assert g["ports"] == "80,8000-8100"

    ok = gateway.cli("check", user, c, "--right", "forward", "--port", "8080", check=False)
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.startswith("ALLOW") and "gives forward to port 8080" in ok.stdout
    assert "ports: 80,8000-8100" in ok.stdout
    no = gateway.cli("check", user, c, "--right", "forward", "--port", "22", "--json", check=False)
    assert no.returncode == 1
    doc = json.loads(no.stdout)
    assert doc["allowed"] is False and doc["reason"] == "port_not_allowed" and doc["port"] == 22
    assert "allows port 22" in doc["message"]
    wrong = gateway.cli("check", user, c, "--right", "shell", "--port", "22", check=False)
    assert wrong.returncode != 0 and "--port goes with --right forward" in wrong.stderr


def test_a_client_that_stops_reading_holds_bounded_memory(
    gateway: Gateway,
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    """The service never stops sending, the client never reads: the gateway stops reading the
    service (directly and through the relay) instead of buffering."""
    c = make_container(busybox_image)
    start_service(c, "nc -ll -p 9000 127.0.0.1 -e cat /dev/zero", 9000)
    start_service(c, "nc -ll -p 9001 -e cat /dev/zero", 9001)
    user = forward_user(gateway, "fm", c, "9000-9001")
    assert gateway.proc is not None
    pid = gateway.proc.pid
    held = []
    for port in (9000, 9001):
        _, lport = clients(gateway, f"{user}+{c}", f"localhost:{port}")
        s = socket.create_connection((HOST, lport), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        assert s.recv(1024)  # data flows
        held.append(s)
    base = rss(pid)
    growth = asyncio.run(watch_growth(pid, base, 8.0))
    for s in held:
        s.close()
    assert growth < 32 << 20, f"gateway grew {growth >> 20} MiB behind two stalled forwards"


def test_forwards_count_against_max_sessions_and_remote_forwarding_is_refused(
    gateway_factory: Callable[..., Gateway],
    make_container: MakeContainer,
    busybox_image: str,
    clients: Callable[..., tuple[Client, int]],
) -> None:
    gw = gateway_factory({"SSHGW_MAX_SESSIONS": "2"})
    c = make_container(busybox_image)
    start_service(c, "nc -ll -p 9001 -e cat", 9001)
    user = unique("fl")
    gw.add_user(user)
    grant_forward(gw, c, user, "9001")
    client, lport = clients(gw, f"{user}+{c}", "localhost:9001")
    first, second = _echo(lport), _echo(lport)
    third = socket.create_connection((HOST, lport), timeout=30)
    assert _closed(third)
    assert wait_until(
        lambda: "too many sessions on this connection (at most 2)" in client.stderr, 20
    )
    first.close()
    assert wait_until(lambda: _echo_ok(lport), timeout=20)  # its place is free again
    second.close()

    # ssh -R: refused. The global request's failure carries no text: OpenSSH says "remote port
    # forwarding failed"; the gateway's reason comes as a debug message (shown with -v).
    res = subprocess.run(
        gw.ssh_cmd(
            f"{user}+{c}",
            extra_opts=[
                "-v",
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                "127.0.0.1:0:x:22",
            ],
        ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode != 0
    assert "remote port forwarding failed" in res.stderr, res.stderr
    assert "remote port forwarding (ssh -R) is not supported" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def _echo_ok(lport: int) -> bool:
    try:
        _echo(lport).close()
        return True
    except (OSError, AssertionError):
        return False


def test_killing_a_session_ends_its_connections_forwards(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """``ssh -L … user+c sleep 100``: killing the command's session also ends the forwards of
    that connection (else they would keep the connection, and the access, alive)."""
    c = make_container(busybox_image)
    start_service(c, "nc -ll -p 9001 -e cat", 9001)
    user = unique("fj")
    gateway.add_user(user)
    grant_forward(gateway, c, user, "9001", rights="exec,forward")
    lport = free_port()
    proc = subprocess.Popen(
        gateway.ssh_cmd(
            f"{user}+{c}",
            "sleep 100",
            extra_opts=["-o", "ExitOnForwardFailure=yes", "-L", f"{HOST}:{lport}:localhost:9001"],
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: listening(lport), timeout=60)
        s = _echo(lport)

        def exec_session() -> list[dict[str, Any]]:
            rows = json.loads(gateway.cli("sessions", "--active", "--user", user, "--json").stdout)
            return [r for r in rows if r["kind"] == "exec"]

        assert wait_until(lambda: len(exec_session()) == 1, timeout=30)
        gateway.cli("sessions", "kill", exec_session()[0]["id"])
        assert _closed(s)
        s.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    (fwd,) = forward_sessions(gateway, user)
    assert fwd["end_reason"] == "killed"


def test_forward_inside_a_proxyjump_connection(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    """``ssh -J gw -L … root@c``: the forward is asked for on the inner connection the gateway
    serves itself; the same grant (ports, login) decides it."""
    c = make_container(busybox_image)
    start_service(c, "nc -ll -p 9001 127.0.0.1 -e cat", 9001)
    user = unique("fp")
    gateway.add_user(user)
    gateway.cli(
        "grant", "add", "--user", user, "--target", c, "--rights", "forward",
        "--ports", "9001", "--logins", "root",
    )  # fmt: skip
    config = jump_config(tmp_path / "ssh_config", gateway.port, user, gateway.keys[user])
    lport = free_port()
    argv = ["ssh", "-F", str(config), "-J", "gw", "-N", "-o", "ExitOnForwardFailure=yes"]
    argv += ["-L", f"{HOST}:{lport}:localhost:9001", f"root@{c}"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: listening(lport) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        s = _echo(lport)
        s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert wait_until(lambda: len(forward_sessions(gateway, user)) == 1, timeout=20)
    (row,) = forward_sessions(gateway, user)
    assert row["command"] == "localhost:9001 via relay (nc)" and row["login"] == "root"
