"""deploy/systemd: the unit passes ``systemd-analyze verify`` and ``security``, its environment
example is valid configuration, and its ExecStartPre/ExecStart lines run the gateway.

systemd is not PID 1 on the machines these tests run on (CI containers), so the unit is never
started by systemd here. What can be checked without it is: the unit file (``verify``, with the
install path of the binary replaced by the sshgw under test, since ``verify`` checks that it
exists), its hardening as systemd scores it (``security --offline``), and its command lines run
by hand with its environment. The restrictions the gateway must survive (unprivileged user in
the socket's group, no capabilities, no-new-privileges, a read-only root but for its state
directory, a private /tmp) are those tests/deploy/test_image.py runs the image under.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sysconfig
from pathlib import Path

import pytest

from gateway.config import Settings, load_settings
from tests.deploy.helpers import DEPLOY, banner, run
from tests.e2e.helpers import free_port, no_traceback, wait_until

UNIT = DEPLOY / "systemd" / "sshgw.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "sshgw.env"
INSTALLED = "/opt/sshgw/bin/sshgw"  # where deploy/README.md installs it


def _tool() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found (apt-get install systemd)", pytrace=False)
    return path


def sshgw_bin() -> str:
    """The sshgw of the interpreter running the tests."""
    path = Path(sysconfig.get_path("scripts")) / "sshgw"
    assert path.is_file(), f"{path} missing: install sshgw in the test environment"
    return str(path)


def unit_lines() -> dict[str, list[str]]:
    """KEY -> values, in order, of the unit file (all sections)."""
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    return values


def exec_argv(key: str) -> list[str]:
    (line,) = unit_lines()[key]
    argv = shlex.split(line)
    assert argv[0] == INSTALLED, line
    return [sshgw_bin(), *argv[1:]]


def env_example() -> dict[str, str]:
    """The example environment file, read as systemd reads it (KEY=VALUE, # comments)."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
            env[key] = value
    return env


@pytest.fixture
def unit_under_test(tmp_path: Path) -> Path:
    """The unit with the install path of the binary replaced by the sshgw under test."""
    text = UNIT.read_text()
    assert INSTALLED in text
    path = tmp_path / "sshgw.service"
    path.write_text(text.replace(INSTALLED, sshgw_bin()))
    return path


def test_unit_verifies(unit_under_test: Path) -> None:
    res = run([_tool(), "verify", unit_under_test], check=False, timeout=60)
    # Unknown or misspelt settings are only warnings: any output is a failure here.
    assert (res.returncode, res.stdout + res.stderr) == (0, ""), res.stdout + res.stderr


def test_unit_is_hardened(unit_under_test: Path) -> None:
    # --threshold: systemd's exposure score (0-100 here, 0-10 on screen) must stay at 2.0 or below.
    res = run(
        [_tool(), "security", "--offline=true", "--threshold=20", "--no-pager", unit_under_test],
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    passed = {m.group(1) for m in re.finditer(r"^✓ (\w+)=", res.stdout, re.MULTILINE)}
    wanted = {
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "RestrictSUIDSGID",
        "CapabilityBoundingSet",
        "SystemCallFilter",
        "RestrictNamespaces",
    }
    assert wanted <= passed, f"not enforced: {sorted(wanted - passed)}\n{res.stdout}"
    unit = unit_lines()
    assert unit["User"] == ["sshgw"] and unit["SupplementaryGroups"] == ["docker"]
    assert unit["StateDirectory"] == ["sshgw"]
    assert unit["Environment"] == ["SSHGW_DATA_DIR=%S/sshgw"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_environment_example_is_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_example()
    fields = {f"SSHGW_{name.upper()}" for name in Settings.model_fields}
    # Settings ignore unknown variables: a misspelt one would be silently without effect.
    assert set(env) <= fields, sorted(set(env) - fields)
    for key in [k for k in os.environ if k.startswith("SSHGW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.listen_address == ("0.0.0.0", 2222)
    assert settings.metrics_address == ("127.0.0.1", 9122)


@pytest.mark.docker
def test_exec_lines_run_the_gateway(docker_host: str, tmp_path: Path) -> None:
    """ExecStartPre and ExecStart by hand, with the unit's environment (state directory in a
    temporary directory, SSH on a free port); SIGTERM, the unit's KillSignal, stops it within
    TimeoutStopSec."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env_example()}
    env["SSHGW_DATA_DIR"] = str(tmp_path / "state")
    port = free_port()
    env["SSHGW_LISTEN"] = f"127.0.0.1:{port}"
    env["SSHGW_METRICS_LISTEN"] = f"127.0.0.1:{free_port()}"

    pre = subprocess.run(
        exec_argv("ExecStartPre"), env=env, capture_output=True, timeout=120, check=False
    )
    no_traceback(pre.stdout, pre.stderr)
    assert pre.returncode == 0, pre.stdout + pre.stderr

    (kill_signal,) = unit_lines()["KillSignal"]
    (stop_timeout,) = unit_lines()["TimeoutStopSec"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        exec_argv("ExecStart"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        up = wait_until(lambda: banner(port) or proc.poll() is not None, 60)
        assert up and proc.poll() is None, (tmp_path / "serve.log").read_text()
        proc.send_signal(getattr(signal, kill_signal))
        assert proc.wait(timeout=float(stop_timeout)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "serve.log").read_bytes()
    no_traceback(text)
    # SSHGW_LOG_FORMAT=json from the example: one JSON object per line.
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines), text
