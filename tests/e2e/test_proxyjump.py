"""ProxyJump (``ssh -J alice@gw root@web1``) with the real OpenSSH clients.

The outer connection authenticates ``alice`` with her key; the client then opens a
``direct-tcpip`` channel to ``CONTAINER:22`` and speaks SSH to the gateway again through it
(gateway.ssh.jump). Every client here reads an ssh_config like the README's: a ``gw`` host entry
for the gateway and ``-J gw`` (or ``ProxyJump gw``) for the container.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.e2e.helpers import Gateway, no_traceback, unique
from tests.support.process import HOST

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


class Jump:
    """One gateway user and an ssh_config that names the gateway ``gw``."""

    def __init__(self, gateway: Gateway, tmp: Path, user: str | None = None) -> None:
        self.gateway = gateway
        self.user = user or unique("pj")
        if user is None:
            gateway.add_user(self.user)
        key = gateway.keys[self.user]
        self.config = tmp / f"ssh_config-{self.user}"
        self.config.write_text(
            f"Host gw\n"
            f"    HostName {HOST}\n"
            f"    Port {gateway.port}\n"
            f"    User {self.user}\n"
            f"Host *\n"
            f"    IdentityFile {key}\n"
            "    IdentitiesOnly yes\n"
            "    IdentityAgent none\n"
            "    BatchMode yes\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    LogLevel ERROR\n"
            "    ConnectTimeout 30\n"
        )

    def opts(self) -> list[str]:
        return ["-F", str(self.config), "-J", "gw"]

    def ssh_cmd(self, dest: str, *args: str, extra: Sequence[str] = ()) -> list[str]:
        return ["ssh", *self.opts(), *extra, dest, *args]

    def ssh(
        self, dest: str, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return run(self.ssh_cmd(dest, *args), input=input, timeout=timeout)


def run(
    argv: Sequence[str], input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def jump(gateway: Gateway, tmp_path: Path) -> Jump:
    return Jump(gateway, tmp_path)


def test_exec_through_jump_keeps_streams_and_exit_status(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    gateway.grant(c, user=jump.user, rights="exec", logins="root,app")
    res = jump.ssh(f"app@{c}", "id -un; echo err >&2; exit 7")
    assert res.returncode == 7, res.stderr
    assert res.stdout == b"app\n"
    assert res.stderr == b"err\n"
    res = jump.ssh(f"root@{c}", "id -un")
    assert (res.returncode, res.stdout) == (0, b"root\n"), res.stderr
    # The gateway user's own name: the grant's default login (the first one), as alice+web1.
    res = jump.ssh(f"{jump.user}@{c}", "id -un")
    assert (res.returncode, res.stdout) == (0, b"root\n"), res.stderr
    # Binary stdin and stdout, both ways.
    data = bytes(range(256)) * 1000
    res = jump.ssh(f"root@{c}", "cat", input=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
    no_traceback(res.stderr)
