"""The data directory's permissions: created private, tightened when open, SQLite files 0600."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.datadir import DataDirError, prepare_data_dir, private_umask
from gateway.store.urls import sqlite_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """Run each test under the common 022 umask (and restore the runner's own afterwards)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def settings(data: Path, **kw: object) -> Settings:
    return Settings(data_dir=data, **kw)  # type: ignore[arg-type]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_fresh_data_dir_is_created_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "a" / "data"
    assert prepare_data_dir(settings(data)) == []
    assert mode(data) == 0o700
    assert mode(data / "recordings") == 0o700
    assert mode(data / "sshgw.db") == 0o600
    assert warnings(caplog) == []


def test_open_dirs_and_files_are_tightened_with_one_warning_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    (data / "recordings").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "recordings", 0o775)
    for name in ("sshgw.db", "sshgw.db-wal", "sshgw.db-shm", "sshgw.db-journal"):
        (data / name).write_bytes(b"")
        os.chmod(data / name, 0o644)
    (data / "audit-spool.jsonl").write_text("{}\n")
    os.chmod(data / "audit-spool.jsonl", 0o664)

    with caplog.at_level(logging.WARNING, logger="gateway.datadir"):
        done = prepare_data_dir(settings(data))
    assert len(done) == 7
    assert mode(data) == 0o700 and mode(data / "recordings") == 0o700
    for name in ("sshgw.db", "sshgw.db-wal", "sshgw.db-shm", "sshgw.db-journal"):
        assert mode(data / name) == 0o600
    assert mode(data / "audit-spool.jsonl") == 0o600
    lines = warnings(caplog)
    assert len(lines) == 1
    assert str(data) in lines[0] and "0755 -> 0700" in lines[0]
    caplog.clear()
    assert prepare_data_dir(settings(data)) == []  # tight now: nothing more to say
    assert warnings(caplog) == []


def test_sqlite_files_made_later_are_private_even_under_a_022_umask(tmp_path: Path) -> None:
    # SQLite gives -wal/-shm/-journal the mode of the database file: make that file 0600 first.
    data = tmp_path / "data"
    prepare_data_dir(settings(data))
    db = sqlite3.connect(data / "sshgw.db")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        db.commit()
        files = sorted(data.glob("sshgw.db*"))
        assert {p.name for p in files} >= {"sshgw.db", "sshgw.db-wal", "sshgw.db-shm"}
        for p in files:
            assert mode(p) == 0o600, p
    finally:
        db.close()


def test_recordings_dir_is_not_made_when_recording_is_off(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data_dir(settings(data, recording=False))
    assert mode(data) == 0o700
    assert not (data / "recordings").exists()


def test_own_recordings_dir_is_made_private(tmp_path: Path) -> None:
    rec = tmp_path / "elsewhere" / "recs"
    rec.mkdir(parents=True)
    os.chmod(rec, 0o777)
    prepare_data_dir(settings(tmp_path / "data", recordings_dir=rec))
    assert mode(rec) == 0o700


def test_cli_mode_creates_nothing_for_postgresql(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = settings(data, database_url="postgresql+asyncpg://u:p@localhost/db")
    assert prepare_data_dir(cfg, create=False) == []
    assert not data.exists()


def test_cli_mode_makes_the_sqlite_database_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data_dir(settings(data), create=False)
    assert mode(data) == 0o700
    assert mode(data / "sshgw.db") == 0o600
    assert not (data / "recordings").exists()


def test_database_outside_the_data_dir(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    db = shared / "gw.db"
    cfg = settings(tmp_path / "data", database_url=f"sqlite+aiosqlite:///{db}")
    prepare_data_dir(cfg)
    assert mode(db) == 0o600
    assert mode(shared) == 0o755  # somebody else's directory is left as it is


def test_a_link_beside_the_database_is_not_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    target = tmp_path / "not-ours"
    target.write_text("x")
    os.chmod(target, 0o644)
    (data / "sshgw.db-journal").symlink_to(target)
    prepare_data_dir(settings(data))
    assert mode(target) == 0o644


def test_a_data_dir_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    with pytest.raises(DataDirError) as err:
        prepare_data_dir(settings(data))
    assert str(data) in err.value.user_message
    assert "\n" not in err.value.user_message


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite+aiosqlite:////var/lib/sshgw/sshgw.db") == Path(
        "/var/lib/sshgw/sshgw.db"
    )
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_path("sqlite+aiosqlite://") is None
    assert sqlite_path("postgresql+asyncpg://u@h/db") is None
    assert sqlite_path("not a url") is None


def test_private_umask() -> None:
    old = private_umask()
    try:
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(old)
