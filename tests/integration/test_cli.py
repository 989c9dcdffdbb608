"""The ``sshgw`` command line, run as a real subprocess (``python -m gateway``)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.inputs import parse_when
from gateway.errors import InvalidInput


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Sshgw = Callable[..., Result]


def _env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSHGW_")}
    env["SSHGW_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def sshgw(data_dir: Path, tmp_path: Path) -> Sshgw:
    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        res = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=_env(data_dir, env),
            cwd=tmp_path,
            timeout=120,
        )
        return Result(res.returncode, res.stdout, res.stderr)

    return run


def ok(res: Result) -> Result:
    assert res.code == 0, f"exit {res.code}: {res.err or res.out}"
    assert "Traceback" not in res.err
    return res


def one_line_error(res: Result) -> str:
    assert res.code == 1, f"exit {res.code}: {res.out}{res.err}"
    assert "Traceback" not in res.err and "Traceback" not in res.out
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: "), res.err
    return lines[0]


def keygen(tmp_path: Path, name: str, comment: str = "") -> Path:
    path = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub")


def fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


def audit_rows(data_dir: Path) -> list[tuple[str, str | None, str | None, dict[str, Any]]]:
    with sqlite3.connect(data_dir / "sshgw.db") as db:
        rows = db.execute(
            "SELECT kind, actor, user_name, detail FROM audit_events ORDER BY id"
        ).fetchall()
    return [(k, a, u, json.loads(d)) for k, a, u, d in rows]


# The whole admin flow -------------------------------------------------------------------------


def test_admin_flow(sshgw: Sshgw, tmp_path: Path, data_dir: Path) -> None:
    alice_pub = keygen(tmp_path, "alice", "alice@laptop")
    bob_pub = keygen(tmp_path, "bob")
    alice_fp = fingerprint(alice_pub)
    bob_fp = fingerprint(bob_pub)

    # Users (the first command creates the SQLite database and its schema).
    out = ok(sshgw("user", "add", "alice", "--key", str(alice_pub), "--display", "Alice A")).out
    assert alice_fp in out
    assert (data_dir / "sshgw.db").is_file()
    ok(sshgw("user", "add", "bob", "--password-stdin", input="s3cret-pw\n"))
    users = ok(sshgw("user", "list", "--json")).json()
    assert [u["name"] for u in users] == ["alice", "bob"]
    assert users[0]["display"] == "Alice A" and users[0]["password"] is False
    assert users[0]["keys"][0]["fingerprint"] == alice_fp
    assert users[1]["password"] is True and users[1]["keys"] == []

    # Keys: text on the command line, fingerprints as ssh-keygen prints them.
    out = ok(sshgw("key", "add", "bob", bob_pub.read_text().strip(), "--comment", "ci key")).out
    assert bob_fp in out
    keys = ok(sshgw("key", "list", "--json")).json()
    assert [(k["user"], k["fingerprint"]) for k in keys] == [("alice", alice_fp), ("bob", bob_fp)]
    assert keys[1]["comment"] == "ci key"
    assert [k["fingerprint"] for k in ok(sshgw("key", "list", "bob", "--json")).json()] == [bob_fp]
    assert bob_fp in ok(sshgw("key", "list")).out  # the table keeps the whole fingerprint

    # Groups and grants.
    ok(sshgw("group", "add", "ops"))
    ok(sshgw("group", "member", "add", "ops", "bob"))
    groups = ok(sshgw("group", "list", "--json")).json()
    assert [(g["name"], g["members"]) for g in groups] == [("ops", ["bob"])]
    out = ok(
        sshgw(
            "grant", "add", "--group", "ops", "--target", "web*", "--rights", "shell,exec",
            "--logins", "app,root", "--expires", "+30d",
        )
    ).out  # fmt: skip
    assert "#1" in out
    ok(
        sshgw(
            "grant", "add", "--user", "alice", "--target", "*", "--label", "env=prod",
            "--rights", "exec", "--path", "/srv/app", "--path", "/tmp", "--no-record",
        )
    )  # fmt: skip
    grants = ok(sshgw("grant", "list", "--json")).json()
    assert [(g["id"], g["user"], g["group"]) for g in grants] == [
        (1, None, "ops"),
        (2, "alice", None),
    ]
    assert grants[0]["rights"] == ["exec", "shell"] and grants[0]["logins"] == ["app", "root"]
    expires = datetime.fromisoformat(grants[0]["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert grants[1]["labels"] == {"env": "prod"} and grants[1]["paths"] == ["/srv/app", "/tmp"]
    assert grants[1]["record"] is False and grants[1]["logins"] == []

    shown = ok(sshgw("user", "show", "bob", "--json")).json()
    assert shown["groups"] == ["ops"] and [g["id"] for g in shown["grants"]] == [1]

    # check: allow / deny with the exit status, by name (no such container on the engine).
    res = sshgw("check", "bob", "web1")
    assert res.code == 0, res.out + res.err
    lines = res.out.splitlines()
    assert lines[0] == "ALLOW"
    assert "grant #1" in lines[1] and "as app" in lines[1]
    assert any("login: app" in ln for ln in lines)
    res = sshgw("check", "bob", "web1", "--login", "root", "--right", "exec")
    assert res.code == 0 and res.out.startswith("ALLOW\n")
    res = sshgw("check", "bob", "web1", "--login", "nobody")
    assert res.code == 1 and res.out.startswith("DENY\n") and "nobody" in res.out
    res = sshgw("check", "alice", "web1", "--right", "exec")  # label env=prod not met
    assert res.code == 1 and res.out.startswith("DENY\n")
    res = sshgw("check", "nobody", "web1")
    assert res.code == 1 and res.out.startswith("DENY\n") and "no such user" in res.out
    data = json.loads(sshgw("check", "bob", "web1", "--json").out)
    assert data["allowed"] is True and data["grant"] == 1 and data["login"] == "app"

    # Disable / enable / passwd.
    ok(sshgw("user", "disable", "bob"))
    res = sshgw("check", "bob", "web1")
    assert res.code == 1 and res.out.startswith("DENY\n") and "disabled" in res.out
    ok(sshgw("user", "enable", "bob"))
    assert sshgw("check", "bob", "web1").code == 0
    ok(sshgw("user", "passwd", "alice", "--password-stdin", input="another-pw\n"))
    assert ok(sshgw("user", "show", "alice", "--json")).json()["password"] is True
    ok(sshgw("user", "passwd", "alice", "--clear"))
    assert ok(sshgw("user", "show", "alice", "--json")).json()["password"] is False

    # Removal, with cascades.
    ok(sshgw("key", "remove", bob_fp))
    assert ok(sshgw("key", "list", "bob", "--json")).json() == []
    ok(sshgw("grant", "remove", "1"))
    assert [g["id"] for g in ok(sshgw("grant", "list", "--json")).json()] == [2]
    ok(sshgw("group", "member", "remove", "ops", "bob"))
    ok(sshgw("group", "remove", "ops"))
    assert ok(sshgw("group", "list", "--json")).json() == []
    ok(sshgw("user", "remove", "alice"))
    assert ok(sshgw("grant", "list", "--json")).json() == []
    assert ok(sshgw("key", "list", "--json")).json() == []
    assert [u["name"] for u in ok(sshgw("user", "list", "--json")).json()] == ["bob"]

    # Every change left an audit record; no password anywhere in them.
    rows = audit_rows(data_dir)
    assert {r[0] for r in rows} == {"admin"}
    actions = [r[3]["action"] for r in rows]
    for action in (
        "user.add", "key.add", "group.add", "group.member.add", "grant.add", "user.disable",
        "user.enable", "user.passwd", "key.remove", "grant.remove", "group.member.remove",
        "group.remove", "user.remove",
    ):  # fmt: skip
        assert action in actions
    assert all(r[1] for r in rows)  # actor
    assert ("bob", "user.add") in [(r[2], r[3]["action"]) for r in rows]
    dump = json.dumps(rows)
    assert "s3cret-pw" not in dump and "another-pw" not in dump
    with sqlite3.connect(data_dir / "sshgw.db") as db:
        stored = db.execute("SELECT password_hash FROM users WHERE name = 'bob'").fetchone()[0]
    assert stored.startswith("$argon2id$") and "s3cret-pw" not in stored


# Errors ---------------------------------------------------------------------------------------


def test_errors_are_one_line(sshgw: Sshgw, tmp_path: Path) -> None:
    pub = keygen(tmp_path, "k")
    private = tmp_path / "k"
    ok(sshgw("user", "add", "alice"))
    grant = ("grant", "add", "--user", "alice", "--target", "*", "--rights")
    cases: list[tuple[tuple[str, ...], str]] = [
        (("user", "add", "alice"), "already exists"),
        (("user", "add", "bad+name"), "invalid user name"),
        (("user", "show", "nobody"), "no such user"),
        (("user", "add", "carol", "--password-stdin"), "empty password"),
        (("key", "add", "alice", str(private)), "PRIVATE"),
        (("key", "add", "alice", "garbage-that-is-no-file"), "no such file"),
        (("key", "add", "alice", "ssh-ed25519 AAAAnotakey"), "not a valid SSH public key"),
        (("key", "add", "alice", str(pub), "--expires", "2001-01-01"), "in the past"),
        (("key", "remove", "SHA256:doesnotexist"), "no such key"),
        (("group", "member", "add", "nogroup", "alice"), "no such group"),
        (("grant", "add", "--target", "*", "--rights", "shell"), "exactly one of --user"),
        ((*grant, "fly"), "unknown right"),
        ((*grant, "shell", "--label", "novalue"), "KEY=VALUE"),
        (("grant", "remove", "99"), "no such grant"),
        (("check", "alice", "web1", "--right", "fly"), "unknown right"),
        (("--config", str(tmp_path / "missing.toml"), "user", "list"), "config file not found"),
    ]
    for args, expected in cases:
        line = one_line_error(sshgw(*args))
        assert expected in line, (args, line)
    # A usage error is click's, not a traceback.
    res = sshgw("user", "add")
    assert res.code == 2 and "Traceback" not in res.err


def test_dead_database_is_one_line_without_password(sshgw: Sshgw) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"SSHGW_DATABASE_URL": f"postgresql+asyncpg://sshgw:TopSecret99@127.0.0.1:{port}/x"}
    for args in (("user", "list"), ("db", "upgrade"), ("grant", "add", "--user", "a",
                 "--target", "*", "--rights", "shell"), ("check", "a", "b")):  # fmt: skip
        res = sshgw(*args, env=env)
        line = one_line_error(res)
        assert "TopSecret99" not in res.err + res.out
        assert "refused" in line and "***" in line


@pytest.mark.postgres
def test_postgres_needs_db_upgrade(sshgw: Sshgw, pg_url: str) -> None:
    env = {"SSHGW_DATABASE_URL": pg_url}
    line = one_line_error(sshgw("user", "list", env=env))
    assert "sshgw db upgrade" in line
    res = sshgw("db", "status", env=env)
    assert res.code == 1 and "empty" in res.out
    assert json.loads(sshgw("db", "status", "--json", env=env).out)["schema"] == "empty"
    assert "upgraded" in ok(sshgw("db", "upgrade", env=env)).out
    assert "up to date" in ok(sshgw("db", "upgrade", env=env)).out
    assert "current" in ok(sshgw("db", "status", env=env)).out
    ok(sshgw("user", "add", "alice", env=env))
    assert [u["name"] for u in ok(sshgw("user", "list", "--json", env=env)).json()] == ["alice"]


def test_config_file_chooses_the_database(sshgw: Sshgw, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    cfg = tmp_path / "sshgw.toml"
    cfg.write_text(f'data_dir = "{other}"\n')
    # SSHGW_DATA_DIR from the environment would win over the file: drop it here.
    env = {"SSHGW_DATA_DIR": str(other)}
    ok(sshgw("--config", str(cfg), "user", "add", "zoe", env=env))
    assert (other / "sshgw.db").is_file()
    res = sshgw("user", "list", "--json", env={"SSHGW_CONFIG": str(cfg), **env})
    assert [u["name"] for u in ok(res).json()] == ["zoe"]


# Docker-backed commands -----------------------------------------------------------------------


@pytest.mark.docker
def test_check_uses_container_labels(
    sshgw: Sshgw, make_container: Callable[..., str], busybox_image: str
) -> None:
    prod = make_container(busybox_image, labels={"env": "prod", "team": "web"})
    dev = make_container(busybox_image, labels={"env": "dev"})
    ok(sshgw("user", "add", "alice"))
    ok(sshgw("grant", "add", "--user", "alice", "--target", "*", "--label", "env=prod",
             "--rights", "exec", "--logins", "app"))  # fmt: skip
    res = sshgw("check", "alice", prod, "--right", "exec")
    assert res.code == 0 and res.out.startswith("ALLOW\n"), res.out + res.err
    assert "warning" not in res.out
    res = sshgw("check", "alice", dev, "--right", "exec")
    assert res.code == 1 and res.out.startswith("DENY\n")
    res = sshgw("check", "alice", prod, "--right", "shell")
    assert res.code == 1 and res.out.startswith("DENY\n") and "shell" in res.out

    # A stopped container is still decided, and flagged.
    subprocess.run(["docker", "stop", prod], check=True, capture_output=True)
    res = sshgw("check", "alice", prod, "--right", "exec")
    assert res.code == 0 and "warning:" in res.out and "exited" in res.out

    listed = ok(sshgw("containers", "--json")).json()
    mine = {c["name"]: c for c in listed if c["name"] in (prod, dev)}
    assert mine[prod]["labels"]["team"] == "web" and mine[prod]["state"] == "exited"
    assert mine[dev]["state"] == "running" and mine[dev]["image"] == busybox_image
    table = ok(sshgw("containers")).out
    assert dev in table and mine[dev]["id"][:12] in table


def test_check_without_docker_is_flagged(sshgw: Sshgw, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    ok(sshgw("user", "add", "alice"))
    ok(sshgw("grant", "add", "--user", "alice", "--target", "web*", "--rights", "shell"))
    res = sshgw("check", "alice", "web1", env=env)
    assert res.code == 0, res.out + res.err
    lines = res.out.splitlines()
    assert lines[0] == "ALLOW"
    assert any(ln.startswith("warning:") and "unreachable" in ln for ln in lines)
    data = json.loads(sshgw("check", "alice", "web1", "--json", env=env).out)
    assert data["allowed"] and any("without labels" in w for w in data["warnings"])
    line = one_line_error(sshgw("containers", env=env))
    assert "Docker" in line


def test_hostkey_show(sshgw: Sshgw, data_dir: Path) -> None:
    shown = ok(sshgw("hostkey", "show", "--json")).json()
    assert {h["algorithm"] for h in shown} == {"ssh-ed25519", "ecdsa-sha2-nistp256"}
    for pub in data_dir.glob("ssh_host_*_key.pub"):
        assert fingerprint(pub) in {h["fingerprint"] for h in shown}
    # Stable across runs.
    assert ok(sshgw("hostkey", "show", "--json")).json() == shown
    assert shown[0]["fingerprint"] in ok(sshgw("hostkey", "show")).out


def test_version_and_help(sshgw: Sshgw) -> None:
    assert ok(sshgw("--version")).out.startswith("sshgw ")
    out = ok(sshgw("--help")).out
    for cmd in ("serve", "db", "user", "key", "group", "grant", "check", "containers", "hostkey"):
        assert cmd in out


# Dates (pure) ---------------------------------------------------------------------------------

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-07-01", datetime(2030, 7, 1, tzinfo=UTC)),
        ("2030-07-01T08:30", datetime(2030, 7, 1, 8, 30, tzinfo=UTC)),
        ("2030-07-01 08:30:00", datetime(2030, 7, 1, 8, 30, tzinfo=UTC)),
        ("2030-07-01T10:30+02:00", datetime(2030, 7, 1, 8, 30, tzinfo=UTC)),
        ("2030-07-01T08:30Z", datetime(2030, 7, 1, 8, 30, tzinfo=UTC)),
        ("+30d", NOW + timedelta(days=30)),
        ("+12h", NOW + timedelta(hours=12)),
        ("+90m", NOW + timedelta(minutes=90)),
        ("+2w", NOW + timedelta(weeks=2)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    got = parse_when(text, now=NOW)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "tomorrow", "+30", "30d", "+-3d", "2030-13-01", "+1y"])
def test_parse_when_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid date"):
        parse_when(text, now=NOW)


def test_parse_when_rejects_the_past() -> None:
    with pytest.raises(InvalidInput, match="past"):
        parse_when("2030-06-01", now=NOW)
    assert parse_when("2030-06-01", now=NOW, future=False) == datetime(2030, 6, 1, tzinfo=UTC)
