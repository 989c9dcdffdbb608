"""OpenSSH client options (ssh, scp, sftp) and keys, for tests and benchmarks.

Every client started here reads no user or system configuration, trusts whatever host key the
server under test shows and prints only errors (:data:`NO_CONFIG`). With :data:`KEYS_ONLY` it
never prompts and offers only the keys given with ``-i``, never an agent's. scp and sftp take
the same options (their port flag is ``-P``, ssh's is ``-p``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.process import HOST, SetupError

NO_CONFIG = (
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
)
KEYS_ONLY = ("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none")
CONNECT_TIMEOUT = ("-o", "ConnectTimeout=30")


def client_opts(*keys: Path | str, cipher: str | None = None) -> list[str]:
    """:data:`NO_CONFIG` and :data:`KEYS_ONLY`, ``Ciphers=cipher`` when given, then ``-i KEY``
    for each key, in order."""
    opts = [*NO_CONFIG, *KEYS_ONLY]
    if cipher is not None:
        opts += ["-o", f"Ciphers={cipher}"]
    for key in keys:
        opts += ["-i", str(key)]
    return opts


def keygen(path: Path, comment: str, kind: str = "ed25519") -> Path:
    """A new key pair without passphrase at ``path`` and ``path.pub``; returns ``path``."""
    res = subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if res.returncode != 0:
        raise SetupError(f"ssh-keygen {path} exited {res.returncode}: {res.stderr.decode()}")
    return path


def jump_config(
    path: Path, port: int, user: str, key: Path | str, *, cipher: str | None = None
) -> Path:
    """An ssh_config for ProxyJump (the README's): the gateway on loopback ``port`` as host
    ``gw`` with gateway user ``user``; for every host only ``key``, no agent, no prompt, any
    host key accepted, errors only. Then ``ssh -F PATH -J gw LOGIN@CONTAINER``."""
    lines = [
        "Host gw",
        f"    HostName {HOST}",
        f"    Port {port}",
        f"    User {user}",
        "Host *",
        f"    IdentityFile {key}",
        "    IdentitiesOnly yes",
        "    IdentityAgent none",
        "    BatchMode yes",
        "    StrictHostKeyChecking no",
        "    UserKnownHostsFile /dev/null",
        "    GlobalKnownHostsFile /dev/null",
        "    LogLevel ERROR",
        "    ConnectTimeout 30",
    ]
    if cipher is not None:
        lines.append(f"    Ciphers {cipher}")
    path.write_text("\n".join(lines) + "\n")
    return path
