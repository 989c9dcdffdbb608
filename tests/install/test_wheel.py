"""The wheel, installed the way a user installs a Python tool, runs a real session.

``pip install <wheel>`` into a fresh venv outside the repository (not editable, working
directory elsewhere), then ``sshgw db upgrade``, ``user add``, ``key add``, ``grant add`` and
``serve`` from that venv, and one OpenSSH ``ssh … echo`` through it into a real container.
Before the migrations moved into the package, ``db upgrade`` failed here with
``database migrations not found in …/site-packages/alembic``.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import gateway
from tests.e2e.helpers import REPO, free_port, no_traceback, unique, wait_until
from tests.install.venvs import Dists, Installed, outside_env
from tests.support.openssh import CONNECT_TIMEOUT, client_opts

pytestmark = pytest.mark.docker

MIGRATION_FILES = ("env.py", "script.py.mako", "versions/0001_initial.py")


def test_sdist_and_wheel_ship_the_migrations(dists: Dists) -> None:
    wheel_names = set(zipfile.ZipFile(dists.wheel).namelist())
    with tarfile.open(dists.sdist) as tar:
        sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in MIGRATION_FILES:
        assert f"gateway/migrations/{name}" in wheel_names, f"{name} missing from the wheel"
        assert f"gateway/migrations/{name}" in sdist_names, f"{name} missing from the sdist"
    assert not any(n.startswith("alembic/") for n in wheel_names | sdist_names)
    # One version everywhere: the file names and the package's own __version__.
    assert dists.wheel.name.startswith(f"sshgw-{gateway.__version__}-")
    assert dists.sdist.name == f"sshgw-{gateway.__version__}.tar.gz"


WEB_FILES = (
    "login.html",
    "login.js",
    "term.html",
    "term.js",
    "site.css",
    "vendor/xterm.js",
    "vendor/xterm.css",
    "vendor/addon-fit.js",
    "vendor/LICENSE.xterm",
    "vendor/LICENSE.addon-fit",
)


def test_sdist_and_wheel_ship_the_web_terminal(dists: Dists) -> None:
    """The terminal's pages and xterm.js (with its license) are package data: the gateway
    serves them from the installed package, never from a CDN."""
    wheel_names = set(zipfile.ZipFile(dists.wheel).namelist())
    with tarfile.open(dists.sdist) as tar:
        sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in WEB_FILES:
        assert f"gateway/web/static/{name}" in wheel_names, f"{name} missing from the wheel"
        assert f"gateway/web/static/{name}" in sdist_names, f"{name} missing from the sdist"


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


class InstalledSshgw:
    """The installed ``sshgw``, run outside the repository with this test's data dir and ports."""

    def __init__(self, installed: Installed, data_dir: Path) -> None:
        self.installed = installed
        self.port = free_port()
        self.metrics_port = free_port()
        self.env = outside_env(
            installed.venv,
            SSHGW_DATA_DIR=str(data_dir),
            SSHGW_LISTEN=f"127.0.0.1:{self.port}",
            SSHGW_METRICS_LISTEN=f"127.0.0.1:{self.metrics_port}",
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(self.installed.sshgw), *args],
            cwd=self.installed.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, f"sshgw {' '.join(args)}: exit {res.returncode}\n{res.stderr}"
        assert "Traceback" not in res.stderr, res.stderr
        return res

    def python(self, code: str) -> str:
        """``code`` run by the venv's python, as a user would in that venv; its stdout."""
        return subprocess.run(
            [str(self.installed.python), "-c", code],
            cwd=self.installed.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()


def test_installed_wheel_serves_a_session(
    installed: Installed, busybox_image: str, make_container: Callable[..., str], tmp_path: Path
) -> None:
    sshgw = InstalledSshgw(installed, tmp_path / "data")
    site = installed.venv.resolve()

    # The package this venv imports is its own copy: not the checkout, not an editable link.
    where = Path(sshgw.python("import gateway; print(gateway.__file__)")).resolve()
    assert where.is_relative_to(site), where
    assert not where.is_relative_to(REPO.resolve()), where

    assert sshgw.run("--version").stdout.strip() == f"sshgw {gateway.__version__}"

    sshgw.run("db", "upgrade")
    user = unique("w")
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", user, "-f", str(key)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    sshgw.run("user", "add", user)
    sshgw.run("key", "add", user, f"{key}.pub")
    container = make_container(busybox_image)
    sshgw.run("grant", "add", "--user", user, "--target", container, "--rights", "exec")

    port, metrics_port = sshgw.port, sshgw.metrics_port
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(installed.sshgw), "serve"],
            cwd=installed.root,
            env=sshgw.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: proc.poll() is not None or _banner(port), timeout=60), (
            f"no SSH banner in 60 s:\n{log_path.read_text(errors='replace')}"
        )
        assert proc.poll() is None, f"serve exited:\n{log_path.read_text(errors='replace')}"

        # The serving process is the venv's entry point.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert str(installed.sshgw).encode() in cmdline, cmdline

        res = subprocess.run(
            [
                "ssh",
                *client_opts(key),
                *CONNECT_TIMEOUT,
                "-p",
                str(port),
                "-l",
                f"{user}+{container}",
                "127.0.0.1",
                "echo hi from $(hostname)",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        no_traceback(res.stdout, res.stderr)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
        hostname = subprocess.run(
            ["docker", "inspect", "-f", "{{.Config.Hostname}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert res.stdout == f"hi from {hostname}\n".encode()

        # The same version in the build-info metric.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        info = re.search(r"^sshgw_build_info\{([^}]*)\} 1\.0$", metrics, re.M)
        assert info is not None, "no sshgw_build_info in /metrics"
        assert f'version="{gateway.__version__}"' in info.group(1)

        # Dependencies the gateway loaded are the venv's too (compiled ones show in its maps).
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        libs = {line.split()[-1] for line in maps.splitlines() if "site-packages" in line}
        assert libs, "no compiled dependency mapped from any site-packages"
        assert all(Path(lib).resolve().is_relative_to(site) for lib in libs), sorted(libs)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-4000:]
    assert proc.returncode == 0, f"serve exited {proc.returncode} on SIGTERM:\n{log_text[-4000:]}"
