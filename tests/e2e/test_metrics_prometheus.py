"""Metrics of a running gateway: health endpoints, `promtool check metrics` on a live scrape, and a
real Prometheus on loopback that scrapes the gateway and sees a session counter move after real
ssh sessions."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Gateway, free_port, unique, wait_until
from tests.support.containers import docker_run_argv, owned_labels

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(gateway: Gateway) -> str:
    status, body = http_get(f"http://127.0.0.1:{gateway.metrics_port}/metrics")
    assert status == 200
    return body


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one series in an exposition (0 when absent)."""
    for line in body.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name and not labels:
            return float(value)
        if series.startswith(name + "{") and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.fixture(scope="module")
def box(gateway: Gateway, busybox_image: str) -> Iterator[tuple[str, str]]:
    """A container and a user allowed to run commands in it (module scope: reused)."""
    name = f"sshgw-t-{unique('m')}"
    subprocess.run(
        docker_run_argv(busybox_image, name, owned_labels(), cmd=["sleep", "1000000"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    user = unique("mx")
    gateway.add_user(user)
    gateway.grant(name, user=user, rights="shell,exec", logins="app")
    yield name, user
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)


def test_health_endpoints(gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{gateway.metrics_port}"
    assert http_get(base + "/healthz") == (200, "ok\n")
    assert http_get(base + "/readyz") == (200, "ready\n")
    status, _ = http_get(base + "/nope")
    assert status == 404


def test_sessions_move_the_counters(gateway: Gateway, box: tuple[str, str]) -> None:
    c, user = box
    before = scrape(gateway)
    res = gateway.ssh(f"{user}+{c}", "head -c 5000 /dev/zero; cat >/dev/null", input=b"x" * 3000)
    assert res.returncode == 0
    res = gateway.ssh(f"{user}+{c}", "exit 3")
    assert res.returncode == 3
    after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("sshgw_sessions_started_total", kind="exec", result="ok") == 2
    assert delta("sshgw_sessions_ended_total", kind="exec", result="exit") == 2
    assert delta("sshgw_connections_opened_total") == 2
    assert delta("sshgw_auth_attempts_total", method="publickey", result="success") == 2
    assert delta("sshgw_bytes_to_container_total", kind="exec") == 3000
    assert delta("sshgw_bytes_from_container_total", kind="exec") == 5000
    assert delta("sshgw_session_duration_seconds_count", kind="exec") == 2
    assert delta("sshgw_first_byte_seconds_count", kind="exec") == 1  # `exit 3` printed nothing
    assert delta("sshgw_docker_exec_start_seconds_count") >= 2
    assert sample(after, "sshgw_sessions_active", kind="exec") == 0
    assert sample(after, "sshgw_ready") == 1
    assert "sshgw_build_info{" in after and 'asyncssh="' in after and 'aiodocker="' in after


def test_denied_and_failed_logins_are_counted(gateway: Gateway, box: tuple[str, str]) -> None:
    c, user = box
    before = scrape(gateway)
    res = gateway.ssh(f"{user}+{c}", "true", key=gateway.stranger_key)
    assert res.returncode == 255
    other = unique("md")
    gateway.add_user(other)
    gateway.grant(c, user=other, rights="shell", logins="app")  # no exec right
    assert gateway.ssh(f"{other}+{c}", "true").returncode != 0
    after = scrape(gateway)
    assert sample(after, "sshgw_auth_attempts_total", method="publickey", result="failure") > (
        sample(before, "sshgw_auth_attempts_total", method="publickey", result="failure")
    )
    assert (
        sample(after, "sshgw_access_denied_total", reason="right_missing")
        - sample(before, "sshgw_access_denied_total", reason="right_missing")
    ) == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_live_scrape_passes_promtool(gateway: Gateway, box: tuple[str, str]) -> None:
    c, user = box
    assert gateway.ssh(f"{user}+{c}", "echo hi").returncode == 0
    body = scrape(gateway)
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=body.encode(), capture_output=True, check=False
    )
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


# A real Prometheus ------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, root: Path, target_port: int) -> None:
        self.port = free_port()
        self.root = root
        (root / "data").mkdir()
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: sshgw\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (root / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def query(self, expr: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        status, body = http_get(url)
        if status != 200:
            return []
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def value(self, expr: str) -> float | None:
        try:
            result = self.query(expr)
        except (OSError, ValueError):
            return None
        if not result:
            return None
        value = result[0]["value"]
        assert isinstance(value, list)
        return float(value[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()

    def logs(self) -> str:
        return (self.root / "prometheus.log").read_text(errors="replace")[-4000:]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_prometheus_scrapes_the_gateway(
    gateway: Gateway, box: tuple[str, str], tmp_path: Path
) -> None:
    c, user = box
    prom = Prometheus(tmp_path, gateway.metrics_port)
    try:
        assert wait_until(lambda: prom.value('up{job="sshgw"}') == 1.0, timeout=90, interval=0.5), (
            f"Prometheus never scraped the gateway:\n{prom.logs()}"
        )
        expr = 'sum(sshgw_sessions_started_total{job="sshgw",kind="exec",result="ok"})'
        before = prom.value(expr)
        assert before is not None, prom.logs()
        for i in range(3):
            assert gateway.ssh(f"{user}+{c}", f"echo {i}").returncode == 0
        assert wait_until(
            lambda: (prom.value(expr) or 0.0) >= before + 3, timeout=60, interval=0.5
        ), f"counter did not move in Prometheus: {before} -> {prom.value(expr)}"
        assert prom.value('sshgw_ready{job="sshgw"}') == 1.0
        builds = prom.query('sshgw_build_info{job="sshgw"}')
        assert builds and builds[0]["metric"]["version"]  # type: ignore[index]
    finally:
        prom.stop()
