"""What kind of session a channel request is (gateway.ssh.channel.classify_request)."""

from __future__ import annotations

import pytest

from gateway.ssh.channel import classify_request


@pytest.mark.parametrize(
    ("subsystem", "command", "kind"),
    [
        ("sftp", None, "sftp"),
        (None, None, "shell"),
        (None, "id -un", "exec"),
        (None, "", "exec"),
        # Legacy scp (scp -O): the gateway answers "scp -t" (upload) and "scp -f" (download).
        (None, "scp -t /tmp", "scp"),
        (None, "scp -f /etc/hostname", "scp"),
        (None, "scp -v -r -t -- /tmp", "scp"),
        (None, "scp -pt .", "scp"),
        # Anything else named scp runs in the container like any command.
        (None, "scp --version", "exec"),  # "--" options are not scp's server flags
        (None, "scp /a /b", "exec"),
        (None, "scp", "exec"),
        (None, "scpx -t /tmp", "exec"),
        (None, "sh -c 'scp -t /tmp'", "exec"),
    ],
)
def test_classify_request(subsystem: str | None, command: str | None, kind: str) -> None:
    assert classify_request(subsystem, command) == kind
