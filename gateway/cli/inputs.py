"""What people type into the CLI: dates, passwords, public keys (each refused with one clear line)."""

from __future__ import annotations

import getpass
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from gateway.cli.show import fmt_time
from gateway.errors import InvalidInput

# Dates --------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\+(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DATE_HELP = "YYYY-MM-DD (00:00 UTC), an ISO date-time (UTC unless an offset is given), or +30d/+12h"


def parse_when(text: str, *, now: datetime | None = None, future: bool = True) -> datetime:
    """``YYYY-MM-DD``, an ISO 8601 date-time, or relative ``+N[smhdw]`` -> aware UTC datetime."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    when: datetime
    m = _RELATIVE.fullmatch(raw)
    if m:
        when = now + timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    else:
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                d = date.fromisoformat(raw)
                when = datetime(d.year, d.month, d.day, tzinfo=UTC)
            else:
                when = datetime.fromisoformat(raw.replace(" ", "T", 1))
                when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
        except ValueError:
            raise InvalidInput(f"invalid date {text!r}: use {DATE_HELP}") from None
    when = when.astimezone(UTC)
    if future and when <= now:
        raise InvalidInput(f"date {text!r} ({fmt_time(when)}) is in the past")
    return when


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
