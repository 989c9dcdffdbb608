"""`sshgw audit`, `sshgw sessions` and `sshgw replay` against SQLite and PostgreSQL, on records
written by the gateway's own audit writer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import Settings
from gateway.observe import Observer, SessionInfo
from gateway.store import Store

HANG = 120.0


class _NoEngine:
    async def ping(self) -> None:
        return None


def _info(user: str, kind: str, pty: bool, command: str | None) -> SessionInfo:
    return SessionInfo(
        id=uuid.uuid4().hex,
        conn_id="c1",
        user=user,
        container="web1",
        container_id="ab" * 32,
        login="app",
        kind=kind,
        command=command,
        remote="127.0.0.1:40000",
        pty=pty,
        term="xterm",
        cols=80,
        rows=24,
        record=True,
        connected_at=time.monotonic(),
    )


@pytest.fixture
async def seeded(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[dict[str, str], Observer]]:
    """A database with a finished recorded shell, a finished exec with a file op, and an open
    exec session; the observer stays running (kill poller) until the test ends."""
    store = Store.from_url(db_url)
    await store.upgrade()
    settings = Settings(data_dir=tmp_path, database_url=db_url, metrics_listen="127.0.0.1:0")
    obs = Observer(settings, store, _NoEngine())  # type: ignore[arg-type]
    obs.kill_poll_interval = 0.1
    await obs.start()
    obs.auth_attempt("publickey", True, "alice", "127.0.0.1:40000")
    obs.auth_attempt("password", False, "mallory", "10.1.2.3:5555", "bad password")
    obs.access_denied("no_grant", "alice", "db1", "exec", "127.0.0.1:40000")
    shell = obs.session_started(_info("alice", "shell", True, None))
    shell.from_container(b"hello from the shell\r\n")
    shell.end(0, "exit")
    ex = obs.session_started(_info("alice", "exec", False, "cat > /tmp/x"))
    ex.to_container(11)
    ex.file_op("write", "/tmp/x", 11, "ok", 0.001)
    ex.end(3, "exit")
    live = obs.session_started(_info("bob", "exec", False, "sleep 100"))
    assert await obs.writer.flush(timeout=HANG)
    ids = {"shell": shell.id, "exec": ex.id, "live": live.id}

    async def bridge() -> None:  # what the SSH session does when an admin kills it
        await live.killed.wait()
        live.end(255, "killed")

    ender = asyncio.create_task(bridge())
    try:
        yield ids, obs
    finally:
        ender.cancel()
        await asyncio.gather(ender, return_exceptions=True)
        await obs.stop()
        await store.close()


def _cli(db_url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {"SSHGW_DATABASE_URL": db_url, "SSHGW_DATA_DIR": str(tmp_path)}
    res = CliRunner().invoke(app, list(args), env=env)
    return res.exit_code, res.stdout, res.stderr


async def _acli(db_url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    # The CLI runs its own event loop: keep it off this test's loop.
    return await asyncio.to_thread(_cli, db_url, tmp_path, *args)


async def test_audit_filters(
    seeded: tuple[dict[str, str], Observer], db_url: str, tmp_path: Path
) -> None:
    ids, _ = seeded
    code, out, _ = await _acli(db_url, tmp_path, "audit", "--json")
    assert code == 0
    events = json.loads(out)
    kinds = [e["kind"] for e in events]
    assert kinds.count("login") == 2 and "denied" in kinds and "file" in kinds
    code, out, _ = await _acli(db_url, tmp_path, "audit", "--json", "--user", "mallory")
    (bad,) = json.loads(out)
    assert bad["detail"]["result"] == "failure" and bad["remote"] == "10.1.2.3:5555"
    code, out, _ = await _acli(db_url, tmp_path, "audit", "--json", "--kind", "file")
    (op,) = json.loads(out)
    assert op["detail"]["path"] == "/tmp/x" and op["session_id"] == ids["exec"]
    code, out, _ = await _acli(db_url, tmp_path, "audit", "--json", "--container", "db1")
    assert [e["kind"] for e in json.loads(out)] == ["denied"]
    code, out, _ = await _acli(db_url, tmp_path, "audit", "--json", "--since", "5m", "--limit", "2")
    assert len(json.loads(out)) == 2
    code, out, _ = await _acli(db_url, tmp_path, "audit")
    assert code == 0 and "session.end" in out and "mallory" in out


async def test_sessions_list_show_replay_and_kill(
    seeded: tuple[dict[str, str], Observer], db_url: str, tmp_path: Path
) -> None:
    ids, obs = seeded
    code, out, _ = await _acli(db_url, tmp_path, "sessions", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert set(ids.values()) <= set(rows)
    assert rows[ids["exec"]]["exit_status"] == 3 and rows[ids["exec"]]["bytes_in"] == 11
    assert rows[ids["shell"]]["recording"]
    assert rows[ids["live"]]["active"] is True

    code, out, _ = await _acli(db_url, tmp_path, "sessions", "--active", "--json")
    assert [r["id"] for r in json.loads(out)] == [ids["live"]]

    code, out, _ = await _acli(db_url, tmp_path, "sessions", "show", ids["exec"][:8], "--json")
    shown = json.loads(out)
    assert [e["kind"] for e in shown["events"]] == ["session.start", "file", "session.end"]

    code, out, _ = await _acli(db_url, tmp_path, "replay", ids["shell"], "--speed", "1000")
    assert code == 0 and "hello from the shell" in out

    code, out, err = await _acli(db_url, tmp_path, "sessions", "kill", ids["live"])
    assert code == 0, err
    assert f"session {ids['live']} ended: killed" in out
    assert obs.active_sessions == []
