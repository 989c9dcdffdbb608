"""Interactive sessions: ``ssh -tt`` on a real pseudo-terminal, MOTD, sizes, resize, login shells."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import pytest

from tests.e2e.helpers import MOTD, Gateway, PtyProcess, unique

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def setup_user(gateway: Gateway, container: str, logins: str = "app") -> str:
    user = unique("pt")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="shell,exec", logins=logins)
    return user


def spawn(gateway: Gateway, login: str, *remote: str, rows: int = 24, cols: int = 80) -> PtyProcess:
    env = dict(os.environ, TERM="xterm-256color")
    return PtyProcess(
        gateway.ssh_cmd(login, *remote, extra_opts=["-tt"]), rows=rows, cols=cols, env=env
    )


def marker(n: int) -> tuple[bytes, bytes]:
    """A command that prints ``MK<n>`` and the output to wait for (the echo of the typed
    command does not contain it)."""
    return f"echo MK$(({n}+0))\r".encode(), f"MK{n}".encode()


def size_shows(p: PtyProcess, rows: int, cols: int, timeout: float = 15) -> bool:
    """Ask ``stty size`` until it shows rows x cols (window-change is asynchronous)."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        cmd, want = marker(rows * 100_000 + cols * 100 + attempt)
        p.send(b"stty size; " + cmd)
        out = p.read_until(want)
        if re.search(rb"\n%d %d\r?\n" % (rows, cols), out):
            return True
        time.sleep(0.3)
    return False


def test_pty_shell_motd_commands_and_exit_status(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    with spawn(gateway, f"{user}+{c}") as p:
        p.read_until(MOTD.encode())
        cmd, want = marker(4242)
        p.send(cmd)
        p.read_until(want)
        p.send(b'echo "T=$TERM U=$(id -un) X$((6*7))"\r')
        out = p.read_until(b"X42")
        assert b"T=xterm-256color U=app X42" in out
        p.send(b"tty\r")
        assert re.search(rb"/dev/pts/\d+", p.read_until(re.compile(rb"/dev/pts/\d+")))
        p.send(b"exit 7\r")
        assert p.wait() == 7
        assert b"Traceback" not in p.buffer


def test_motd_not_shown_on_exec(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    res = gateway.ssh(f"{user}+{c}", "echo hi")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"hi\n"
    assert MOTD.encode() not in res.stderr


@pytest.mark.parametrize("type_ahead", [False, True], ids=["after-prompt", "type-ahead"])
def test_pty_initial_size_and_resize(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, type_ahead: bool
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    with spawn(gateway, f"{user}+{c}", rows=33, cols=111) as p:
        if not type_ahead:
            p.read_until(MOTD.encode())
            p.read_until(b"$ ")  # the shell's prompt
        # with type_ahead, typed before the shell is up: its echo may come first
        p.send(b"stty size\r")
        p.read_until(re.compile(rb"\r?\n33 111\r?\n"))
        for rows, cols in ((50, 140), (20, 60)):
            p.resize(rows, cols)
            assert size_shows(p, rows, cols), f"resize to {rows}x{cols} never reached the terminal"
        p.send(b"exit\r")
        assert p.wait() == 0


def test_pty_exec_gets_initial_size_and_status(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    with spawn(gateway, f"{user}+{c}", "stty size; tty; exit 5", rows=27, cols=91) as p:
        assert p.wait() == 5
        out = p.buffer
        assert re.search(rb"(^|\n)27 91\r?\n", out), out
        assert re.search(rb"/dev/pts/\d+", out), out


def test_ctrl_c_interrupts_foreground_command(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    with spawn(gateway, f"{user}+{c}") as p:
        p.read_until(MOTD.encode())
        p.send(b"sleep 300; echo SLEPT$((1+1))\r")
        p.drain(1.0)
        p.send(b"\x03")
        cmd, want = marker(777)
        p.send(cmd)
        out = p.read_until(want, timeout=20)
        assert b"SLEPT2" not in out
        p.send(b"exit\r")
        p.wait()


def test_login_shell_comes_from_passwd(
    gateway: Gateway, make_container: MakeContainer, debian_image: str, busybox_image: str
) -> None:
    deb = make_container(debian_image)
    bb = make_container(busybox_image)
    user = unique("sh")
    gateway.add_user(user)
    gateway.grant(deb, user=user, logins="app")
    gateway.grant(bb, user=user, logins="app")
    # exec runs <login shell> -c <command>
    res = gateway.ssh(f"{user}+{deb}", 'echo "B=${BASH_VERSION-none}"')
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(b"B=5."), res.stdout
    res = gateway.ssh(f"{user}+{bb}", 'echo "B=${BASH_VERSION-none}"')
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"B=none\n"
    # the interactive shell is bash too
    with spawn(gateway, f"{user}+{deb}") as p:
        p.read_until(MOTD.encode())
        p.send(b'echo "S=$0 B=${BASH_VERSINFO[0]}X"\r')
        out = p.read_until(re.compile(rb"B=\d+X"))
        assert re.search(rb"S=-?(/bin/|/usr/bin/)?bash B=5X", out), out
        p.send(b"exit\r")
        assert p.wait() == 0
