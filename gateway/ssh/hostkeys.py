"""Host keys: generated on first start in the data directory, mode 0600, loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

HOST_KEY_FILES = (
    ("ssh_host_ed25519_key", "ssh-ed25519"),
    ("ssh_host_ecdsa_key", "ecdsa-sha2-nistp256"),
)


def ensure_host_keys(data_dir: Path) -> list[asyncssh.SSHKey]:
    """Load the host keys, creating missing ones (ed25519 and ECDSA P-256)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    keys: list[asyncssh.SSHKey] = []
    for name, alg in HOST_KEY_FILES:
        path = data_dir / name
        if not path.exists():
            key = asyncssh.generate_private_key(alg)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.export_private_key())
            pub = key.export_public_key()
            (data_dir / (name + ".pub")).write_bytes(pub)
        else:
            os.chmod(path, 0o600)
            key = asyncssh.read_private_key(str(path))
        keys.append(key)
    return keys


def fingerprints(data_dir: Path) -> list[tuple[str, str]]:
    """(algorithm, SHA256 fingerprint) of each host key, creating them when missing."""
    return [(k.get_algorithm(), k.get_fingerprint("sha256")) for k in ensure_host_keys(data_dir)]


def known_hosts_lines(keys: list[asyncssh.SSHKey], names: str) -> list[str]:
    """``NAMES ALGORITHM BASE64`` for each key: what a client adds to its known_hosts (for
    ProxyJump, the containers' names or a HostKeyAlias: every container shows these keys)."""
    lines = []
    for key in keys:
        alg, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
        lines.append(f"{names} {alg} {blob}")
    return lines
