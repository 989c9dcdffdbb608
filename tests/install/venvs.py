"""What the install tests share: the built dists, the installed venv, a user's environment.

Nothing of the checkout may leak into what the installed ``sshgw`` runs: :func:`outside_env`
drops ``PYTHONPATH``, ``VIRTUAL_ENV``, the test venv on ``PATH`` and every inherited ``SSHGW_*``
setting.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# The directories a plain Debian PATH holds; the venv's bin/ goes in front.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    """A virtualenv with the wheel installed; ``root`` is a scratch directory outside the repo."""

    venv: Path
    root: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def sshgw(self) -> Path:
        return self.venv / "bin" / "sshgw"


def outside_env(venv_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a user's shell with only ``venv_dir`` activated, plus ``settings``."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith("SSHGW_") and k != "PATH"
    }
    env["PATH"] = f"{venv_dir / 'bin'}:{_SYSTEM_PATH}"
    env["PYTHONNOUSERSITE"] = "1"
    env.update(settings)
    return env


def run_or_fail(argv: list[str], *, cwd: Path, env: dict[str, str] | None, what: str) -> None:
    res = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if res.returncode != 0:
        out = "\n".join(
            line
            for line in (res.stdout + res.stderr).splitlines()
            # pip's notes about an unused local index directory on some machines.
            if not line.startswith("WARNING: Location ")
        )
        pytest.fail(f"{what} failed (exit {res.returncode}):\n{out[-4000:]}", pytrace=False)
