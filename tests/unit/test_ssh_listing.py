"""The container list of ``ssh alice@gw`` (gateway.ssh.listing)."""

from __future__ import annotations

from gateway.engines import Container
from gateway.policy import Grant, Subject
from gateway.ssh.listing import render_listing, table

ALICE = Subject("alice", frozenset({"devs"}))


def c(name: str, state: str = "running", **labels: str) -> Container:
    return Container(name * 4, name, "busybox:1", state, labels)


def test_only_reachable_containers_with_rights_and_logins() -> None:
    grants = [
        Grant(1, "web*", frozenset({"shell", "exec"}), user="alice", logins=("app", "root")),
        Grant(2, "*", frozenset({"sftp-read"}), group="devs", labels=(("team", "a"),)),
    ]
    out = render_listing(
        ALICE, grants, [c("web1"), c("db1"), c("api", "exited", team="a")], pty=False
    )
    assert out.decode() == (
        "Containers available to alice (connect with ssh alice+CONTAINER@host):\n"
        "CONTAINER  IMAGE      STATE    RIGHTS      LOGINS\n"
        "web1       busybox:1  running  exec,shell  app,root\n"
        "api        busybox:1  exited   sftp-read   (image user)\n"
    )


def test_nothing_reachable_and_terminal_line_ends() -> None:
    assert (
        render_listing(ALICE, [], [c("web1")], pty=False)
        == b"No containers are available to you.\n"
    )
    assert render_listing(ALICE, [], [], pty=True) == b"No containers are available to you.\r\n"


def test_cells_are_shown_literally() -> None:
    text = table(("A", "B"), [("x\x1b[2J", "y\nz")])
    assert "\x1b" not in text and "\\x1b[2J" in text
    assert text.count("\n") == 2
