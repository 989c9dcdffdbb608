"""The data directory on the gateway host: private to the gateway's own user.

It holds the SQLite database (password hashes, public keys, the audit trail), the host keys, the
audit spool and the session recordings. Directories are 0700 and files 0600:

- :func:`private_umask` sets the process umask to 0o077. The ``sshgw`` entry point and the
  gateway process call it first, so whatever they create later (SQLite's ``-wal``/``-shm``/
  ``-journal`` files at the first write, recording directories, spools) is private too.
- :func:`prepare_data_dir` runs where the gateway and the CLI first touch the data directory: it
  creates the data directory (and the recordings directory) 0700, tightens them to 0700 when
  they already exist with group or other bits, creates the SQLite database file 0600 before
  SQLite opens it (SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files the mode of the
  database file, whatever the umask) and tightens existing database files and the audit spool.
  What it had to tighten is logged as one warning line.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.store.urls import sqlite_path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
# The database file and the files SQLite keeps beside it.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
AUDIT_SPOOL = "audit-spool.jsonl"


class DataDirError(GatewayError):
    """The data directory (or a file in it) cannot be created or made private."""


def private_umask() -> int:
    """Make everything this process creates from now on private; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def _too_open(mode: int, wanted: int) -> bool:
    return bool(stat.S_IMODE(mode) & ~wanted & 0o777)


def _tighten(path: Path, wanted: int, done: list[str], *, follow: bool = False) -> None:
    """chmod ``path`` to ``wanted`` when it has more bits (a missing path is left alone).

    With ``follow`` (directories: a data directory may be a symbolic link) a link is followed;
    otherwise it is left alone, so a link planted beside the database is never chmod'ed through.
    """
    try:
        st = path.lstat()
        if follow and stat.S_ISLNK(st.st_mode):
            st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataDirError(f"cannot check {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode) or not _too_open(st.st_mode, wanted):
        return
    try:
        os.chmod(path, wanted)
    except OSError as exc:
        raise DataDirError(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}) and cannot "
            f"be made private: {exc.strerror or exc}"
        ) from None
    done.append(f"{path} ({stat.S_IMODE(st.st_mode):04o} -> {wanted:04o})")


def private_dir(path: Path, done: list[str]) -> None:
    """Create ``path`` (and missing parents) 0700, or tighten it to 0700 when it exists."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the directory {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise DataDirError(f"{path} is not a directory")
    _tighten(path, DIR_MODE, done, follow=True)


def private_file(path: Path, done: list[str]) -> None:
    """Create ``path`` empty with mode 0600 when missing; tighten it to 0600 when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE, done)
        return
    except OSError as exc:
        raise DataDirError(f"cannot create {path}: {exc.strerror or exc}") from None
    os.close(fd)


def prepare_data_dir(settings: Settings, *, create: bool = True) -> list[str]:
    """Create or tighten the data directory, the recordings directory and the database files.

    The gateway passes ``create=True``: the data and recordings directories are made when
    missing. The CLI passes ``create=False``: it only tightens what exists, and makes only the
    SQLite database (and its directory) it is about to open, so an admin's ``sshgw`` against
    PostgreSQL leaves no empty directories behind. Returns what was tightened (also logged as
    one warning line). Raises :class:`DataDirError` (one line for a person) when a directory
    cannot be made or a file cannot be made private.
    """
    done: list[str] = []
    data_dir = settings.data_dir.expanduser()
    recordings = settings.effective_recordings_dir.expanduser()
    if create:
        private_dir(data_dir, done)
    else:
        _tighten(data_dir, DIR_MODE, done, follow=True)
    if create and settings.recording:
        private_dir(recordings, done)
    else:
        _tighten(recordings, DIR_MODE, done, follow=True)
    db = sqlite_path(settings.effective_database_url)
    if db is not None:
        if not db.parent.exists():
            private_dir(db.parent, done)
        # An empty file is an empty SQLite database; made here, it is private from the start,
        # and SQLite gives the -wal/-shm/-journal files it creates later the same mode.
        private_file(db, done)
        for suffix in SQLITE_SUFFIXES[1:]:
            _tighten(db.with_name(db.name + suffix), FILE_MODE, done)
    _tighten(data_dir / AUDIT_SPOOL, FILE_MODE, done)
    if done:
        log.warning(
            "tightened permissions of gateway files that other users could open: %s",
            ", ".join(done),
        )
    return done
