"""deploy/compose: the file validates, and the whole stack runs for real.

``docker-compose up`` with an override file that only swaps the images for local ones (the
gateway image built from deploy/docker/Dockerfile, Debian's PostgreSQL and Prometheus with the
official images' interfaces; no registry answers here), then one ``ssh`` session through the
gateway and a query to Prometheus' HTTP API that sees it. ``down -v`` always runs at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    DEPLOY,
    OWNER,
    OWNER_LABEL,
    TEST_LABEL,
    banner,
    docker_socket,
    http_get,
    keygen,
    run,
    ssh,
)
from tests.e2e.helpers import docker, free_port, no_traceback, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

# Variables the compose file reads: the tests give them through --env-file only.
COMPOSE_VARS = {"POSTGRES_PASSWORD", "DOCKER_GID", "SSHGW_SSH_PORT", "PROMETHEUS_PORT"}


def _compose_bin() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose not found (apt-get install docker-compose)", pytrace=False)
    return path


def compose(
    *args: str,
    env_file: Path,
    files: tuple[Path, ...] = (COMPOSE_FILE,),
    project: str | None = None,
    check: bool = True,
    timeout: float = 300,
) -> tuple[int, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in COMPOSE_VARS and not k.startswith(("SSHGW_", "COMPOSE_"))
    }
    argv = [_compose_bin(), "--project-directory", str(COMPOSE_DIR), "--env-file", str(env_file)]
    for f in files:
        argv += ["-f", str(f)]
    if project is not None:
        argv += ["-p", project]
    res = run([*argv, *args], env=env, check=check, timeout=timeout, cwd=COMPOSE_DIR)
    return res.returncode, res.stdout + res.stderr


def test_config_is_valid(docker_host: str, tmp_path: Path) -> None:
    rc, out = compose("config", "--services", env_file=ENV_EXAMPLE)
    assert sorted(out.split()) == ["gateway", "migrate", "postgres", "prometheus"], out
    rc, out = compose("config", "--volumes", env_file=ENV_EXAMPLE)
    assert sorted(out.split()) == ["postgres-data", "prometheus-data", "sshgw-data"], out
    rc, out = compose("config", "-q", env_file=ENV_EXAMPLE)

    # Without a password (or the socket's group) it refuses to start, and says what to set.
    for missing in ("POSTGRES_PASSWORD", "DOCKER_GID"):
        env = tmp_path / f"no-{missing}.env"
        env.write_text(
            "".join(
                line + "\n"
                for line in ENV_EXAMPLE.read_text().splitlines()
                if not line.startswith(f"{missing}=")
            )
        )
        rc, out = compose("config", "-q", env_file=env, check=False)
        assert rc != 0 and f"set {missing} in .env" in out, out


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found (apt-get install prometheus)", pytrace=False)
    # Laid out as the compose file mounts them.
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    res = run([promtool, "check", "config", tmp_path / "prometheus.yml"], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # The alert rules were found where the compose file mounts them, all of them.
    rules = len(re.findall(r"^\s*- alert:", (tmp_path / "alerts.yml").read_text(), re.MULTILINE))
    assert rules > 0 and f"SUCCESS: {rules} rules found" in res.stdout, res.stdout


class Stack:
    def __init__(self, project: str, env_file: Path, override: Path) -> None:
        self.project = project
        self.env_file = env_file
        self.files = (COMPOSE_FILE, override)

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        return compose(
            *args,
            env_file=self.env_file,
            files=self.files,
            project=self.project,
            check=check,
            timeout=timeout,
        )[1]

    def container(self, service: str) -> str:
        ids = self("ps", "-q", service).split()
        assert len(ids) == 1, ids
        return ids[0]


@pytest.fixture
def stack(
    gateway_image: str,
    postgres_image: str,
    prometheus_image: str,
    docker_host: str,
    tmp_path: Path,
) -> Iterator[tuple[Stack, int, int]]:
    socket = docker_socket(docker_host)
    ssh_port, prometheus_port = free_port(), free_port()
    env_file = tmp_path / "compose.env"
    env_file.write_text(
        f"POSTGRES_PASSWORD={uuid.uuid4().hex}\n"
        f"DOCKER_GID={socket.stat().st_gid}\n"
        f"SSHGW_SSH_PORT=127.0.0.1:{ssh_port}\n"
        f"PROMETHEUS_PORT=127.0.0.1:{prometheus_port}\n"
    )
    # Only the images change (and the test labels, for scripts/cleanup.sh).
    owner = {TEST_LABEL: "1", OWNER_LABEL: OWNER}
    images = {
        "gateway": gateway_image,
        "migrate": gateway_image,
        "postgres": postgres_image,
        "prometheus": prometheus_image,
    }
    override = tmp_path / "compose.override.yaml"
    override.write_text(
        json.dumps({"services": {s: {"image": i, "labels": owner} for s, i in images.items()}})
    )
    s = Stack(f"sshgwt{uuid.uuid4().hex[:10]}", env_file, override)
    try:
        yield s, ssh_port, prometheus_port
    finally:
        s("down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=180)
        left = docker(
            "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={s.project}"
        )
        assert not left.stdout.strip(), f"volumes left behind: {left.stdout}"


def prometheus_query(port: int, query: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http_get(url)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    result = doc["data"]["result"]
    assert isinstance(result, list)
    return result


def test_stack_runs_a_session_that_prometheus_sees(
    stack: tuple[Stack, int, int],
    make_container: MakeContainer,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    s, ssh_port, prometheus_port = stack
    # Waits for PostgreSQL's health check and for `sshgw db upgrade` (the migrate service).
    s("up", "-d", "--no-build", timeout=300)
    assert wait_until(lambda: banner(ssh_port), 90), s("logs", "--no-color", check=False)
    migrate = s.container("migrate")
    assert docker("inspect", "-f", "{{.State.ExitCode}}", migrate).stdout.strip() == "0"
    logs = docker("logs", migrate)
    assert "upgraded to the newest schema" in logs.stdout + logs.stderr

    gateway = s.container("gateway")
    target = make_container(busybox_image)
    user = unique("cp")
    key = keygen(tmp_path / user)
    pub = (tmp_path / f"{user}.pub").read_text().strip()
    for args in (
        ["user", "add", user, "--key", pub],
        ["grant", "add", "--user", user, "--target", target, "--rights", "exec", "--logins", "app"],
    ):
        res = run(["docker", "exec", gateway, "sshgw", *args], timeout=120)
        no_traceback(res.stdout.encode(), res.stderr.encode())
    res = ssh(ssh_port, key, f"{user}+{target}", "echo", "through compose")
    no_traceback(res.stdout, res.stderr)
    assert (res.returncode, res.stdout) == (0, b"through compose\n"), res.stderr

    # The gateway keeps its users in PostgreSQL, not in a SQLite file of its own.
    res = run(["docker", "exec", gateway, "sshgw", "db", "status", "--json"], timeout=120)
    db = json.loads(res.stdout)
    assert db["schema"] == "current" and db["database"].startswith("postgresql"), db
    res = run(["docker", "exec", gateway, "sshgw", "user", "list"], timeout=120)
    assert user in res.stdout

    # Prometheus scrapes the gateway over the project network (every 15 s).
    query = 'sshgw_sessions_started_total{kind="exec",result="ok"}'
    seen: list[dict[str, object]] = []

    def counted() -> bool:
        nonlocal seen
        try:
            seen = prometheus_query(prometheus_port, query)
        except (OSError, AssertionError):
            return False
        return any(float(str(r["value"][1])) >= 1 for r in seen)  # type: ignore[index]

    assert wait_until(counted, 90, interval=2), (
        f"{query}: {seen}\n{s('logs', '--no-color', 'prometheus', check=False)[-3000:]}"
    )
    # It scrapes with the alert rules loaded.
    status, body = http_get(f"http://127.0.0.1:{prometheus_port}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"]}
    assert status == 200 and "SshgwDown" in alerts, alerts
    targets = prometheus_query(prometheus_port, 'up{job="sshgw"}')
    assert [t["value"][1] for t in targets] == ["1"], targets  # type: ignore[index]
