"""sshgw as a user installs it: the sdist and the wheel built by ``python -m build``, and the
wheel installed (not editable) into a fresh virtualenv outside the repository.

``dists`` (session scope) builds both into a temporary directory; ``installed`` (session scope)
makes the venv and ``pip install``s the wheel into it, from a working directory outside the
checkout (with pip's cache, as a user's pip would).
"""

from __future__ import annotations

import sys
import venv

import pytest

from tests.e2e.helpers import REPO
from tests.install.venvs import Dists, Installed, outside_env, run_or_fail


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """``python -m build``: the sdist, and the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    run_or_fail(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        cwd=REPO,
        env=None,
        what="python -m build",
    )
    sdists = sorted(out.glob("sshgw-*.tar.gz"))
    wheels = sorted(out.glob("sshgw-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, (
        f"expected one sdist and one wheel: {sorted(out.iterdir())}"
    )
    return Dists(sdist=sdists[0], wheel=wheels[0])


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, dists: Dists) -> Installed:
    """A fresh venv (outside the repository) with ``pip install <wheel>`` done in it."""
    root = tmp_path_factory.mktemp("installed")
    assert not root.resolve().is_relative_to(REPO.resolve()), "the venv must be outside the repo"
    venv_dir = root / "venv"
    # The test interpreter's base Python, like `python3 -m venv` in a user's shell. Without a pip
    # of its own (ensurepip alone took 5-15 s here): this pip installs into it (`--python`).
    venv.EnvBuilder(with_pip=False, clear=True).create(venv_dir)
    pip = [sys.executable, "-m", "pip", "--python", str(venv_dir / "bin" / "python")]
    run_or_fail(
        [*pip, "install", "-q", str(dists.wheel)],
        cwd=root,
        env=outside_env(venv_dir, PIP_DISABLE_PIP_VERSION_CHECK="1"),
        what=f"pip install {dists.wheel.name}",
    )
    return Installed(venv=venv_dir, root=root)
