"""Two replicas behind HAProxy on PostgreSQL (tests/e2e/cluster.py), with heartbeats every 0.5 s:
a replica killed with SIGKILL has its live sessions marked ended (gateway_lost) by the other,
``sessions kill`` reaches the replica that runs a session (and ends at once the session of a
replica that is gone), and the per-user password throttle holds across replicas.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator

import asyncssh
import pytest

from tests.e2e.cluster import (
    Cluster,
    Login,
    audit,
    fresh_database,
    metric,
    open_session,
    running_cluster,
    sessions,
)
from tests.e2e.helpers import Gateway, unique, wait_until
from tests.support.process import HOST

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

MakeContainer = Callable[..., str]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_base_url: str, docker_host: str
) -> Iterator[Cluster]:
    """One cluster for the module; the last test kills its replicas."""
    settings = {"SSHGW_HEARTBEAT_INTERVAL": "0.5"}
    with (
        fresh_database(pg_base_url) as db,
        running_cluster(tmp_path_factory.mktemp("rl"), db, settings, redispatch=True) as c,
    ):
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
    and the session's id prefix."""
    client, which, sid = open_session(cluster, login, "sleep 600")
    return client, cluster.replicas[which], sid


def _session(gw: Gateway, user: str, sid: str) -> dict[str, object]:
    """The session's row (by id prefix), once the audit writer has written it."""
    rows: list[dict[str, object]] = []

    def written() -> bool:
        rows[:] = [s for s in sessions(gw, "--user", user) if str(s["id"]).startswith(sid)]
        return bool(rows)

    assert wait_until(written, timeout=30), f"no row for session {sid}"
    return rows[0]


def test_kill_reaches_the_replica_that_runs_the_session(cluster: Cluster, login: Login) -> None:
    names = []
    for _ in range(2):  # one session on each replica (round robin)
        client, serving, sid = _open(cluster, login)
        row = _session(serving, login.user, sid)
        assert row["replica"] and f"replica {row['replica']}" in serving.log()
        names.append(row["replica"])
        # The CLI works on the shared database only; the replica that runs it ends it.
        res = cluster.admin.cli("sessions", "kill", sid)
        assert "ended: killed" in res.stdout, res.stdout + res.stderr
        _, err = client.communicate(timeout=30)
        assert b"session terminated by an administrator" in err, err
        assert re.search(rf"session {sid}[0-9a-f]*: ended on administrator request", serving.log())
    rows = sessions(cluster.admin, "--user", login.user)
    assert {str(s["replica"]) for s in rows} == set(names)  # both replicas took their turn
    listed = json.loads(cluster.admin.cli("replicas", "--json").stdout)
    assert sorted(r["name"] for r in listed) == sorted(names)
    assert {r["state"] for r in listed} == {"up"}
    assert all(s["end_reason"] == "killed" for s in rows)


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

    base = [metric(g, "sshgw_auth_throttled_total") for g in cluster.replicas]

    def each() -> list[float]:
        now = [metric(g, "sshgw_auth_throttled_total") for g in cluster.replicas]
        return [a - b for a, b in zip(now, base, strict=True)]

    def throttled() -> float:
        return sum(each())

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
    assert each() == [1, 1]
    # The right password still works (held back, not locked out).
    assert asyncio.run(_try_password(cluster.port, target, PASSWORD))


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

    full = str(_session(survivor, login.user, sid)["id"])

    assert wait_until(lost, timeout=30, interval=0.3), _session(survivor, login.user, sid)
    # Bound: 3 heartbeats of 0.5 s, then the survivor's next tick (the CLI's start adds more).
    assert time.monotonic() - t0 < 20
    assert all(s["id"] != full for s in sessions(survivor, "--active", "--user", login.user))
    ends = [e for e in audit(survivor, "--session", full) if e["kind"] == "session.end"]
    assert [e["detail"]["reason"] for e in ends] == ["gateway_lost"]
    assert ends[0]["detail"]["replica"] == name
    assert f"replica {ends[0]['detail']['marked_by']}" in survivor.log()
    gone = [e["detail"]["replica"] for e in audit(survivor, "--kind", "replica.lost")]
    assert gone == [name]
    listed = json.loads(survivor.cli("replicas", "--json").stdout)
    assert [r["name"] for r in listed] == [ends[0]["detail"]["marked_by"]]
    assert "marked ended (gateway_lost)" in survivor.log()
    client.kill()
    client.wait(timeout=10)

    # Now the survivor dies too, with a session: nothing is left to mark it, and a kill ends
    # the row at once instead of waiting for a gateway that will never answer.
    client2, last, sid2 = _open(cluster, login)
    assert last is survivor
    _session(survivor, login.user, sid2)  # its row is written (a SIGKILL loses what is not)
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
