"""What people type into the CLI: dates, passwords, public keys (each refused with one clear line)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from gateway.admin.when import DATE_HELP, parse_expiry, parse_when
from gateway.errors import InvalidInput

__all__ = ["DATE_HELP", "parse_expiry", "parse_when", "read_key_arg", "read_password"]

# Dates: the rules live in gateway.admin.when (the API reads the same words).


def read_password(prompt_user: str) -> str:
    """A password from standard input: one line from a pipe, or asked twice on a terminal."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {prompt_user}: ")
        second = getpass.getpass("Again: ")
        if first != second:
            raise InvalidInput("the passwords do not match")
        password = first
    else:
        password = sys.stdin.readline()
        password = password.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InvalidInput("empty password on standard input")
    return password


_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-", "---- BEGIN SSH2 PUBLIC KEY", "-----BEGIN")


def read_key_arg(value: str) -> str:
    """FILE_OR_TEXT: ``-`` (standard input), a file path, or the key text itself."""
    if value == "-":
        return sys.stdin.read(1 << 16)
    stripped = value.strip()
    if stripped.startswith(_KEY_PREFIXES):
        return value
    path = Path(value).expanduser()
    try:
        if path.is_file():
            if path.stat().st_size > 1 << 16:
                raise InvalidInput(f"{value}: too large for a public key file")
            return path.read_text(errors="replace")
        if path.exists():
            raise InvalidInput(f"{value}: not a regular file")
    except OSError as exc:
        raise InvalidInput(f"cannot read {value}: {exc.strerror or exc}") from None
    raise InvalidInput(f"{value}: no such file, and not a public key ('ssh-ed25519 AAAA...')")
