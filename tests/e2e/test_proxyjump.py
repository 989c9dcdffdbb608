"""ProxyJump (``ssh -J alice@gw root@web1``) with the real OpenSSH clients.

The outer connection authenticates ``alice`` with her key; the client then opens a
``direct-tcpip`` channel to ``CONTAINER:22`` and speaks SSH to the gateway again through it
(gateway.ssh.jump). Every client here reads an ssh_config like the README's: a ``gw`` host entry
for the gateway and ``-J gw`` (or ``ProxyJump gw``) for the container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    MOTD,
    Gateway,
    GatewayFactory,
    PtyProcess,
    has_process,
    no_traceback,
    one_line_error,
    unique,
    wait_until,
)
from tests.e2e.test_recording_asciicast import load_cast, recording_of
from tests.e2e.test_ssh_pty import size_shows
from tests.support.openssh import jump_config
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
        self.config = jump_config(tmp / f"ssh_config-{self.user}", gateway.port, self.user, key)

    def opts(self) -> list[str]:
        return ["-F", str(self.config), "-J", "gw"]

    def ssh_cmd(self, dest: str, *args: str, extra: Sequence[str] = ()) -> list[str]:
        return ["ssh", *self.opts(), *extra, dest, *args]

    def ssh(
        self, dest: str, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return run(self.ssh_cmd(dest, *args), input=input, timeout=timeout)


def run(
    argv: Sequence[str], input: bytes | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv),
        input=input,
        cwd=cwd,
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


def docker_exec(container: str, script: str) -> str:
    res = subprocess.run(
        ["docker", "exec", container, "sh", "-c", script],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode(errors="replace")


def test_pty_shell_resize_and_exit_status(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    gateway.grant(c, user=jump.user, rights="shell", logins="app")
    env = dict(os.environ, TERM="xterm-256color")
    argv = jump.ssh_cmd(f"app@{c}", extra=["-tt"])
    with PtyProcess(argv, rows=24, cols=80, env=env) as p:
        p.read_until(MOTD.encode())
        p.send(b'echo "T=$TERM U=$(id -un) X$((6*7))"\r')
        assert b"T=xterm-256color U=app X42" in p.read_until(b"X42")
        assert size_shows(p, 24, 80)
        p.resize(40, 132)
        assert size_shows(p, 40, 132), "window-change did not reach the container through the jump"
        p.send(b"exit 5\r")
        assert p.wait() == 5
        no_traceback(p.buffer)
    # Recorded like any PTY session, at the size it ended with.
    (sess,) = json.loads(gateway.cli("sessions", "--user", jump.user, "--json").stdout)
    cast = recording_of(sess)
    header, events = load_cast(cast)
    assert (header["width"], header["height"]) == (80, 24)
    assert any(e[1] == "r" and e[2] == "132x40" for e in events), events[:5]
    assert "X42" in "".join(e[2] for e in events if e[1] == "o")


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_both_modes(
    gateway: Gateway,
    jump: Jump,
    make_container: MakeContainer,
    debian_image: str,
    tmp_path: Path,
    legacy: bool,
) -> None:
    c = make_container(debian_image)
    gateway.grant(c, user=jump.user, rights="sftp-read,sftp-write", logins="app")
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3_000_001))
    mode = ["-O"] if legacy else []
    res = run(["scp", *jump.opts(), *mode, str(src), f"app@{c}:/tmp/up.bin"])
    assert res.returncode == 0, res.stderr
    digest = docker_exec(c, "sha256sum /tmp/up.bin").split()[0]
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    back = tmp_path / "back.bin"
    res = run(["scp", *jump.opts(), *mode, f"app@{c}:/tmp/up.bin", str(back)])
    assert res.returncode == 0, res.stderr
    assert back.read_bytes() == src.read_bytes()
    # A missing file: a failure with a status, as on a direct connection.
    res = run(["scp", *jump.opts(), *mode, f"app@{c}:/tmp/nope", str(tmp_path / "x")])
    assert res.returncode != 0
    no_traceback(res.stderr)


def test_sftp_with_path_rule(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, busybox_image: str, tmp_path: Path
) -> None:
    c = make_container(busybox_image)
    docker_exec(c, "mkdir -p /srv/up && chown app /srv/up")
    gateway.cli(
        "grant", "add", "--user", jump.user, "--target", c, "--rights", "sftp-read,sftp-write",
        "--logins", "app", "--path", "/srv/up",
    )  # fmt: skip
    (tmp_path / "f.txt").write_bytes(b"hello through the jump\n")
    batch = b"cd /srv/up\nput f.txt\nls -l\nget f.txt g.txt\n"
    res = run(["sftp", *jump.opts(), "-b", "-", f"app@{c}"], input=batch, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "g.txt").read_bytes() == b"hello through the jump\n"
    assert docker_exec(c, "cat /srv/up/f.txt") == "hello through the jump\n"
    # Outside the path rule: refused, as for app+c on the gateway itself.
    batch = b"put f.txt /tmp/f.txt\n"
    res = run(["sftp", *jump.opts(), "-b", "-", f"app@{c}"], input=batch, cwd=tmp_path)
    assert res.returncode != 0
    assert b"denied" in res.stderr.lower(), res.stderr


def test_rsync_over_ssh_through_jump(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, rsync_image: str, tmp_path: Path
) -> None:
    c = make_container(rsync_image)
    gateway.grant(c, user=jump.user, rights="exec", logins="app")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(50):
        (src / "d" / f"f{i}").write_bytes(os.urandom(1000 * i))
    (src / "big.bin").write_bytes(os.urandom(5_000_000))
    rsh = " ".join(["ssh", *jump.opts()])
    res = run(["rsync", "-a", "-e", rsh, f"{src}/", f"app@{c}:/tmp/dst/"], timeout=120)
    assert res.returncode == 0, res.stderr
    back = tmp_path / "back"
    res = run(["rsync", "-a", "-e", rsh, f"app@{c}:/tmp/dst/", f"{back}/"], timeout=120)
    assert res.returncode == 0, res.stderr
    for p in src.rglob("*"):
        q = back / p.relative_to(src)
        assert q.exists(), q
        if p.is_file():
            assert q.read_bytes() == p.read_bytes(), p
    # A second run sends nothing new (rsync's delta algorithm works through the jump).
    res = run(["rsync", "-a", "--stats", "-e", rsh, f"{src}/", f"app@{c}:/tmp/dst/"], timeout=120)
    assert res.returncode == 0, res.stderr
    assert b"Number of regular files transferred: 0" in res.stdout, res.stdout


def test_denied_container_refuses_the_channel(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, busybox_image: str
) -> None:
    granted = make_container(busybox_image)
    other = make_container(busybox_image)
    gateway.grant(granted, user=jump.user, rights="sftp-read", logins="app")
    # The reason of a refused channel is an INFO line of OpenSSH's (its default LogLevel).
    jump.config.write_text(jump.config.read_text().replace("LogLevel ERROR", "LogLevel INFO"))
    for name in (other, "no-such-container-xyz"):
        res = jump.ssh(f"app@{name}", "true")
        assert res.returncode == 255
        text = res.stderr.decode(errors="replace")
        assert f"no such container, or access denied: {name}" in text, text
        no_traceback(res.stderr)
    # A container the user may reach, but not with this right: the session says so.
    res = jump.ssh(f"app@{granted}", "true")
    assert res.returncode != 0
    assert b"you have no exec right" in res.stderr, res.stderr
    # A login the grant does not allow.
    res = run(["sftp", *jump.opts(), "-b", "-", f"root@{granted}"], input=b"ls\n")
    assert res.returncode != 0
    assert b"login 'root' is not allowed" in res.stderr, res.stderr
    # Not a login name: a banner line, and no authentication method for the inner connection.
    res = jump.ssh(f"x+y@{granted}", "true")
    assert res.returncode == 255
    assert b"sshgw: malformed login 'x+y'" in res.stderr, res.stderr
    assert b"Permission denied" in res.stderr, res.stderr
    # A granted container: the inner connection is authenticated by the outer one, with the
    # "none" method (no key, no password asked a second time).
    res = run(["ssh", "-v", *jump.opts(), f"app@{granted}", "true"])
    assert b"Authenticated to " in res.stderr and b'using "none"' in res.stderr, res.stderr


def active_sessions(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    res = gateway.cli("sessions", "--active", "--user", user, "--json")
    return list(json.loads(res.stdout))


def start_sleep(jump: Jump, dest: str, seconds: int = 100) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        jump.ssh_cmd(dest, f"sleep {seconds}"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("how", ["kill", "revoke"])
def test_kill_and_revocation_end_a_jump_session(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, busybox_image: str, how: str
) -> None:
    c = make_container(busybox_image)
    gateway.grant(c, user=jump.user, rights="exec", logins="app")
    proc = start_sleep(jump, f"app@{c}", 97)
    try:
        assert wait_until(lambda: len(active_sessions(gateway, jump.user)) == 1, timeout=60)
        (sess,) = active_sessions(gateway, jump.user)
        assert (sess["kind"], sess["container"], sess["login"]) == ("exec", c, "app")
        assert wait_until(lambda: has_process(c, r"sleep 97\b"), timeout=30)
        if how == "kill":
            gateway.cli("sessions", "kill", sess["id"][:10])
            want = "administrator"
        else:
            gateway.cli("user", "disable", jump.user)
            want = "revoked"
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert want in err.decode(errors="replace"), err
        no_traceback(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert wait_until(lambda: not has_process(c, r"sleep 97\b"), timeout=30), (
        "the ended command lives on in the container"
    )
    shown = json.loads(gateway.cli("sessions", "show", sess["id"], "--json").stdout)
    assert shown["end_reason"] == ("killed" if how == "kill" else "revoked")


def test_jump_channels_and_their_sessions_share_max_sessions(
    gateway_factory: GatewayFactory,
    make_container: MakeContainer,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """Over one outer connection (a ControlMaster), a jump channel takes one place under
    max_sessions and every session inside it one more: many jumps do not multiply it."""
    gw = gateway_factory({"SSHGW_MAX_SESSIONS": "3"})
    jump = Jump(gw, tmp_path)
    short = tempfile.mkdtemp(prefix="pj-")  # a socket path must stay under 108 bytes
    jump.config.write_text(
        jump.config.read_text()
        .replace("Host gw\n", f"Host gw\n    ControlPath {short}/cm-%C\n")
        .replace("LogLevel ERROR", "LogLevel INFO")
    )
    c = make_container(busybox_image)
    gw.grant(c, user=jump.user, rights="exec", logins="app")
    # The outer connection: a master that every `ssh -J gw` below goes through.
    master = subprocess.Popen(
        ["ssh", "-F", str(jump.config), "-M", "-N", "gw"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = [master]
    try:
        up = ["ssh", "-F", str(jump.config), "-O", "check", "gw"]
        assert wait_until(lambda: run(up).returncode == 0, timeout=30), "no master connection"
        procs.append(start_sleep(jump, f"app@{c}", 96))  # jump channel + its exec: 2 places
        assert wait_until(lambda: has_process(c, r"sleep 96\b"), timeout=60)
        # The third place: a second jump channel, but its session is refused.
        res = jump.ssh(f"app@{c}", "true")
        assert res.returncode == 255
        assert b"too many sessions on this connection (at most 3)" in res.stderr, res.stderr
        # With a second jump channel open (places 3), a third one is refused at open.
        procs.append(
            subprocess.Popen(
                ["ssh", *jump.opts(), "-N", f"app@{c}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(2)  # the second jump's inner connection is up
        res = jump.ssh(f"app@{c}", "true")
        assert res.returncode == 255
        # A multiplexed client only says that the master's channel was refused (the reason,
        # "too many sessions on this connection (at most 3)", is in the gateway's log).
        assert b"Stdio forwarding request failed: Session open refused by peer" in res.stderr
        assert "proxyjump refused: 3 open on this connection" in gw.log()
        # Places come back when jumps end.
        for p in procs[1:]:
            p.kill()
            p.wait(timeout=10)
        ok = wait_until(lambda: jump.ssh(f"app@{c}", "echo ok").stdout == b"ok\n", timeout=30)
        assert ok, "closed jump channels did not give their places back"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        shutil.rmtree(short, ignore_errors=True)


def test_readme_wildcard_entry_with_the_documented_known_hosts_lines(
    gateway: Gateway, make_container: MakeContainer, rsync_image: str, tmp_path: Path
) -> None:
    """The README's ProxyJump ssh_config: `ssh C`, `scp x C:` and `rsync -e ssh` for any
    container name, with host keys checked strictly against the documented known_hosts lines
    (the gateway's own keys, under the alias sshgw-containers)."""
    user = unique("pj")
    gateway.add_user(user)
    c = make_container(rsync_image)
    gateway.grant(c, user=user, rights="exec,sftp-read,sftp-write", logins="app")
    known = tmp_path / "known_hosts"
    # The lines the README says to add, as `sshgw hostkey show --known-hosts` prints them.
    gw_lines = gateway.cli("hostkey", "show", "--known-hosts", f"[{HOST}]:{gateway.port}").stdout
    alias_lines = gateway.cli("hostkey", "show", "--known-hosts", "sshgw-containers").stdout
    assert len(alias_lines.splitlines()) == 2, alias_lines  # ed25519 and ECDSA
    bad = gateway.cli("hostkey", "show", "--known-hosts", "a b", check=False)
    assert bad.returncode != 0 and "no spaces" in one_line_error(bad.stderr.encode())
    known.write_text(gw_lines + alias_lines)
    config = tmp_path / "ssh_config"
    short = tempfile.mkdtemp(prefix="pj-")  # a socket path must stay under 108 bytes
    config.write_text(
        f"Host gw\n"
        f"    HostName {HOST}\n"
        f"    Port {gateway.port}\n"
        f"    User {user}\n"
        "    ControlMaster auto\n"
        f"    ControlPath {short}/cm-%C\n"
        "    ControlPersist 60\n"
        "Host * !gw !*.* !localhost\n"
        "    ProxyJump gw\n"
        "    User app\n"
        "    HostKeyAlias sshgw-containers\n"
        "Host *\n"
        f"    IdentityFile {gateway.keys[user]}\n"
        "    IdentitiesOnly yes\n"
        "    IdentityAgent none\n"
        "    BatchMode yes\n"
        "    StrictHostKeyChecking yes\n"
        f"    UserKnownHostsFile {known}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    LogLevel ERROR\n"
    )
    f = ["-F", str(config)]
    try:
        readme_entry_works(f, c, tmp_path, config)
        # Another key under the alias: the client refuses the container's host key.
        alg, other = Path(f"{gateway.stranger_key}.pub").read_text().split()[:2]
        known.write_text(gw_lines + f"sshgw-containers {alg} {other}\n")
        res = run(["ssh", *f, c, "true"])
        assert res.returncode == 255
        assert b"HOST IDENTIFICATION HAS CHANGED" in res.stderr, res.stderr
    finally:
        run(["ssh", *f, "-O", "exit", "gw"])
        shutil.rmtree(short, ignore_errors=True)


def readme_entry_works(f: list[str], c: str, tmp_path: Path, config: Path) -> None:
    res = run(["ssh", *f, c, "id -un"])
    assert (res.returncode, res.stdout) == (0, b"app\n"), res.stderr
    (tmp_path / "x.txt").write_bytes(b"via scp\n")
    res = run(["scp", *f, str(tmp_path / "x.txt"), f"{c}:"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert docker_exec(c, "cat /home/app/x.txt") == "via scp\n"
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.bin").write_bytes(os.urandom(100_000))
    res = run(["rsync", "-a", "-e", f"ssh -F {config}", f"{tmp_path}/tree/", f"{c}:tree/"])
    assert res.returncode == 0, res.stderr
    got = docker_exec(c, "sha256sum /home/app/tree/a.bin").split()[0]
    assert got == hashlib.sha256((tmp_path / "tree" / "a.bin").read_bytes()).hexdigest()
    res = run(["sftp", *f, "-b", "-", c], input=b"ls tree\n")
    assert res.returncode == 0 and b"a.bin" in res.stdout, res.stderr


def test_audit_marks_what_came_through_the_jump(
    gateway: Gateway, jump: Jump, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    other = make_container(busybox_image)
    gateway.grant(c, user=jump.user, rights="exec", logins="app")
    assert jump.ssh(f"app@{c}", "exit 4").returncode == 4
    assert jump.ssh(f"app@{other}", "true").returncode == 255  # no grant: refused at open
    direct = gateway.ssh(f"{jump.user}+{c}", "true")  # the same user, not through a jump
    assert direct.returncode == 0, direct.stderr

    def audit() -> list[dict[str, Any]]:
        res = gateway.cli("audit", "--json", "--user", jump.user)
        return list(json.loads(res.stdout))

    def complete() -> bool:
        return [e["kind"] for e in audit()].count("session.end") == 2

    assert wait_until(complete, timeout=60, interval=0.5), audit()
    events = audit()
    jump_logins = [
        e for e in events if e["kind"] == "login" and e["detail"].get("method") == "proxyjump"
    ]
    assert len(jump_logins) == 1 and jump_logins[0]["detail"]["result"] == "success"
    starts = [e for e in events if e["kind"] == "session.start"]
    via = {e["detail"]["command"]: e["detail"].get("via") for e in starts}
    assert via == {"exit 4": "proxyjump", "true": None}, starts
    ends = [e for e in events if e["kind"] == "session.end" and e["detail"].get("via")]
    assert [e["detail"]["exit_status"] for e in ends] == [4]
    (denied,) = [e for e in events if e["kind"] == "denied"]
    assert denied["container"] == other
    assert denied["detail"]["right"] == "proxyjump"
    assert denied["detail"]["reason"] == "no_grant"


def test_shutdown_ends_a_jump_session_and_says_why(
    gateway_factory: GatewayFactory,
    make_container: MakeContainer,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    gw = gateway_factory()
    jump = Jump(gw, tmp_path)
    c = make_container(busybox_image)
    gw.grant(c, user=jump.user, rights="exec", logins="app")
    proc = start_sleep(jump, f"app@{c}", 95)
    try:
        assert wait_until(lambda: has_process(c, r"sleep 95\b"), timeout=60)
        assert gw.proc is not None
        t0 = time.monotonic()
        gw.proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert b"the gateway is shutting down" in err, err
        gw.stop()  # fails when SIGTERM alone did not stop it
        assert time.monotonic() - t0 < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert wait_until(lambda: not has_process(c, r"sleep 95\b"), timeout=30)
