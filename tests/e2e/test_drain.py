"""Graceful drain on SIGTERM (gateway/observe/drain.py): sessions are told and given
SSHGW_DRAIN_TIMEOUT seconds, ``/readyz`` turns 503 at once, the listener closes, the process stops
as soon as the last session has ended; a second signal, or SIGINT, stops it at once.

The last test runs two replicas behind HAProxy (tests/e2e/cluster.py): the drained replica's
session ends by the deadline while new sessions go to the other replica.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    Cluster,
    Login,
    open_session,
    readyz,
    running_cluster,
    sessions,
    ssh,
)
from tests.e2e.cluster import audit as cluster_audit
from tests.e2e.helpers import Gateway, GatewayFactory, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]
NOTICE = b"sshgw: this gateway is shutting down; this session ends in "
ENDED = b"sshgw: the gateway is shutting down; session ended"


def _setup(gw: Gateway, make_container: MakeContainer, image: str) -> tuple[str, str]:
    container = make_container(image)
    user = unique("dr")
    gw.add_user(user)
    gw.grant(container, user=user, rights="shell,exec")
    return user, container


def _session(gw: Gateway, login: str, *cmd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        gw.ssh_cmd(login, *cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_running(gw: Gateway, n: int = 1) -> None:
    """Until ``n`` sessions have started (the gateway's log says so at once; the rows come
    with the audit writer's next batch)."""
    ok = wait_until(lambda: gw.log().count("session started:") >= n, timeout=30, interval=0.05)
    assert ok, gw.log()[-3000:]


def _draining_session(
    gateway_factory: GatewayFactory,
    make_container: MakeContainer,
    image: str,
    drain: str,
    command: str,
) -> tuple[Gateway, str, subprocess.Popen[bytes]]:
    """A gateway with SSHGW_DRAIN_TIMEOUT=``drain`` running ``command`` in a session of a new
    user: the gateway, the user and the ssh client."""
    gw = gateway_factory({"SSHGW_DRAIN_TIMEOUT": drain})
    user, container = _setup(gw, make_container, image)
    client = _session(gw, f"{user}+{container}", command)
    _wait_running(gw)
    assert gw.proc is not None
    return gw, user, client


def test_an_idle_gateway_stops_at_once(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"SSHGW_DRAIN_TIMEOUT": "30"})
    assert gw.proc is not None
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 10, "an idle gateway waited for its drain timeout"
    assert "drain done after" in gw.log()


def test_the_drain_ends_when_the_last_session_does(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw, user, client = _draining_session(
        gateway_factory, make_container, busybox_image, "30", "sleep 4; echo finished"
    )
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: readyz(gw)[0] == 503, timeout=5)
    assert "draining" in readyz(gw)[1]
    # The listener is closed: a new connection is refused.
    late = subprocess.run(gw.ssh_cmd(f"{user}+x", "true"), capture_output=True, timeout=60)
    assert late.returncode == 255
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err  # the command finished on its own
    assert out == b"finished\n"
    assert NOTICE + b"30 s\n" in err or NOTICE + b"29 s\n" in err, err
    assert gw.proc.wait(timeout=10) == 0  # at once after the last session, not after 30 s
    log = gw.log()
    assert "drain done after" in log
    [row] = sessions(gw, "--user", user)
    assert row["end_reason"] == "exit"
    kinds = [e["kind"] for e in cluster_audit(gw)]
    assert "gateway.drain" in kinds and "gateway.drained" in kinds


def test_file_sessions_get_the_deadline(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    """An SFTP session has no stderr to be told on: it just ends at the deadline (shutdown)."""
    gw = gateway_factory({"SSHGW_DRAIN_TIMEOUT": "3"})
    user, container = _setup(gw, make_container, busybox_image)
    gw.grant(container, user=user, rights="sftp-read")
    sftp = subprocess.Popen(  # the subsystem, its client silent: the session stays open
        gw.ssh_cmd(f"{user}+{container}", "sftp", extra_opts=["-s"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_running(gw)
    assert gw.proc is not None
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=30) == 0
    assert 2.5 < time.monotonic() - t0 < 20  # the deadline, not at once and not much later
    _, err = sftp.communicate(timeout=30)
    assert NOTICE not in err, err
    [row] = sessions(gw, "--user", user)
    assert (row["kind"], row["end_reason"]) == ("sftp", "shutdown")
    assert "drain deadline after" in gw.log()


def test_a_second_signal_ends_the_drain_and_sigint_does_not_drain(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    # SIGTERM twice (SIGINT during the drain takes the same path: the signal ends the wait).
    gw, user, client = _draining_session(
        gateway_factory, make_container, busybox_image, "300", "sleep 600"
    )
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "draining: 1 session" in gw.log(), timeout=10)
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=20) == 0
    _, err = client.communicate(timeout=30)
    assert NOTICE + b"300 s" in err and ENDED in err, err
    [row] = sessions(gw, "--user", user)
    assert row["end_reason"] == "shutdown"
    assert "drain interrupted" in gw.log()
    # SIGINT first: no drain at all.
    gw, user, client = _draining_session(
        gateway_factory, make_container, busybox_image, "300", "sleep 600"
    )
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGINT)
    assert gw.proc.wait(timeout=20) == 0
    _, err = client.communicate(timeout=30)
    assert ENDED in err and NOTICE not in err, err
    assert "draining" not in gw.log()


# Two replicas behind HAProxy -------------------------------------------------------------------


@pytest.fixture
def drain_cluster(tmp_path: Path, pg_url: str, docker_host: str) -> Iterator[Cluster]:
    settings = {"SSHGW_DRAIN_TIMEOUT": "3"}
    with running_cluster(tmp_path, pg_url, settings, redispatch=True) as c:
        yield c


@pytest.mark.postgres
def test_a_replica_drains_behind_the_balancer(
    drain_cluster: Cluster, make_container: MakeContainer, busybox_image: str
) -> None:
    cluster = drain_cluster
    container = make_container(busybox_image)
    user = unique("drc")
    key = cluster.admin.add_user(user)
    assert key is not None
    cluster.admin.grant(container, user=user, rights="shell,exec")
    login = Login(user, container, key)
    client, which, _ = open_session(cluster, login, "sleep 600")
    drained, other = cluster.replicas[which], cluster.replicas[1 - which]
    assert wait_until(lambda: len(sessions(cluster.admin, "--active", "--user", user)) == 1, 30)
    [row] = sessions(cluster.admin, "--active", "--user", user)
    assert row["replica"] and f"replica {row['replica']}" in drained.log()

    assert drained.proc is not None
    t0 = time.monotonic()
    drained.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: readyz(drained)[0] == 503, timeout=5)
    assert readyz(other)[0] == 200
    # New sessions through the balancer go to the other replica (twice: both turns of the
    # round robin) and succeed.
    for i in range(2):
        res = ssh(cluster, login.name, login.key, "echo", f"new{i}")
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"new{i}\n".encode()
    # The drained session ends by the deadline (3 s), told first.
    _, err = client.communicate(timeout=60)
    assert time.monotonic() - t0 < 20
    assert client.returncode == 255
    assert NOTICE in err and ENDED in err, err
    assert drained.proc.wait(timeout=20) == 0
    rows = sessions(other, "--user", user)
    assert len(rows) == 3
    ended = next(r for r in rows if r["id"] == row["id"])
    assert ended["end_reason"] == "shutdown"
    assert all(r["replica"] != row["replica"] for r in rows if r["id"] != row["id"])
    drains = [e for e in cluster_audit(other) if e["kind"] == "gateway.drained"]
    assert drains and drains[-1]["detail"]["outcome"] == "deadline", drains
    # Its heartbeat row is gone (a clean stop): nothing for the other replica to mark lost.
    assert "marked ended" not in other.log()
