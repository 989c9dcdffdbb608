"""What users see: error lines name no Docker endpoint, database host or exception class.

Admins find those details in the gateway's log (and ``/readyz``); a user of the gateway learns
only that the engine is unavailable. An earlier gateway told every SSH user
"Docker engine unreachable at unix:///…/docker.sock: ClientConnectorError".
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import GatewayFactory, no_traceback, unique
from tests.e2e.test_sftp import client_opts

pytestmark = pytest.mark.docker

INTERNALS = re.compile(r"unix://|tcp://|\.sock\b|docker\.sock|[A-Z][A-Za-z]+(Error|Exception)\b")


def _lines(stderr: bytes) -> list[str]:
    return [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]


def test_engine_trouble_is_one_plain_line_for_users_and_detailed_for_admins(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sock = tmp_path / "no-docker.sock"
    gw = gateway_factory({"SSHGW_DOCKER_HOST": f"unix://{sock}"})
    user = unique("msg")
    gw.add_user(user)
    gw.grant("*", user=user, rights="shell,exec,sftp-read", logins="app")

    res = gw.ssh(f"{user}+web1", "echo hi")
    assert res.returncode != 0 and res.stdout == b""
    no_traceback(res.stdout, res.stderr)
    lines = _lines(res.stderr)
    assert lines == ["sshgw: the container engine is unavailable; try again later"], lines

    # the container listing (ssh alice@gw)
    res = gw.ssh(user)
    no_traceback(res.stdout, res.stderr)
    for line in _lines(res.stderr) + _lines(res.stdout):
        assert not INTERNALS.search(line), line

    # an sftp session
    res = subprocess.run(
        ["sftp", *client_opts(gw, user), "-P", str(gw.port), "-b", "-", f"{user}+web1@127.0.0.1"],
        input=b"ls /\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode != 0
    no_traceback(res.stdout, res.stderr)
    for line in _lines(res.stderr) + _lines(res.stdout):
        assert not INTERNALS.search(line), line
        assert str(sock) not in line, line

    # the administrator's log has the detail
    assert str(sock) in gw.log(), gw.log()[-2000:]
