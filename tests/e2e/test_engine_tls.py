"""A Docker engine over ``tcp://`` with TLS: the engine's certificate verified against the CA
given with ``--tls-ca``, the gateway's client certificate presented (``dockerd --tlsverify``).

The dockerd listens on 127.0.0.1 in the host's network namespace (the gateway must reach its
port), so it cannot use ``--bridge=none`` (that deletes the host's docker0, docs/FACTS.md): it
gets a bridge of its own, deleted at the end, and docker0 is checked after its start and stop.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Gateway, GatewayFactory, no_traceback, one_line_error, unique
from tests.support.engines import ExtraEngine
from tests.support.process import HOST, free_port

pytestmark = pytest.mark.docker


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            cwd=d)  # fmt: skip


def make_leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(
        f"{ext}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.pem", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca, server (127.0.0.1), client (signed by ca) and other (an unrelated CA): NAME.pem/.key."""
    d = tmp_path_factory.mktemp("tls")
    make_ca(d, "ca")
    make_ca(d, "other")
    make_leaf(d, "server", "ca", f"subjectAltName=IP:{HOST}\nextendedKeyUsage=serverAuth")
    make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return d


def docker0_exists() -> bool:
    return subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0


def unused_subnet() -> str:
    """A private /24 no address or route of this host is in: ``10.213.N``."""
    used = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used += subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for n in range(10, 250):
        if f"10.213.{n}." not in used:
            return f"10.213.{n}"
    raise RuntimeError("no unused 10.213.N.0/24")


class TlsEngine(ExtraEngine):
    """A dockerd in the host's network namespace on ``tcp://127.0.0.1:PORT`` with
    ``--tlsverify``, its own bridge (not docker0, not none) and its own unix socket."""

    own_netns = False

    def __init__(self, name: str, certs: Path) -> None:
        super().__init__(name)
        self.certs = certs
        self.port = free_port()
        self.tcp_url = f"tcp://{HOST}:{self.port}"
        self.bridge = f"sgwt{os.getpid() % 100000}"
        self.subnet = unused_subnet()

    def network_argv(self) -> list[str]:
        c = self.certs
        return [f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false",
                "-H", self.tcp_url, "--tlsverify", f"--tlscacert={c / 'ca.pem'}",
                f"--tlscert={c / 'server.pem'}", f"--tlskey={c / 'server.key'}"]  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        ip = ["ip", "link"]
        subprocess.run([*ip, "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge], check=True)
        subprocess.run([*ip, "set", self.bridge, "up"], check=True)
        super().start(timeout)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


class World:
    def __init__(self, gw: Gateway, eng: TlsEngine, name: str, user: str) -> None:
        self.gw = gw
        self.eng = eng
        self.name = name  # the container on the engine
        self.user = user
        self.docker0_after_start = False


@pytest.fixture(scope="module")
def world(gateway_factory: GatewayFactory, certs: Path) -> Iterator[World]:
    assert docker0_exists(), "docker0 is missing before the test"
    eng = TlsEngine("tls", certs)
    try:
        eng.start()
        docker0_after_start = docker0_exists()
        eng.load_busybox()
        name = unique("tlsc")
        eng.run(name)
        gw = gateway_factory({"SSHGW_ENGINE_POLL_INTERVAL": "0.5"})
        user = unique("tu")
        gw.add_user(user)
        gw.cli("grant", "add", "--user", user, "--target", "*", "--rights", "shell,exec",
               "--logins", "root")  # fmt: skip
        w = World(gw, eng, name, user)
        w.docker0_after_start = docker0_after_start
        yield w
    finally:
        eng.stop()
    assert docker0_exists(), "docker0 is gone after the TLS engine stopped"


def tls_args(certs: Path, ca: str = "ca") -> list[str]:
    return ["--tls-ca", str(certs / f"{ca}.pem"), "--tls-cert", str(certs / "client.pem"),
            "--tls-key", str(certs / "client.key")]  # fmt: skip


def test_docker0_survives_the_engine_start(world: World) -> None:
    assert world.docker0_after_start
    assert docker0_exists()


def test_the_engine_wants_a_client_certificate(world: World, certs: Path) -> None:
    def ping(*client: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["curl", "-sS", "--cacert", str(certs / "ca.pem"), *client,
                               f"https://{HOST}:{world.eng.port}/_ping"],
                              capture_output=True, timeout=30)  # fmt: skip

    res = ping("--cert", str(certs / "client.pem"), "--key", str(certs / "client.key"))
    assert res.returncode == 0 and res.stdout == b"OK", res.stderr
    res = ping()
    assert res.returncode != 0, res.stdout


def test_ssh_runs_a_command_on_the_tls_engine(world: World, certs: Path) -> None:
    world.gw.cli("engine", "add", "tls1", world.eng.tcp_url, *tls_args(certs))
    res = world.gw.cli("engine", "check", "tls1")
    assert res.stdout.startswith("tls1: up ("), res.stdout
    res = world.gw.ssh(f"{world.user}+{world.name}.tls1", "echo over-tls; exit 7")
    assert res.returncode == 7, res.stderr
    assert res.stdout == b"over-tls\n"
    res = world.gw.ssh(f"{world.user}+{world.name}", "hostname")
    assert res.returncode == 0 and res.stdout.strip(), res.stderr


def test_an_untrusted_engine_certificate_is_one_clear_line(world: World, certs: Path) -> None:
    world.gw.cli("engine", "add", "bad1", world.eng.tcp_url, *tls_args(certs, "other"))
    res = world.gw.cli("engine", "check", "bad1", check=False)
    lines = res.stdout.strip().splitlines() + res.stderr.strip().splitlines()
    assert len(lines) == 1, (res.stdout, res.stderr)
    assert lines[0].startswith("bad1: down") and "TLS certificate not trusted" in lines[0], lines
    no_traceback(res.stdout.encode(), res.stderr.encode())
    res = world.gw.ssh(f"{world.user}+{world.name}.bad1", "hostname")
    assert res.returncode != 0
    assert "engine bad1 unavailable" in one_line_error(res.stderr)
