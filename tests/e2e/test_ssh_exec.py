"""Commands over the real OpenSSH client: streams, exit codes, stdin EOF, binary data, env, logins."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.helpers import Gateway, docker, no_traceback, one_line_error, unique

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def setup_user(
    gateway: Gateway,
    container: str,
    rights: str = "shell,exec",
    logins: str | None = "app",
) -> str:
    user = unique("ex")
    gateway.add_user(user)
    gateway.grant(container, user=user, rights=rights, logins=logins)
    return user


# --- streams and status -------------------------------------------------------------------------


def test_stdout_and_stderr_stay_separate(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    res = gateway.ssh(f"{user}+{c}", "echo out; echo err >&2")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"out\n"
    assert res.stderr == b"err\n"

    script = "i=0; while [ $i -lt 500 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done"
    res = gateway.ssh(f"{user}+{c}", script)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"".join(b"o%d\n" % i for i in range(500))
    assert res.stderr == b"".join(b"e%d\n" % i for i in range(500))


def test_exit_status_passes_through(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    for code in (0, 1, 3, 42, 254):
        res = gateway.ssh(f"{user}+{c}", f"echo before; exit {code}")
        assert res.returncode == code, (code, res.stderr)
        assert res.stdout == b"before\n"
        no_traceback(res.stderr)


def test_missing_command_gives_127(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    res = gateway.ssh(f"{user}+{c}", "no-such-command-xyz")
    assert res.returncode == 127
    assert b"no-such-command-xyz" in res.stderr
    assert res.stdout == b""


def test_command_words_are_joined_like_openssh(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """OpenSSH sends the words joined by spaces; the login's shell runs them with -c."""
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    res = gateway.ssh(f"{user}+{c}", "echo", "a", "'b  c'", "|", "tr", "a", "A")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"A b  c\n"


# --- stdin ------------------------------------------------------------------------------------


def test_stdin_eof_reaches_the_process(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    data = os.urandom(123_457)
    res = gateway.ssh(f"{user}+{c}", "wc -c", input=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [b"123457"]


def test_stdin_from_file(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str, tmp_path: os.PathLike[str]
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    path = os.path.join(tmp_path, "in.bin")
    with open(path, "wb") as f:
        f.write(b"line\n" * 2000)
    with open(path, "rb") as f:
        res = subprocess.run(
            gateway.ssh_cmd(f"{user}+{c}", "wc -c"), stdin=f, capture_output=True, timeout=60
        )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [b"10000"]


def test_empty_stdin_does_not_hang(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    # </dev/null
    res = gateway.ssh(f"{user}+{c}", "cat; echo done", timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"done\n"
    res = gateway.ssh(f"{user}+{c}", "wc -c", timeout=30)
    assert res.stdout.split() == [b"0"]
    # ssh -n, with stdin an open pipe that never ends: -n must still give the command EOF
    proc = subprocess.Popen(
        gateway.ssh_cmd(f"{user}+{c}", "cat; echo done-n", extra_opts=["-n"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == b"done-n\n"


def test_output_continues_after_stdin_eof(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    res = gateway.ssh(
        f"{user}+{c}", "cat >/dev/null; sleep 1; echo after-eof; echo e >&2", input=b"x" * 1000
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"after-eof\n"
    assert res.stderr == b"e\n"


# --- binary safety ----------------------------------------------------------------------------


def test_binary_round_trip_all_byte_values(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    data = bytes(range(256)) * 512 + os.urandom(300_000) + bytes(range(255, -1, -1))
    login = f"{user}+{c}"
    # both ways at once
    res = gateway.ssh(login, "cat", input=data)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == len(data)
    assert res.stdout == data
    # upload only
    res = gateway.ssh(login, "cat > /tmp/blob", input=data)
    assert res.returncode == 0, res.stderr
    stored = subprocess.run(
        ["docker", "exec", c, "cat", "/tmp/blob"], capture_output=True, timeout=60, check=True
    ).stdout
    assert stored == data
    # download only
    res = gateway.ssh(login, "cat /tmp/blob")
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
    # on stderr too
    res = gateway.ssh(login, "cat /tmp/blob >&2")
    assert res.returncode == 0
    assert res.stdout == b""
    assert res.stderr == data


# --- environment ------------------------------------------------------------------------------


def test_env_allowlist(gateway: Gateway, make_container: MakeContainer, busybox_image: str) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    res = gateway.ssh(
        f"{user}+{c}",
        'echo "LANG=$LANG LC_TIME=$LC_TIME SECRET=${SECRET-unset} LD=${LD_PRELOAD-unset}"',
        extra_opts=[
            "-o",
            "SetEnv=LANG=C.UTF-8 LC_TIME=C SECRET=x LD_PRELOAD=/tmp/evil.so",
        ],
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"LANG=C.UTF-8 LC_TIME=C SECRET=unset LD=unset\n"


# --- logins inside the container ------------------------------------------------------------------


def test_login_from_name_and_default_login(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c, logins="app,root")
    res = gateway.ssh(f"{user}+{c}", "id -un")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"app\n"  # the first login of the grant
    res = gateway.ssh(f"{user}+{c}+root", "id -un")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"root\n"
    res = gateway.ssh(f"{user}+{c}+app", "id -u; echo $HOME")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"1000\n/home/app\n"


def test_disallowed_login_is_denied(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c, logins="app")
    for login in ("root", "nobody", "0"):
        res = gateway.ssh(f"{user}+{c}+{login}", "id -un; touch /tmp/ran-as-" + login)
        assert res.returncode != 0
        assert res.stdout == b""
        one_line_error(res.stderr)
    listing = docker("exec", c, "ls", "/tmp").stdout
    assert "ran-as" not in listing


def test_star_logins_use_image_user(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    as_app = make_container(busybox_image, user="app")
    as_root = make_container(busybox_image)
    user = unique("st")
    gateway.add_user(user)
    gateway.grant(as_app, user=user, logins="*")
    gateway.grant(as_root, user=user, logins="*")
    assert gateway.ssh(f"{user}+{as_app}", "id -un").stdout == b"app\n"
    assert gateway.ssh(f"{user}+{as_root}", "id -un").stdout == b"root\n"
    # '*' allows any requested login
    assert gateway.ssh(f"{user}+{as_app}+root", "id -un").stdout == b"root\n"


def test_exec_right_required(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c, rights="shell")
    res = gateway.ssh(f"{user}+{c}", "touch /tmp/should-not-exist")
    assert res.returncode != 0
    one_line_error(res.stderr)
    assert docker("exec", c, "ls", "/tmp/should-not-exist", check=False).returncode != 0


def test_container_by_id_prefix(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    cid = docker("inspect", "-f", "{{.Id}}", c).stdout.strip()
    res = gateway.ssh(f"{user}+{cid[:12]}", "hostname")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == cid[:12].encode()


# --- errors: denied, unknown, stopped -----------------------------------------------------------

DENIED = "no such container, or access denied"


def test_denied_and_unknown_look_the_same(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    mine = make_container(busybox_image)
    other = make_container(busybox_image)
    user = setup_user(gateway, mine)
    missing = "sshgw-t-" + unique("missing")

    denied = gateway.ssh(f"{user}+{other}", "touch /tmp/pwned")
    unknown = gateway.ssh(f"{user}+{missing}", "touch /tmp/pwned")
    for res in (denied, unknown):
        assert res.returncode != 0
        assert res.stdout == b""
        line = one_line_error(res.stderr)
        assert DENIED in line
    assert denied.returncode == unknown.returncode
    assert denied.stderr.replace(other.encode(), b"NAME") == unknown.stderr.replace(
        missing.encode(), b"NAME"
    )
    assert docker("exec", other, "ls", "/tmp/pwned", check=False).returncode != 0
    # with a PTY as well
    denied_t = gateway.ssh(f"{user}+{other}", extra_opts=["-tt"])
    unknown_t = gateway.ssh(f"{user}+{missing}", extra_opts=["-tt"])
    assert denied_t.returncode != 0 and unknown_t.returncode != 0
    assert denied_t.returncode == unknown_t.returncode
    both = [r.stdout + r.stderr for r in (denied_t, unknown_t)]
    assert all(DENIED.encode() in out for out in both)
    assert both[0].replace(other.encode(), b"NAME") == both[1].replace(missing.encode(), b"NAME")


def test_user_without_any_grant_is_denied(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("ng")
    gateway.add_user(user)
    res = gateway.ssh(f"{user}+{c}", "true")
    assert res.returncode != 0
    assert DENIED in one_line_error(res.stderr)


def test_stopped_container_says_not_running(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    assert gateway.ssh(f"{user}+{c}", "true").returncode == 0
    docker("stop", c)
    res = gateway.ssh(f"{user}+{c}", "true")
    assert res.returncode != 0
    line = one_line_error(res.stderr)
    assert "not running" in line
    assert DENIED not in line


def test_stopped_container_without_grant_looks_unknown(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """A stopped container the user may not reach must not reveal that it exists."""
    mine = make_container(busybox_image)
    other = make_container(busybox_image)
    user = setup_user(gateway, mine)
    docker("stop", other)
    res = gateway.ssh(f"{user}+{other}", "true")
    assert res.returncode != 0
    line = one_line_error(res.stderr)
    assert DENIED in line
    assert "not running" not in line


# --- the container list -----------------------------------------------------------------------


def test_login_without_container_lists_reachable_containers(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    reachable = make_container(busybox_image)
    labelled = make_container(busybox_image, labels={"sshgw-e2e-team": "blue"})
    hidden = make_container(busybox_image)
    user = unique("ls")
    gateway.add_user(user)
    gateway.grant(reachable, user=user, rights="exec", logins="app,root")
    gateway.grant("*", user=user, rights="shell", logins="app", labels=["sshgw-e2e-team=blue"])
    res = gateway.ssh(user)
    assert res.returncode == 0, res.stderr
    no_traceback(res.stdout, res.stderr)
    out = res.stdout.decode()
    assert reachable in out
    assert labelled in out
    assert hidden not in out
    line = next(ln for ln in out.splitlines() if reachable in ln)
    assert "exec" in line and "app" in line and "root" in line
    assert "shell" not in line
    line = next(ln for ln in out.splitlines() if labelled in ln)
    assert "shell" in line


def test_listing_with_no_grants_is_empty_not_an_error(gateway: Gateway) -> None:
    user = unique("ls")
    gateway.add_user(user)
    res = gateway.ssh(user)
    assert res.returncode == 0, res.stderr
    no_traceback(res.stdout, res.stderr)


# --- multiplexing -----------------------------------------------------------------------------


def test_controlmaster_parallel_sessions(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = setup_user(gateway, c)
    login = f"{user}+{c}"
    cpdir = os.path.join("/tmp", f"cm-{unique()}")
    os.mkdir(cpdir, 0o700)
    control = os.path.join(cpdir, "m")
    mux = [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control}",
        "-o",
        "ControlPersist=30",
    ]
    try:
        # The first call becomes the master and stays in the background (ControlPersist).
        with open(os.path.join(cpdir, "master.log"), "wb") as log:
            first = subprocess.run(
                gateway.ssh_cmd(login, "echo first", extra_opts=mux),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=60,
            )
        assert first.returncode == 0
        check = subprocess.run(
            ["ssh", "-o", f"ControlPath={control}", "-O", "check", "x"],
            capture_output=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr

        def one(i: int) -> tuple[int, subprocess.CompletedProcess[bytes]]:
            payload = (b"payload-%d-" % i) * 5000 + bytes(range(256))
            res = gateway.ssh(
                login,
                f"cat; echo err-{i} >&2; exit {i % 7}",
                input=payload,
                # An unregistered key: a session that did not ride on the master fails auth.
                key=gateway.stranger_key,
                extra_opts=[*mux, "-o", "ControlMaster=no"],
                timeout=120,
            )
            return i, res

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(one, range(20)))
        for i, res in results:
            payload = (b"payload-%d-" % i) * 5000 + bytes(range(256))
            assert res.stdout == payload, f"session {i}: {len(res.stdout)} bytes"
            assert res.stderr == b"err-%d\n" % i
            assert res.returncode == i % 7
        # Everything went over the one master connection.
        check = subprocess.run(
            ["ssh", "-o", f"ControlPath={control}", "-O", "check", "x"],
            capture_output=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
    finally:
        subprocess.run(
            ["ssh", "-o", f"ControlPath={control}", "-O", "exit", "x"],
            capture_output=True,
            timeout=30,
        )
        for name in os.listdir(cpdir):
            os.unlink(os.path.join(cpdir, name))
        os.rmdir(cpdir)


def test_each_login_reaches_its_own_container(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    """Two containers, two grants with different logins: each session lands where it asked."""
    c1 = make_container(busybox_image)
    c2 = make_container(busybox_image)
    user = unique("mx")
    gateway.add_user(user)
    gateway.grant(c1, user=user, logins="app")
    gateway.grant(c2, user=user, logins="root")
    r1 = gateway.ssh(f"{user}+{c1}", "hostname; id -un")
    r2 = gateway.ssh(f"{user}+{c2}", "hostname; id -un")
    cid1 = docker("inspect", "-f", "{{.Config.Hostname}}", c1).stdout.strip()
    cid2 = docker("inspect", "-f", "{{.Config.Hostname}}", c2).stdout.strip()
    assert r1.stdout == f"{cid1}\napp\n".encode()
    assert r2.stdout == f"{cid2}\nroot\n".encode()


def test_image_without_shell_gives_one_clear_line(
    gateway: Gateway, make_container: MakeContainer, noshell_image: str
) -> None:
    c = make_container(noshell_image)
    user = setup_user(gateway, c, logins="*")
    res = gateway.ssh(f"{user}+{c}", "echo hi")
    assert res.returncode != 0
    assert res.stdout == b""
    one_line_error(res.stderr)
    res = gateway.ssh(f"{user}+{c}", extra_opts=["-tt"])
    assert res.returncode != 0
    no_traceback(res.stdout, res.stderr)
