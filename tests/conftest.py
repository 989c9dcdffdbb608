"""Shared fixtures: a real Docker engine, locally built test images, real databases.

Nothing here is mocked. The first use of an engine, an image or PostgreSQL sets it up (by the same
scripts ``scripts/test.sh`` runs up front), so plain ``pytest`` works on a machine where the setup
ran once.

Session-scoped: ``docker_host``, ``busybox_image``, ``debian_image``, ``notar_image``,
``noshell_image``, ``pg_base_url``. Function-scoped: ``make_container``, ``pg_url``, ``sqlite_url``,
``db_url`` (parametrized over SQLite and PostgreSQL).

Environment knobs: ``SSHGW_TEST_PG_URL`` (use this PostgreSQL server instead of the local one, as
``postgresql+asyncpg://USER:PASSWORD@HOST:PORT``), ``SSHGW_TEST_PG_PORT`` (local port, default 5432).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.containers import OWNER_LABEL, TEST_LABEL, docker_run_argv, owned_labels

__all__ = ["OWNER_LABEL", "TEST_LABEL"]

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
BUILD_IMAGES = REPO / "tests" / "images" / "build.sh"

BUSYBOX_IMAGE = "sshgw-test/busybox:1"
DEBIAN_IMAGE = "sshgw-test/debian:bookworm"
NOTAR_IMAGE = "sshgw-test/notar:1"
NOSHELL_IMAGE = "sshgw-test/noshell:1"
RSYNC_IMAGE = "sshgw-test/rsync:bookworm"

# Every container a test makes carries TEST_LABEL and OWNER_LABEL (tests/support/containers.py),
# so leftovers can be found and removed (``scripts/cleanup.sh``). The owner label lets a session
# remove only the leftovers of dead runs.

# Timing is not what tests check: no hypothesis deadlines (CI machines are slow and shared).
hypothesis_settings.register_profile("sshgw", deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sshgw"))


def _run(
    argv: Sequence[str | os.PathLike[str]], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _setup(argv: Sequence[str | os.PathLike[str]], what: str) -> None:
    """Run a setup script; a failure fails the test with the script's own message."""
    res = _run(argv)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        pytest.fail(f"{what} failed (exit {res.returncode}):\n{tail}", pytrace=False)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


# Docker --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The Docker endpoint the tests use; starts a local dockerd when none answers."""
    if not _docker_answers():
        _setup([SCRIPTS / "start-docker.sh"], "starting the Docker engine")
    _remove_orphans()
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _remove_orphans() -> None:
    """Remove test containers left behind by test runs whose process is gone."""
    res = _run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label={TEST_LABEL}=1",
            "--format",
            f'{{{{.ID}}}} {{{{.Label "{OWNER_LABEL}"}}}}',
        ]
    )
    dead = []
    for line in res.stdout.splitlines():
        cid, _, owner = line.partition(" ")
        host, _, pid = owner.partition(":")
        if not pid.isdigit() or host != os.uname().nodename:
            continue
        if not Path(f"/proc/{pid}").exists():
            dead.append(cid)
    if dead:
        _run(["docker", "rm", "-f", "-v", *dead])


def _image(docker_host: str, name: str, which: str) -> str:
    # build.sh is idempotent and fast when the image is current (it checks the build version).
    _setup([BUILD_IMAGES, which], f"building test image {name}")
    return name


@pytest.fixture(scope="session")
def busybox_image(docker_host: str) -> str:
    """busybox-static with every applet linked; users root, app (1000), nobody; /tmp 1777."""
    return _image(docker_host, BUSYBOX_IMAGE, "busybox")


@pytest.fixture(scope="session")
def notar_image(docker_host: str) -> str:
    """Like the busybox image, but without a tar applet."""
    return _image(docker_host, NOTAR_IMAGE, "notar")


@pytest.fixture(scope="session")
def noshell_image(docker_host: str) -> str:
    """No /bin/sh at all; busybox only as /bbx/busybox (default command: a long sleep)."""
    return _image(docker_host, NOSHELL_IMAGE, "noshell")


@pytest.fixture(scope="session")
def debian_image(docker_host: str) -> str:
    """Debian bookworm minbase (bash, GNU tar, coreutils) + user app (1000, /bin/bash)."""
    return _image(docker_host, DEBIAN_IMAGE, "debian")


@pytest.fixture(scope="session")
def rsync_image(docker_host: str) -> str:
    """The Debian image plus Debian's rsync."""
    return _image(docker_host, RSYNC_IMAGE, "rsync")


MakeContainer = Callable[..., str]


@pytest.fixture
def make_container(docker_host: str) -> Iterator[MakeContainer]:
    """``make_container(image, name=None, labels=None, user=None, cmd=None) -> name``.

    Runs the container detached; with ``cmd=None`` the image's own command (a long sleep).
    Everything made here is removed at teardown. ``docker stop`` is immediate (stop signal KILL).
    """
    made: list[str] = []
    own = owned_labels()

    def make(
        image: str,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        user: str | None = None,
        cmd: Sequence[str] | None = None,
    ) -> str:
        cname = name or f"sshgw-t-{uuid.uuid4().hex[:10]}"
        if name is not None:
            # A leftover of an earlier, killed run with this fixed name: only ours may go.
            old = _run(
                ["docker", "inspect", "-f", f'{{{{index .Config.Labels "{TEST_LABEL}"}}}}', cname]
            )
            if old.returncode == 0 and old.stdout.strip() == "1":
                _run(["docker", "rm", "-f", "-v", cname])
        argv = docker_run_argv(image, cname, {**own, **(labels or {})}, user=user, cmd=cmd or ())
        res = _run(argv, timeout=120)
        if res.returncode != 0:
            pytest.fail(f"docker run {image} failed: {res.stderr.strip()}", pytrace=False)
        made.append(cname)
        return cname

    yield make
    if made:
        _run(["docker", "rm", "-f", "-v", *made], timeout=120)


# Databases -----------------------------------------------------------------------------------


def _pg_libpq_url(sqlalchemy_url: str, dbname: str) -> str:
    parts = urlsplit(sqlalchemy_url)
    return f"postgresql://{parts.netloc}/{dbname}"


def _psql(base_url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            _pg_libpq_url(base_url, "postgres"),
            "-tAc",
            sql,
        ],
        timeout=60,
    )


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """``postgresql+asyncpg://sshgw:sshgw@127.0.0.1:PORT`` (no database); starts PostgreSQL."""
    url = os.environ.get("SSHGW_TEST_PG_URL")
    if url:
        url = url.rstrip("/")
    else:
        port = os.environ.get("SSHGW_TEST_PG_PORT", "5432")
        url = f"postgresql+asyncpg://sshgw:sshgw@127.0.0.1:{port}"
    if shutil.which("psql") is None:
        pytest.fail("psql not found (apt-get install postgresql-client)", pytrace=False)
    if _psql(url, "SELECT 1").returncode != 0:
        if os.environ.get("SSHGW_TEST_PG_URL"):
            pytest.fail("PostgreSQL at SSHGW_TEST_PG_URL does not answer", pytrace=False)
        _setup([SCRIPTS / "start-postgres.sh"], "starting PostgreSQL")
    return url


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"sshgw_t_{uuid.uuid4().hex[:12]}"
    res = _psql(pg_base_url, f'CREATE DATABASE "{name}"')
    if res.returncode != 0:
        pytest.fail(f"cannot create database {name}: {res.stderr.strip()}", pytrace=False)
    yield f"{pg_base_url}/{name}"
    _psql(pg_base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file (not yet created) in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'sshgw.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest) -> str:
    """The test runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))
