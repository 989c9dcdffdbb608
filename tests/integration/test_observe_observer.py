"""The Observer with a real database and a real Docker engine: the HTTP listener (/metrics,
/healthz, /readyz), session rows, and kill requests arriving through the database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from gateway.config import Settings
from gateway.engines import DockerEngine
from gateway.errors import GatewayError
from gateway.observe import Observer, SessionInfo
from gateway.observe.audit import SESSIONS
from gateway.store import Store

HANG = 120.0


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


async def _observer(tmp: Path, store: Store, docker_host: str) -> tuple[Observer, DockerEngine]:
    settings = Settings(data_dir=tmp, metrics_listen="127.0.0.1:0")
    engine = DockerEngine(docker_host)
    obs = Observer(settings, store, engine)
    obs.kill_poll_interval = 0.1
    await obs.start()
    return obs, engine


def _info(kind: str = "exec") -> SessionInfo:
    return SessionInfo(
        id=uuid.uuid4().hex,
        conn_id="c1",
        user="alice",
        container="web1",
        container_id=None,
        login="root",
        kind=kind,
        command="sleep 100",
        remote="127.0.0.1:1234",
        pty=False,
        term=None,
        cols=0,
        rows=0,
        record=True,
        connected_at=time.monotonic(),
    )


async def _get(port: int, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.mark.docker
async def test_http_endpoints(tmp_path: Path, store: Store, docker_host: str) -> None:
    obs, engine = await _observer(tmp_path, store, docker_host)
    try:
        status, ctype, body = await _get(obs.metrics_port, "/healthz")
        assert status == 200
        status, _, body = await _get(obs.metrics_port, "/readyz")
        assert (status, body) == (200, "ready\n")
        status, ctype, body = await _get(obs.metrics_port, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        assert "sshgw_build_info{" in body
        assert "sshgw_ready 1.0" in body
        assert 'sshgw_dependency_up{dependency="docker"} 1.0' in body
    finally:
        await obs.stop()
        await engine.close()


async def test_not_ready_when_docker_is_unreachable(tmp_path: Path, store: Store) -> None:
    obs, engine = await _observer(tmp_path, store, f"unix://{tmp_path}/no-docker.sock")
    try:
        status, _, body = await _get(obs.metrics_port, "/readyz")
        assert status == 503
        lines = body.splitlines()
        assert lines[0] == "not ready"
        assert any(line.startswith("docker: ") for line in lines)
        assert not any(line.startswith("database") for line in lines)
        status, _, body = await _get(obs.metrics_port, "/metrics")
        assert "sshgw_ready 0.0" in body
        assert 'sshgw_dependency_up{dependency="docker"} 0.0' in body
        assert 'sshgw_dependency_up{dependency="database"} 1.0' in body
        status, _, _ = await _get(obs.metrics_port, "/healthz")
        assert status == 200
    finally:
        await obs.stop()
        await engine.close()


async def test_metrics_port_in_use_is_one_clear_error(tmp_path: Path, store: Store) -> None:
    obs, engine = await _observer(tmp_path, store, f"unix://{tmp_path}/x.sock")
    try:
        settings = Settings(data_dir=tmp_path, metrics_listen=f"127.0.0.1:{obs.metrics_port}")
        other = Observer(settings, store, engine)
        with pytest.raises(GatewayError) as info:
            await other.start()
        assert "cannot listen for metrics" in info.value.user_message
    finally:
        await obs.stop()
        await engine.close()


async def test_session_row_and_kill_through_the_database(tmp_path: Path, store: Store) -> None:
    obs, engine = await _observer(tmp_path, store, f"unix://{tmp_path}/x.sock")
    try:
        info = _info()
        track = obs.session_started(info)
        assert await obs.writer.flush(timeout=HANG)
        async with store.engine.begin() as conn:
            row = (await conn.execute(sa.select(SESSIONS).where(SESSIONS.c.id == info.id))).one()
            assert row.ended_at is None and row.kind == "exec" and row.user_name == "alice"
            # What `sshgw sessions kill` does:
            await conn.execute(
                SESSIONS.update().where(SESSIONS.c.id == info.id).values(kill_requested=True)
            )
        async with asyncio.timeout(HANG):
            await track.killed.wait()
        track.end(None, "killed")
        assert await obs.writer.flush(timeout=HANG)
        async with store.engine.connect() as conn:
            row = (await conn.execute(sa.select(SESSIONS).where(SESSIONS.c.id == info.id))).one()
        assert row.ended_at is not None and row.end_reason == "killed"
    finally:
        await obs.stop()
        await engine.close()


async def test_stop_ends_open_sessions_and_flushes(tmp_path: Path, store: Store) -> None:
    obs, engine = await _observer(tmp_path, store, f"unix://{tmp_path}/x.sock")
    info = _info("shell")
    obs.session_started(info)
    await obs.stop()
    await engine.close()
    async with store.engine.connect() as conn:
        row = (await conn.execute(sa.select(SESSIONS).where(SESSIONS.c.id == info.id))).one()
    assert row.end_reason == "shutdown"
    assert not (tmp_path / "audit-spool.jsonl").exists()
