"""Two replicas behind HAProxy on PostgreSQL (tests/e2e/cluster.py), with heartbeats every 0.5 s:
a replica killed with SIGKILL has its live sessions marked ended (gateway_lost) by the other,
``sessions kill`` reaches the replica that runs a session (and ends at once the session of a
replica that is gone), and the per-user password throttle holds across replicas.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.e2e.cluster import Cluster, Login, audit, metric, running_cluster, sessions, ssh_argv
from tests.e2e.helpers import Gateway, unique, wait_until
from tests.support.process import HOST

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

MakeContainer = Callable[..., str]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, docker_host: str) -> Iterator[Cluster]:
    settings = {"SSHGW_HEARTBEAT_INTERVAL": "0.5"}
    with running_cluster(tmp_path, pg_url, settings, redispatch=True) as c:
        yield c


@pytest.fixture
def login(cluster: Cluster, make_container: MakeContainer, busybox_image: str) -> Login:
    container = make_container(busybox_image)
    user = unique("rl")
    key = cluster.admin.add_user(user, password=PASSWORD)
    assert key is not None
    cluster.admin.grant(container, user=user, rights="shell,exec")
    return Login(user, container, key)


def _open(cluster: Cluster, login: Login) -> tuple[subprocess.Popen[bytes], Gateway, str]:
    """A ``sleep 600`` session through the balancer: the client, the replica that serves it,
    and the session's id."""
    before = [_opened(g) for g in cluster.replicas]
    known = {s["id"] for s in sessions(cluster.admin, "--user", login.user)}
    client = subprocess.Popen(
        ssh_argv(cluster, login.name, login.key, "sleep 600"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def new() -> list[str]:
        rows = sessions(cluster.admin, "--active", "--user", login.user)
        return [str(s["id"]) for s in rows if s["id"] not in known]

    assert wait_until(lambda: len(new()) == 1, timeout=30), "the session did not start"
    after = [_opened(g) for g in cluster.replicas]
    (which,) = [n for n in range(2) if after[n] > before[n]]
    return client, cluster.replicas[which], new()[0]


def _opened(gw: Gateway) -> float:
    """Connections the replica took (-1 when it is gone)."""
    if gw.proc is None or gw.proc.poll() is not None:
        return -1.0
    return metric(gw, "sshgw_connections_opened_total")


def _session(gw: Gateway, user: str, sid: str) -> dict[str, object]:
    return next(s for s in sessions(gw, "--user", user) if s["id"] == sid)


def test_kill_reaches_the_replica_that_runs_the_session(cluster: Cluster, login: Login) -> None:
    for _ in range(2):  # one session on each replica (round robin)
        client, serving, sid = _open(cluster, login)
        row = _session(serving, login.user, sid)
        assert row["replica"] and f"replica {row['replica']}" in serving.log()
        # The CLI works on the shared database only; the replica that runs it ends it.
        res = cluster.admin.cli("sessions", "kill", sid[:12])
        assert "ended: killed" in res.stdout, res.stdout + res.stderr
        _, err = client.communicate(timeout=30)
        assert b"session terminated by an administrator" in err, err
        assert f"session {sid}: ended on administrator request" in serving.log()
    served = {str(s["replica"]) for s in sessions(cluster.admin, "--user", login.user)}
    assert len(served) == 2  # both replicas took their turn


def test_the_sessions_of_a_killed_replica_are_marked_lost(cluster: Cluster, login: Login) -> None:
    client, dead, sid = _open(cluster, login)
    survivor = next(g for g in cluster.replicas if g is not dead)
    name = str(_session(survivor, login.user, sid)["replica"])
    assert dead.proc is not None
    t0 = time.monotonic()
    dead.proc.kill()  # SIGKILL: no drain, no goodbye
    dead.proc.wait(timeout=10)

    def lost() -> bool:
        return _session(survivor, login.user, sid)["end_reason"] == "gateway_lost"

    assert wait_until(lost, timeout=30, interval=0.3), _session(survivor, login.user, sid)
    # Bound: 3 heartbeats of 0.5 s, then the survivor's next tick (the CLI's start adds more).
    assert time.monotonic() - t0 < 20
    assert not sessions(survivor, "--active", "--user", login.user)
    ends = [e for e in audit(survivor, "--session", sid) if e["kind"] == "session.end"]
    assert [e["detail"]["reason"] for e in ends] == ["gateway_lost"]
    assert ends[0]["detail"]["replica"] == name
    assert f"replica {ends[0]['detail']['marked_by']}" in survivor.log()
    gone = [e["detail"]["replica"] for e in audit(survivor, "--kind", "replica.lost")]
    assert gone == [name]
    assert "marked ended (gateway_lost)" in survivor.log()
    client.kill()
    client.wait(timeout=10)

    # Now the survivor dies too, with a session: nothing is left to mark it, and a kill ends
    # the row at once instead of waiting for a gateway that will never answer.
    client2, last, sid2 = _open(cluster, login)
    assert last is survivor
    assert survivor.proc is not None
    survivor.proc.kill()
    survivor.proc.wait(timeout=10)
    time.sleep(2)  # longer than 3 heartbeats: the replica is gone
    t1 = time.monotonic()
    res = survivor.cli("sessions", "kill", sid2, "--wait", "30")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ended: gateway_lost" in res.stdout
    assert time.monotonic() - t1 < 15  # not the 30 s --wait
    assert _session(survivor, login.user, sid2)["end_reason"] == "gateway_lost"
    client2.kill()
    client2.wait(timeout=10)


async def _try_password(port: int, user: str, password: str) -> bool:
    try:
        async with asyncssh.connect(
            HOST,
            port,
            username=user,
            password=password,
            client_keys=None,
            known_hosts=None,
            agent_path=None,
            preferred_auth="password",
            login_timeout=60,
        ):
            return True
    except asyncssh.PermissionDenied:
        return False


def test_the_password_throttle_holds_across_replicas(cluster: Cluster, login: Login) -> None:
    """4 wrong passwords, alternating between the replicas: the 5th and 6th tries are held
    back (0.5 s, then 1 s) as on one replica, whichever replica they reach. With each replica
    counting alone, each would have seen only 2 failures (3 are free)."""

    def throttled() -> float:
        return sum(metric(g, "sshgw_auth_throttled_total") for g in cluster.replicas)

    def opened() -> list[float]:
        return [metric(g, "sshgw_connections_opened_total") for g in cluster.replicas]

    target = f"{login.user}+{login.container}"
    served = []
    for i in range(4):
        before = opened()
        assert not asyncio.run(_try_password(cluster.port, target, f"wrong{i}"))
        served.append([n for n, (a, b) in enumerate(zip(opened(), before, strict=True)) if a > b])
    assert sorted(n for s in served for n in s) == [0, 0, 1, 1], served  # alternated
    assert throttled() == 0
    assert not asyncio.run(_try_password(cluster.port, target, "wrong4"))
    assert throttled() == 1
    assert not asyncio.run(_try_password(cluster.port, target, "wrong5"))
    assert throttled() == 2
    # Every replica's throttle counted one of them (round robin).
    assert all(metric(g, "sshgw_auth_throttled_total") == 1 for g in cluster.replicas)
    # The right password still works (held back, not locked out).
    assert asyncio.run(_try_password(cluster.port, target, PASSWORD))
