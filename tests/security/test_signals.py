"""Signals and hang-up (hardening item 10): they act only on the session's own process group.

An earlier gateway took the first ``\\x1esshgw:PID\\x1e`` anywhere in the first output and ran
``kill -- -PID`` as root: a container whose shell prints a forged marker first made a client's
signal or hang-up kill every process in the container (``kill -- -1`` as root) or a root process
of the attacker's choice. Here ``/bin/sh`` of the container prints forged markers (the old format
and the new one with a guessed nonce) before it runs the real shell; the session's own process
must still be ended, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, docker, has_process, unique, wait_until

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]
GUESSED_NONCE = "0" * 32

# PID 1 exits on TERM/HUP/INT: signalling it stops the container.
TRAPPING_INIT = ["sh", "-c", 'trap "exit 7" TERM HUP INT; while :; do sleep 1; done']


@pytest.fixture(params=["busybox", "debian"])
def image(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_image"))


def poison_shell(container: str, pid: int) -> None:
    """Make the container's /bin/sh print forged PID markers before it runs the real shell."""
    real = docker("exec", container, "readlink", "-f", "/bin/sh").stdout.strip()
    interp = "/bin/busybox sh" if real.endswith("busybox") else real
    forged = f"printf '\\036sshgw:{pid}\\036\\036sshgw:{GUESSED_NONCE}:{pid}\\036'"  # old + guessed
    script = f'#!{interp}\n{forged} >&2\n{forged}\nexec {interp} "$@"\n'
    docker(
        "exec",
        container,
        "/bin/sh",
        "-c",
        'printf "%s" "$1" > /bin/sh.new && chmod 755 /bin/sh.new && mv -f /bin/sh.new /bin/sh',
        "sh",
        script,
    )


def start_root_process(container: str, tag: str) -> int:
    """A process of root's, not started by any session; returns its PID in the container."""
    docker("exec", "-d", container, "sh", "-c", f"echo $$ > /tmp/{tag}.pid; exec sleep {tag}")
    assert wait_until(lambda: has_process(container, f"sleep {tag}"), 10)
    out = docker("exec", container, "cat", f"/tmp/{tag}.pid").stdout
    return int(out.strip().splitlines()[-1])


def running(container: str) -> bool:
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)
    return bool(state["Running"])


def setup(gateway: Gateway, container: str) -> str:
    user = unique("sig")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights="shell,exec", logins="app")
    return user


async def end_session(gateway: Gateway, user: str, container: str, how: str, tag: str) -> None:
    """Run ``sleep TAG`` as app, then end it the way ``how`` says."""
    conn = await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=f"{user}+{container}",
        client_keys=[str(gateway.keys[user])],
        known_hosts=None,
        agent_path=None,
    )
    try:
        pty = how == "pty-hangup"
        proc = await conn.create_process(
            f"sleep {tag}", encoding=None, term_type="xterm" if pty else None
        )
        assert await asyncio.to_thread(
            wait_until, lambda: has_process(container, f"sleep {tag}"), 15
        ), "the session's command did not start"
        await asyncio.sleep(0.5)  # the marker has been read
        if how == "signal":
            proc.send_signal("TERM")
            with contextlib.suppress(TimeoutError):  # judged by the caller's checks
                await asyncio.wait_for(proc.wait(check=False), 15)
    finally:
        conn.close()
        await conn.wait_closed()


HOWS = ["signal", "hangup", "pty-hangup"]


@pytest.mark.parametrize("how", HOWS)
async def test_a_forged_pid_1_marker_does_not_signal_the_container(
    gateway: Gateway, make_container: MakeContainer, image: str, how: str
) -> None:
    c = make_container(image, cmd=TRAPPING_INIT)
    tag_by = "4016"  # root's bystander: `kill -- -1` as root would end it
    start_root_process(c, tag_by)
    poison_shell(c, 1)
    user = setup(gateway, c)
    await end_session(gateway, user, c, how, "4017")
    ended = await asyncio.to_thread(
        wait_until, lambda: not running(c) or not has_process(c, "sleep 4017"), 20
    )
    await asyncio.sleep(1.5)  # PID 1's trap runs after its current sleep 1
    assert running(c), "PID 1 of the container was signalled"
    assert ended, "the session's own process was not ended"
    assert has_process(c, f"sleep {tag_by}"), "a process outside the session was signalled"


@pytest.mark.parametrize("how", HOWS)
async def test_a_forged_marker_cannot_aim_the_signal_at_a_root_process(
    gateway: Gateway, make_container: MakeContainer, image: str, how: str
) -> None:
    c = make_container(image)
    victim = start_root_process(c, "4018")
    poison_shell(c, victim)
    user = setup(gateway, c)
    await end_session(gateway, user, c, how, "4019")
    ended = await asyncio.to_thread(wait_until, lambda: not has_process(c, "sleep 4019"), 20)
    assert has_process(c, "sleep 4018"), "root's process (the forged PID) was signalled"
    assert ended, "the session's own process was not ended"
    assert running(c)
