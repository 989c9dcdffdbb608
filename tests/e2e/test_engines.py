"""One gateway, three Docker engines: the main one and two extra ``dockerd`` (tests/support/engines).

Containers with unique and with duplicate names; ssh, SFTP, scp, rsync and ssh_config with
``CONTAINER.ENGINE``; grants naming engines; an engine killed mid-session and brought back;
engines added and removed while the gateway runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    Gateway,
    GatewayFactory,
    no_traceback,
    one_line_error,
    unique,
    wait_until,
)
from tests.e2e.test_metrics_prometheus import http_get
from tests.support.engines import EngineCli, ExtraEngine, start_engines
from tests.support.openssh import client_opts
from tests.support.process import HOST

pytestmark = pytest.mark.docker


class World:
    """The engines, the gateway serving them and the containers made on them."""

    def __init__(
        self, gw: Gateway, main: EngineCli, e2: ExtraEngine, e3: ExtraEngine, names: dict[str, str]
    ):
        self.gw = gw
        self.main = main
        self.e2 = e2
        self.e3 = e3
        self.n = names  # role -> container name
        self.ids: dict[str, str] = {}


@pytest.fixture(scope="module")
def world(gateway_factory: GatewayFactory, docker_host: str) -> Iterator[World]:
    main = EngineCli("main", docker_host)
    e2, e3 = start_engines(["e2", "e3"])
    try:
        tag = unique("x")
        n = {
            "dup": f"dup-{tag}",  # on main and e2
            "solo2": f"solo-{tag}",  # on e2 only
            "solo3": f"three-{tag}",  # on e3 only
            "dotted": f"web-{tag}.e3",  # on e2: its exact name wins over the split to e3
            "web": f"web-{tag}",  # on e3
            "main": f"main-{tag}",  # on main only
        }
        gw = gateway_factory({"SSHGW_ENGINE_POLL_INTERVAL": "0.5"})
        w = World(gw, main, e2, e3, n)
        w.ids["dup.main"] = main.run(n["dup"])
        w.ids["main"] = main.run(n["main"])
        w.ids["dup.e2"] = e2.run(n["dup"])
        w.ids["solo2"] = e2.run(n["solo2"])
        w.ids["dotted"] = e2.run(n["dotted"])
        w.ids["web"] = e3.run(n["web"])
        w.ids["solo3"] = e3.run(n["solo3"])
        for line in (
            ["main", docker_host],
            ["e2", e2.url],
            ["e3", e3.url],
        ):
            gw.cli("engine", "add", *line)
        yield w
    finally:
        main.remove_made()
        e2.stop()
        e3.stop()


def hostname(w: World, user: str, target: str) -> subprocess.CompletedProcess[bytes]:
    return w.gw.ssh(f"{user}+{target}", "hostname")


def short(cid: str) -> bytes:
    return cid[:12].encode()


def wait_for(pred: Callable[[], bool], timeout: float = 60) -> bool:
    return wait_until(pred, timeout, 0.3)


@pytest.fixture(scope="module")
def alice(world: World) -> str:
    user = unique("al")
    world.gw.add_user(user)
    world.gw.cli("grant", "add", "--user", user, "--target", "*", "--rights",
                 "shell,exec,sftp-read,sftp-write", "--logins", "root")  # fmt: skip
    return user


def test_engine_names_and_urls_are_checked(world: World) -> None:
    for args, part in [
        (["Bad_Name", "unix:///x"], "invalid engine name"),
        (["ok", "http://x"], "unix:///PATH or tcp://HOST:PORT"),
        (["ok", "tcp://10.0.0.1:2376"], "needs TLS"),
        (["ok", "unix://rel"], "absolute path"),
        (["e2", world.e2.url], "already exists"),
    ]:
        res = world.gw.cli("engine", "add", *args, check=False)
        assert res.returncode != 0
        line = one_line_error(res.stderr.encode())
        assert part in line, (args, res.stderr)
        no_traceback(res.stdout.encode(), res.stderr.encode())


def test_engine_list_and_check(world: World) -> None:
    got = json.loads(world.gw.cli("engine", "list", "--json").stdout)
    by = {e["name"]: e for e in got}
    assert set(by) == {"main", "e2", "e3"}
    assert all(e["state"] == "up" and e["version"] for e in got)
    assert by["e2"]["containers"] == 3 and by["e3"]["containers"] == 2
    res = world.gw.cli("engine", "check", "e3")
    assert res.stdout.startswith("e3: up (")


def test_unique_names_reach_their_engine(world: World, alice: str) -> None:
    for role in ("main", "solo2", "solo3"):
        res = hostname(world, alice, world.n[role])
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == short(world.ids[role])


def test_duplicate_name_fails_with_the_engines_and_qualified_works(
    world: World, alice: str
) -> None:
    res = hostname(world, alice, world.n["dup"])
    assert res.returncode != 0
    line = one_line_error(res.stderr)
    assert "more than one engine (e2, main)" in line and f"{world.n['dup']}.ENGINE" in line
    for eng in ("main", "e2"):
        res = hostname(world, alice, f"{world.n['dup']}.{eng}")
        assert res.stdout.strip() == short(world.ids[f"dup.{eng}"]), res.stderr
    res = world.gw.ssh(f"{alice}+{world.n['dup']}.e2+root", "id", "-u")
    assert res.stdout.strip() == b"0", res.stderr


def test_exact_name_with_a_dot_wins_over_the_split(world: World, alice: str) -> None:
    # web-X.e3 is a container on e2; web-X is on e3.
    assert hostname(world, alice, world.n["dotted"]).stdout.strip() == short(world.ids["dotted"])
    # Qualified, the dotted name still reaches e2's container.
    res = hostname(world, alice, f"{world.n['dotted']}.e2")
    assert res.stdout.strip() == short(world.ids["dotted"]), res.stderr


def test_id_prefixes_resolve_per_engine(world: World, alice: str) -> None:
    cid = world.ids["solo3"]
    assert hostname(world, alice, cid[:12]).stdout.strip() == short(cid)
    assert hostname(world, alice, f"{cid[:12]}.e3").stdout.strip() == short(cid)
    res = hostname(world, alice, f"{cid[:12]}.e2")
    assert res.returncode != 0 and "no such container" in one_line_error(res.stderr)


def test_ambiguity_is_named_only_where_a_grant_reaches(world: World) -> None:
    """Attack: a user without a grant on a duplicate name must not learn which engines have it."""
    gw = world.gw
    stranger, e2_only = unique("st"), unique("eo")
    gw.add_user(stranger)
    gw.add_user(e2_only)
    gw.cli("grant", "add", "--user", stranger, "--target", "nothing-*", "--rights", "exec")
    gw.cli("grant", "add", "--user", e2_only, "--target", "dup-*", "--rights", "exec",
           "--engine", "e2")  # fmt: skip
    line = one_line_error(hostname(world, stranger, world.n["dup"]).stderr)
    assert "no such container" in line and "engine" not in line, line
    line = one_line_error(hostname(world, e2_only, world.n["dup"]).stderr)
    assert "(e2)" in line and "main" not in line, line
    # The grant naming e2 reaches e2's container and not main's.
    res = hostname(world, e2_only, f"{world.n['dup']}.e2")
    assert res.stdout.strip() == short(world.ids["dup.e2"]), res.stderr
    res = hostname(world, e2_only, f"{world.n['dup']}.main")
    assert "no such container" in one_line_error(res.stderr)


def test_listing_qualifies_duplicates(world: World, alice: str) -> None:
    out = world.gw.ssh(alice).stdout.decode()
    assert f"{world.n['dup']}.main " in out and f"{world.n['dup']}.e2 " in out
    assert f"\n{world.n['solo3']} " in out


def test_sftp_scp_rsync_and_ssh_config(world: World, alice: str, tmp_path: Path) -> None:
    gw = world.gw
    src = tmp_path / "f.txt"
    src.write_bytes(b"engines\n" * 1000)
    opts = [*client_opts(gw.keys[alice]), "-P", str(gw.port)]
    dup_e2 = f"{alice}+{world.n['dup']}.e2+root@{HOST}"
    # scp up into e2's dup, sftp down from it.
    res = subprocess.run(["scp", *opts, str(src), f"{dup_e2}:/tmp/f.txt"],
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert world.e2.docker("exec", world.n["dup"], "wc", "-c", "/tmp/f.txt").stdout.split()[0] == (
        "8000"
    )
    res = subprocess.run(["sftp", *opts, "-b", "-", dup_e2], input=b"get /tmp/f.txt back.txt\n",
                         capture_output=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    # SFTP into e3 by its unique name.
    e3 = f"{alice}+{world.n['solo3']}+root@{HOST}"
    res = subprocess.run(["sftp", *opts, "-b", "-", e3], input=b"put f.txt /tmp/g.txt\n",
                         capture_output=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "8000" in world.e3.docker("exec", world.n["solo3"], "wc", "-c", "/tmp/g.txt").stdout
    # ssh_config: a host alias whose User is a qualified target with a dot.
    cfg = tmp_path / "config"
    cfg.write_text(
        f"Host e2dup\n  HostName {HOST}\n  Port {gw.port}\n  User {alice}+{world.n['dup']}.e2\n"
    )
    opts = client_opts(gw.keys[alice])
    at = opts.index("-F")
    opts[at : at + 2] = ["-F", str(cfg)]  # this config instead of none
    res = subprocess.run(["ssh", *opts, "e2dup", "hostname"],
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert res.stdout.strip() == short(world.ids["dup.e2"]), res.stderr


def test_rsync_to_a_qualified_name(
    world: World, alice: str, tmp_path: Path, rsync_image: str
) -> None:
    gw = world.gw
    name = unique("rs")
    world.main.run(name, image=rsync_image)  # rsync in it
    world.e2.run(name)  # the same name on e2, without rsync
    (tmp_path / "r.txt").write_text("rsync\n")
    ssh = " ".join(["ssh", *client_opts(gw.keys[alice]), "-p", str(gw.port)])
    res = subprocess.run(
        ["rsync", "-e", ssh, str(tmp_path / "r.txt"), f"{alice}+{name}.main+root@{HOST}:/tmp/"],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert world.main.docker("exec", name, "cat", "/tmp/r.txt").stdout == "rsync\n"
    # The name alone is ambiguous: one line, nothing copied anywhere.
    res = subprocess.run(
        ["rsync", "-e", ssh, str(tmp_path / "r.txt"), f"{alice}+{name}+root@{HOST}:/tmp/x"],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0 and b"more than one engine (e2, main)" in res.stderr
    no_traceback(res.stdout, res.stderr)


def test_containers_command_shows_every_engine(world: World) -> None:
    rows = json.loads(world.gw.cli("containers", "--json").stdout)
    engines = {r["name"]: set() for r in rows}
    for r in rows:
        engines[r["name"]].add(r["engine"])
    assert engines[world.n["dup"]] == {"main", "e2"}
    assert engines[world.n["solo3"]] == {"e3"}
    text = world.gw.cli("containers").stdout
    assert "ENGINE" in text.splitlines()[0]


def test_check_names_the_engine(world: World, alice: str) -> None:
    res = world.gw.cli("check", alice, f"{world.n['dup']}.e2", "--right", "exec")
    assert res.stdout.startswith("ALLOW\n") and "\nengine: e2\n" in res.stdout, res.stdout
    data = json.loads(world.gw.cli("check", alice, world.n["solo3"], "--json").stdout)
    assert data["engine"] == "e3" and data["allowed"]
    res = world.gw.cli("check", alice, world.n["dup"], "--right", "exec")
    assert "warning: container " in res.stdout and "more than one engine (e2, main)" in res.stdout


def test_an_engine_killed_mid_session(world: World, alice: str) -> None:
    gw = world.gw
    on_e3 = subprocess.Popen(
        gw.ssh_cmd(f"{alice}+{world.n['solo3']}", "echo started; sleep 300"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    on_e2 = subprocess.Popen(
        gw.ssh_cmd(f"{alice}+{world.n['solo2']}", "echo started; read x; echo got $x"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert on_e3.stdout is not None and on_e2.stdout is not None and on_e2.stdin is not None
        assert on_e3.stdout.readline() == b"started\n"
        assert on_e2.stdout.readline() == b"started\n"
        world.e3.kill()
        _, err = on_e3.communicate(timeout=60)
        assert on_e3.returncode != 0
        assert "engine e3 unavailable" in one_line_error(err), err
        # The session on e2 goes on.
        out, err = on_e2.communicate(b"more\n", timeout=60)
        assert on_e2.returncode == 0 and out == b"got more\n", err
        # New sessions to e3 fail clearly; the others work; /readyz is ready and says e3 is down.
        res = hostname(world, alice, world.n["solo3"])
        assert res.returncode != 0 and "engine e3 unavailable" in one_line_error(res.stderr)
        assert hostname(world, alice, world.n["main"]).returncode == 0
        status, body = http_get(f"http://{HOST}:{gw.metrics_port}/readyz")
        assert status == 200 and "engine e3: down" in body and "engine e2: up" in body, body
        metrics = http_get(f"http://{HOST}:{gw.metrics_port}/metrics")[1]
        assert 'sshgw_engine_up{engine="e3"} 0.0' in metrics
    finally:
        for p in (on_e3, on_e2):
            if p.poll() is None:
                p.kill()
                p.wait()
        world.e3.start()
    assert wait_for(lambda: hostname(world, alice, world.n["solo3"]).returncode == 0), hostname(
        world, alice, world.n["solo3"]
    ).stderr


def test_engines_added_and_removed_while_running(world: World, alice: str) -> None:
    gw = world.gw
    gw.cli("engine", "remove", "e3")
    assert wait_for(
        lambda: "no such container" in one_line_error(hostname(world, alice, world.n["web"]).stderr)
    )
    assert "engine e3" not in http_get(f"http://{HOST}:{gw.metrics_port}/readyz")[1]
    gw.cli("engine", "add", "e3", world.e3.url)
    assert wait_for(lambda: hostname(world, alice, world.n["web"]).returncode == 0)
    # Unknown engine in a qualified name: no such container.
    res = hostname(world, alice, f"{world.n['web']}.nope")
    assert "no such container" in one_line_error(res.stderr)
