"""What happens when one side goes away: the container dies, or the client is killed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    MOTD,
    Gateway,
    GatewayFactory,
    PtyProcess,
    container_pids,
    docker,
    has_process,
    kill_client_and_check_no_orphan,
    no_traceback,
    one_line_error,
    unique,
    wait_until,
)

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def setup_user(gateway: Gateway, container: str) -> str:
    user = unique("lc")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="shell,exec", logins="app")
    return user


@pytest.mark.parametrize("tty", [False, True], ids=["exec", "pty"])
def test_container_killed_mid_session(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tty: bool
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    opts = ["-tt"] if tty else []
    proc = subprocess.Popen(
        gateway.ssh_cmd(f"{user}+{c}", "echo started; sleep 4100", extra_opts=opts),
        stdin=subprocess.PIPE,  # stays open: the session must end because the container died
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: has_process(c, r"sleep 4100\b"), 30), "sleep never started"
        docker("kill", c)
        # "quickly": the session must end on its own well before the sleep would
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode not in (0, None)
    assert b"started" in out
    if tty:
        # with a PTY, stderr is merged into the terminal output; the message comes last
        text = (out + err).replace(b"\r", b"")
        assert b"Traceback" not in text
        last = [ln for ln in text.split(b"\n") if ln.strip()][-1].decode("utf-8", "replace")
        assert "container" in last.lower(), text
    else:
        line = one_line_error(err)
        assert "container" in line.lower(), line


def _kill_client_and_check_no_orphan(
    gateway: Gateway, c: str, user: str, opts: list[str], pattern: str
) -> None:
    argv = gateway.ssh_cmd(f"{user}+{c}", pattern.replace("\\b", ""), extra_opts=opts)
    kill_client_and_check_no_orphan(argv, c, pattern)


def test_no_orphan_after_client_killed_exec(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    _kill_client_and_check_no_orphan(gateway, c, user, [], r"sleep 4201\b")


def test_no_orphan_after_client_killed_pty_exec(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    _kill_client_and_check_no_orphan(gateway, c, user, ["-tt"], r"sleep 4202\b")


def _shell_killed_leaves_nothing(
    gateway: Gateway, c: str, user: str, sleep_arg: int, type_ahead: bool
) -> None:
    before = set(container_pids(c))
    with PtyProcess(gateway.ssh_cmd(f"{user}+{c}", extra_opts=["-tt"])) as p:
        if type_ahead:
            # typed before the shell is up, like a paste right after connecting
            p.send(b"echo READY$((1+1)); sleep %d\r" % sleep_arg)
            p.read_until(b"READY2")
        else:
            p.read_until(MOTD.encode())
            p.read_until(b"$ ")  # the shell's prompt: it is up and running
            p.send(b"echo READY$((1+1))\r")
            p.read_until(b"READY2")
            p.send(b"sleep %d\r" % sleep_arg)
        pattern = rf"sleep {sleep_arg}\b"
        assert wait_until(lambda: has_process(c, pattern), 30), "sleep never started"
        during = container_pids(c)
        session = {pid: args for pid, args in during.items() if pid not in before}
        os.kill(p.proc.pid, signal.SIGKILL)
        p.proc.wait(timeout=10)
    assert len(session) >= 2, session  # the shell and its sleep
    gone = wait_until(lambda: not set(session) & set(container_pids(c)), 20)
    left = {pid: args for pid, args in container_pids(c).items() if pid in session}
    assert gone, f"processes of the session left behind in the container: {left}"


def test_no_orphan_after_client_killed_in_shell(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """An interactive shell running a foreground command on a real terminal; the client dies."""
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    _shell_killed_leaves_nothing(gateway, c, user, 4203, type_ahead=False)


def test_no_orphan_after_client_killed_in_shell_with_type_ahead(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """The same when the command was typed before the shell came up.

    The terminal's echo of the typed text can then reach the gateway before anything the session
    prints itself; the session must still be ended when the client dies.
    """
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    _shell_killed_leaves_nothing(gateway, c, user, 4205, type_ahead=True)


def test_client_closing_connection_ends_command(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """A clean client exit (SIGTERM to ssh) ends the command as well."""
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    proc = subprocess.Popen(
        gateway.ssh_cmd(f"{user}+{c}", "sleep 4204"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: has_process(c, r"sleep 4204\b"), 30)
        proc.terminate()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_until(lambda: not has_process(c, r"sleep 4204\b"), 20), docker("top", c).stdout


def test_docker_unreachable_gives_one_clear_line(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory({"SSHGW_DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    user = unique("nd")
    gw.add_user(user)
    gw.grant("*", user=user, logins="app")
    res = gw.ssh(f"{user}+web1", "echo hi")
    assert res.returncode != 0
    assert res.stdout == b""
    one_line_error(res.stderr)
    # the container list says so too, without a traceback
    res = gw.ssh(user)
    no_traceback(res.stdout, res.stderr)
