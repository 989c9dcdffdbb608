"""Attacks on what administrators see: text a user or a container controls, shown by `sshgw`.

A user chooses the commands they run, the paths they touch and the comments of their keys; a
container's owner chooses its labels. Each of these once reached the admin's terminal as rich
markup (``[/]`` made every later `sshgw audit` fail, ``[conceal]`` hid text) or as raw terminal
escape sequences (a title change, a colour, a cursor move). Every view must show them literally,
with control characters escaped, and ``--json`` must keep the exact value.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import asyncssh
import pytest

from tests.e2e.helpers import Gateway, unique, wait_until
from tests.support.containers import docker_run_argv, owned_labels

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]

OSC_TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CSI_RED = "\x1b[31m"
C1_CSI = "\x9b2J"  # 8-bit CSI: clears the screen on terminals that honour C1 controls
BIDI = "\u202eevil"  # right-to-left override: reorders what follows

MARKUP_CLOSE = "echo [/]"
PRINTF_TITLE = "echo \"$(printf '\\033]0;pwned\\007')\""
CONCEAL = "echo [conceal]x"
RAW_ESC = f"echo '{OSC_TITLE}{CSI_RED}red'"
C1_AND_BIDI = f"echo '{C1_CSI}{BIDI}'"
COMMANDS = (MARKUP_CLOSE, PRINTF_TITLE, CONCEAL, RAW_ESC, C1_AND_BIDI)

# What may never reach the admin's terminal: ESC, BEL, C1 controls, bidi overrides.
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\u202e")


def no_controls(text: str) -> None:
    for ch in FORBIDDEN:
        assert ch not in text, f"{ch!r} reached the terminal: {text!r}"


def cli_ok(gateway: Gateway, *args: str) -> str:
    res = gateway.cli(*args, check=False)
    assert res.returncode == 0, f"sshgw {' '.join(args)}: {res.returncode}\n{res.stderr}"
    assert "MarkupError" not in res.stderr and "internal error" not in res.stderr, res.stderr
    no_controls(res.stdout)
    no_controls(res.stderr)
    return res.stdout


def audit_json(gateway: Gateway, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(gateway.cli("audit", "--json", *args).stdout))


@pytest.fixture(scope="module")
def hostile_sessions(
    gateway: Gateway, busybox_image: str, docker_host: str
) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """A user who ran every hostile command in a container; (user, container, audit events)."""
    # Module scope (make_container is per test): the sessions are run once for all views.
    name = f"sshgw-t-av-{unique('c')}"
    subprocess.run(
        docker_run_argv(busybox_image, name, owned_labels()),
        check=True,
        capture_output=True,
        timeout=120,
    )
    user = unique("av")
    gateway.add_user(user)
    gateway.grant(name, user=user, rights="exec,sftp-read,sftp-write", logins="app")
    for command in COMMANDS:
        res = gateway.ssh(f"{user}+{name}", command)
        assert res.returncode == 0, res.stderr

    def ended() -> bool:
        kinds = [e["kind"] for e in audit_json(gateway, "--user", user)]
        return kinds.count("session.end") == len(COMMANDS)

    assert wait_until(ended, timeout=60, interval=0.5), audit_json(gateway, "--user", user)
    yield user, name, audit_json(gateway, "--user", user)
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)


def test_audit_shows_hostile_commands_literally(
    gateway: Gateway, hostile_sessions: tuple[str, str, list[dict[str, Any]]]
) -> None:
    user, _, events = hostile_sessions
    out = cli_ok(gateway, "audit", "--user", user)
    assert "command=echo [/]" in out
    assert "command=echo [conceal]x" in out  # shown, not hidden
    assert "printf '\\033]0;pwned\\007'" in out
    assert "echo '\\x1b]0;pwned\\x07\\x1b[31mred'" in out
    assert "echo '\\x9b2J\\u202eevil'" in out
    # The whole trail, not only this user's rows, still renders.
    cli_ok(gateway, "audit")
    # JSON keeps the exact value.
    commands = [e["detail"]["command"] for e in events if e["kind"] == "session.start"]
    assert commands == list(COMMANDS)


def test_sessions_views_show_hostile_commands_literally(
    gateway: Gateway, hostile_sessions: tuple[str, str, list[dict[str, Any]]]
) -> None:
    user, _, events = hostile_sessions
    cli_ok(gateway, "sessions")
    cli_ok(gateway, "sessions", "--user", user)
    by_command = {
        e["detail"]["command"]: e["session_id"] for e in events if e["kind"] == "session.start"
    }
    out = cli_ok(gateway, "sessions", "show", by_command[RAW_ESC])
    assert "echo '\\x1b]0;pwned\\x07\\x1b[31mred'" in out
    out = cli_ok(gateway, "sessions", "show", by_command[MARKUP_CLOSE])
    assert "echo [/]" in out
    out = cli_ok(gateway, "sessions", "show", by_command[CONCEAL])
    assert "[conceal]x" in out
    doc = json.loads(gateway.cli("sessions", "show", "--json", by_command[C1_AND_BIDI]).stdout)
    assert doc["command"] == C1_AND_BIDI


async def test_file_paths_in_the_audit_trail_are_escaped(
    gateway: Gateway, hostile_sessions: tuple[str, str, list[dict[str, Any]]]
) -> None:
    user, container, _ = hostile_sessions
    hostile = f"/tmp/[b]x{OSC_TITLE}[conceal]x"  # no "[/b]": a slash is a directory
    async with (
        asyncssh.connect(
            "127.0.0.1",
            gateway.port,
            username=f"{user}+{container}",
            client_keys=[str(gateway.keys[user])],
            known_hosts=None,
            agent_path=None,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        await sftp.mkdir(hostile)

    def logged() -> bool:
        return any(
            e["detail"].get("path") == hostile
            for e in audit_json(gateway, "--user", user, "--kind", "file")
        )

    assert wait_until(logged, timeout=60, interval=0.5), audit_json(gateway, "--user", user)
    out = cli_ok(gateway, "audit", "--user", user, "--kind", "file")
    assert "path=/tmp/[b]x\\x1b]0;pwned\\x07[conceal]x" in out


def test_key_comments_and_display_names_are_shown_literally(gateway: Gateway) -> None:
    user = unique("kc")
    gateway.cli("user", "add", user, "--display", "[bold]boss[/] [/]")
    key = gateway.new_key(f"{user}-k")
    gateway.cli("key", "add", user, f"{key}.pub", "--comment", "[conceal]hidden [/]")
    out = cli_ok(gateway, "key", "list", user)
    assert "[conceal]hidden [/]" in out
    out = cli_ok(gateway, "user", "list")
    assert "[bold]boss[/] [/]" in out
    out = cli_ok(gateway, "user", "show", user)
    assert "[conceal]hidden [/]" in out and "[bold]boss[/] [/]" in out


def test_container_labels_are_shown_literally(
    gateway: Gateway, make_container: MakeContainer, busybox_image: str
) -> None:
    value = f"[/]{OSC_TITLE}{CSI_RED}[conceal]x{C1_CSI}{BIDI}"
    c = make_container(busybox_image, labels={"sshgw.test.hostile": value})
    out = cli_ok(gateway, "containers")
    line = next(ln for ln in out.splitlines() if c in ln)
    assert "sshgw.test.hostile=[/]\\x1b]0;pwned\\x07\\x1b[31m[conceal]x\\x9b2J\\u202eevil" in line
    found = json.loads(gateway.cli("containers", "--json").stdout)
    (mine,) = [x for x in found if x["name"] == c]
    assert mine["labels"]["sshgw.test.hostile"] == value
    # JSON escapes what would act on a terminal, and still decodes to the exact value.
    no_controls(gateway.cli("containers", "--json").stdout)


def test_gateway_log_lines_carry_no_raw_controls(
    gateway: Gateway, hostile_sessions: tuple[str, str, list[dict[str, Any]]]
) -> None:
    log = gateway.log()
    assert log, "the gateway wrote no log"
    no_controls(log)
