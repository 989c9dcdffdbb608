"""Authentication with the real OpenSSH client: agents with many keys, passwords, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import SSH_BASE_OPTS, Gateway, GatewayFactory, no_traceback, unique

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[str]:
    """A private ssh-agent; yields its socket path."""
    sock = Path("/tmp") / f"agent-{unique()}.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            if proc.poll() is not None:
                pytest.fail("ssh-agent exited")
            time.sleep(0.05)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        sock.unlink(missing_ok=True)


def ssh_add(sock: str, key: Path) -> None:
    subprocess.run(
        ["ssh-add", str(key)],
        env=dict(os.environ, SSH_AUTH_SOCK=sock),
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )


def test_agent_wrong_keys_then_right_key(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, agent: str
) -> None:
    c = make_container(busybox_image)
    user = unique("ag")
    right = gateway.add_user(user)
    assert right is not None
    gateway.grant(c, user=user, logins="app")
    # Someone else's registered key and two unregistered ones come first.
    other = unique("ag")
    other_key = gateway.add_user(other)
    assert other_key is not None
    for key in (other_key, gateway.new_key(unique("k")), gateway.new_key(unique("k")), right):
        ssh_add(agent, key)
    listed = subprocess.run(
        ["ssh-add", "-l"], env=dict(os.environ, SSH_AUTH_SOCK=agent), capture_output=True
    )
    assert len(listed.stdout.splitlines()) == 4
    argv = [
        "ssh",
        *SSH_BASE_OPTS,
        "-p",
        str(gateway.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-l",
        f"{user}+{c}",
        "127.0.0.1",
        "id -un; echo ok",
    ]
    res = subprocess.run(
        argv,
        env=dict(os.environ, SSH_AUTH_SOCK=agent),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"app\nok\n"


def test_key_of_another_user_is_refused(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    alice, mallory = unique("a"), unique("m")
    gateway.add_user(alice)
    mallory_key = gateway.add_user(mallory)
    gateway.grant(c, user=alice, logins="app")
    res = gateway.ssh(f"{alice}+{c}", "echo in", key=mallory_key)
    assert res.returncode == 255
    assert res.stdout == b""
    assert b"Permission denied" in res.stderr


def test_unknown_user_and_wrong_key_look_the_same(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    known = unique("k")
    gateway.add_user(known)
    gateway.grant(c, user=known, logins="app")
    nobody = unique("n")
    wrong = gateway.ssh(f"{known}+{c}", "true", key=gateway.stranger_key)
    unknown = gateway.ssh(f"{nobody}+{c}", "true", key=gateway.stranger_key)
    assert wrong.returncode == unknown.returncode == 255
    assert wrong.stderr.replace(known.encode(), b"U") == unknown.stderr.replace(
        nobody.encode(), b"U"
    )
    no_traceback(wrong.stderr, unknown.stderr)


def test_disabled_user_is_refused_and_enabled_again(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("d")
    gateway.add_user(user)
    gateway.grant(c, user=user, logins="app")
    assert gateway.ssh(f"{user}+{c}", "echo ok").stdout == b"ok\n"
    gateway.cli("user", "disable", user)
    res = gateway.ssh(f"{user}+{c}", "echo ok")
    assert res.returncode == 255
    assert res.stdout == b""
    assert b"Permission denied" in res.stderr
    res = gateway.ssh(user)
    assert res.returncode == 255
    gateway.cli("user", "enable", user)
    assert gateway.ssh(f"{user}+{c}", "echo ok").stdout == b"ok\n"


def test_expired_key_is_refused(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("e")
    gateway.add_user(user, key=False)
    gateway.grant(c, user=user, logins="app")
    # The CLI refuses dates in the past: give the key two seconds, then let them pass.
    expired = gateway.add_key(user, expires="+2s")
    time.sleep(3)
    res = gateway.ssh(f"{user}+{c}", "echo ok", key=expired)
    assert res.returncode == 255
    assert res.stdout == b""
    assert b"Permission denied" in res.stderr
    fresh = gateway.add_key(user, expires="+30d")
    res = gateway.ssh(f"{user}+{c}", "echo ok", key=fresh)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"ok\n"


def test_removed_key_is_refused(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("r")
    key = gateway.add_user(user)
    assert key is not None
    gateway.grant(c, user=user, logins="app")
    assert gateway.ssh(f"{user}+{c}", "echo ok").returncode == 0
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    gateway.cli("key", "remove", fp)
    res = gateway.ssh(f"{user}+{c}", "echo ok")
    assert res.returncode == 255
    assert res.stdout == b""


# --- passwords --------------------------------------------------------------------------------

needs_sshpass = pytest.mark.skipif(
    shutil.which("sshpass") is None, reason="sshpass not installed (apt-get install sshpass)"
)


def password_ssh(
    gateway: Gateway, login: str, password: str, *remote: str
) -> subprocess.CompletedProcess[bytes]:
    argv = [
        "sshpass",
        "-e",
        "ssh",
        *SSH_BASE_OPTS,
        "-p",
        str(gateway.port),
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "IdentityAgent=none",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-o",
        "NumberOfPasswordPrompts=1",
        "-l",
        login,
        "127.0.0.1",
        *remote,
    ]
    return subprocess.run(
        argv,
        env=dict(os.environ, SSHPASS=password),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


@needs_sshpass
def test_password_auth(gateway: Gateway, make_container: MakeContainer, busybox_image: str) -> None:
    c = make_container(busybox_image)
    user = unique("p")
    password = "correct horse battery staple ✓"
    gateway.add_user(user, key=False, password=password)
    gateway.grant(c, user=user, logins="app")
    res = password_ssh(gateway, f"{user}+{c}", password, "id -un")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"app\n"
    wrong = password_ssh(gateway, f"{user}+{c}", password + "x", "id -un")
    assert wrong.returncode != 0
    assert wrong.stdout == b""
    unknown = password_ssh(gateway, f"{unique('p')}+{c}", password, "id -un")
    assert unknown.returncode == wrong.returncode
    assert unknown.stdout == b""
    # a new password replaces the old one
    gateway.cli("user", "passwd", user, "--password-stdin", input="s3cond-pass\n")
    assert password_ssh(gateway, f"{user}+{c}", password, "true").returncode != 0
    assert password_ssh(gateway, f"{user}+{c}", "s3cond-pass", "id -un").stdout == b"app\n"


@needs_sshpass
def test_disabled_user_cannot_use_password(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("pd")
    gateway.add_user(user, key=False, password="pw-for-disabled")
    gateway.grant(c, user=user, logins="app")
    gateway.cli("user", "disable", user)
    res = password_ssh(gateway, f"{user}+{c}", "pw-for-disabled", "echo in")
    assert res.returncode != 0
    assert res.stdout == b""


@needs_sshpass
def test_password_auth_can_be_switched_off(
    gateway_factory: GatewayFactory, make_container: MakeContainer, busybox_image: str
) -> None:
    gw = gateway_factory({"SSHGW_PASSWORD_AUTH": "false"})
    c = make_container(busybox_image)
    user = unique("po")
    gw.add_user(user, password="pw-but-off")
    gw.grant(c, user=user, logins="app")
    res = password_ssh(gw, f"{user}+{c}", "pw-but-off", "echo in")
    assert res.returncode != 0
    assert res.stdout == b""
    # keys still work on that gateway
    assert gw.ssh(f"{user}+{c}", "echo in").stdout == b"in\n"
