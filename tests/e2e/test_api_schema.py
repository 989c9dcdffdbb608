"""schemathesis against the live OpenAPI document of a throwaway gateway, with an admin token
(writes included): no 5xx, and every answer matches the document (status, media type, body).

Bounded: 5 examples per operation (and the coverage phase's boundary cases), fixed seed, one worker (well under a minute)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.apiclient import new_token, web_gateway
from tests.e2e.helpers import GatewayFactory

pytestmark = pytest.mark.timeout(300)

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


def test_schemathesis_finds_nothing(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw, port = web_gateway(gateway_factory)
    token = new_token(gw, "fuzz", "admin")
    gw.add_user("fuzzed")  # something to find, change and remove
    gw.grant("fuzz-*", user="fuzzed", rights="shell")
    res = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run",
            f"http://127.0.0.1:{port}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", ",".join(CHECKS),
            "--phases", "coverage,fuzzing",
            "--max-examples", "5",
            "--seed", "1",
            "--workers", "1",
            "--generation-database", "none",
            "--request-timeout", "30",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "Traceback" not in gw.log(), gw.log()[-4000:]
