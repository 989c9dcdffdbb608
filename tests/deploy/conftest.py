"""Fixtures of the deployment tests (deploy/docker, deploy/compose, deploy/systemd).

Session-scoped: ``python_base_image``, ``postgres_image``, ``prometheus_image`` (local stand-ins
for python:3.12-slim, postgres and prom/prometheus, made by ``tests/images/build.sh``) and
``gateway_image``: deploy/docker/Dockerfile built once per run under a unique tag, removed at the
end with the layers of both its stages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.deploy.helpers import (
    POSTGRES_IMAGE,
    PROMETHEUS_IMAGE,
    PYTHON_BASE,
    REPO,
    base_python,
    build_context,
    build_image,
    remove_image,
    remove_stale_images,
    run,
)

GATEWAY_REPOSITORY = "sshgw-test/gateway"


def _image(name: str, which: str) -> str:
    # Idempotent and quick when the image is current; the first build may debootstrap.
    run([REPO / "tests" / "images" / "build.sh", which], timeout=1800)
    return name


@pytest.fixture(scope="session")
def python_base_image(docker_host: str) -> str:
    """Debian bookworm minbase + python3 and python3-venv (the Dockerfile's BASE here)."""
    return _image(PYTHON_BASE, "python")


@pytest.fixture(scope="session")
def postgres_image(docker_host: str) -> str:
    """Debian's postgresql-15 with the official image's interface (POSTGRES_PASSWORD, ...)."""
    return _image(POSTGRES_IMAGE, "postgres")


@pytest.fixture(scope="session")
def prometheus_image(docker_host: str) -> str:
    """Debian's prometheus with prom/prometheus' interface (config, /prometheus, nobody)."""
    return _image(PROMETHEUS_IMAGE, "prometheus")


@pytest.fixture(scope="session")
def gateway_image(
    python_base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """deploy/docker/Dockerfile built on the local base; the tag is removed at the end."""
    remove_stale_images(GATEWAY_REPOSITORY)
    tag = f"{GATEWAY_REPOSITORY}:{uuid.uuid4().hex[:12]}"
    build_tag = f"{tag}-build"
    context = tmp_path_factory.mktemp("image") / "context"
    context.mkdir()
    build_context(context, base_python(python_base_image))
    try:
        build_image(context, python_base_image, tag)
        # The first stage under a tag of its own, so that its layers go with it at the end
        # (the classic builder leaves them untagged otherwise). All cached: it takes a second.
        build_image(context, python_base_image, build_tag, target="build")
        yield tag
    finally:
        remove_image(tag, build_tag)
