"""Test containers: the ``docker run`` line of a detached, labelled container.

Every container a test makes carries :data:`TEST_LABEL` and :data:`OWNER_LABEL` (this host and
process), so leftovers of a killed run can be found and removed (``scripts/cleanup.sh``, and
``tests/conftest.py`` at the start of a run). ``docker stop`` is immediate (stop signal KILL).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

TEST_LABEL = "sshgw-test"
OWNER_LABEL = "sshgw-test.owner"


def owner() -> str:
    """The owner label's value for containers made by this process: ``HOST:PID``."""
    return f"{os.uname().nodename}:{os.getpid()}"


def owned_labels() -> dict[str, str]:
    """The labels of a test container made by this process."""
    return {TEST_LABEL: "1", OWNER_LABEL: owner()}


def docker_run_argv(
    image: str,
    name: str,
    labels: Mapping[str, str],
    *,
    user: str | None = None,
    cmd: Sequence[str] = (),
) -> list[str]:
    """``docker run -d --name NAME --label K=V… --stop-signal SIGKILL [--user U] IMAGE [CMD…]``;
    without ``cmd`` the image's own command runs."""
    argv = ["docker", "run", "-d", "--name", name]
    for k, v in labels.items():
        argv += ["--label", f"{k}={v}"]
    argv += ["--stop-signal", "SIGKILL"]
    if user is not None:
        argv += ["--user", user]
    return [*argv, image, *cmd]
