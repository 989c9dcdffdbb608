"""Password hashing with argon2id (argon2-cffi). Passwords are never logged or stored in clear.

Both functions are CPU-bound (tens of milliseconds by design); call them from a worker thread
(``asyncio.to_thread``) when on an event loop.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import InvalidInput

# argon2-cffi's defaults follow RFC 9106's second recommended option (argon2id, 64 MiB, t=3).
_hasher = PasswordHasher()

MAX_PASSWORD_BYTES = 1024


def hash_password(password: str) -> str:
    """An argon2id hash string (``$argon2id$v=19$...``) of ``password``."""
    if not password:
        raise InvalidInput("empty password")
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"password longer than {MAX_PASSWORD_BYTES} bytes")
    return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("sshgw: a password nobody has")


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``password_hash``.

    With no hash (unknown user, or a user without a password) the same work is done against a
    dummy hash and False is returned, so the answer takes as long either way.
    """
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        password = password[:MAX_PASSWORD_BYTES]
        password_hash = None
    target = password_hash if password_hash else _dummy_hash()
    ok: bool
    try:
        ok = _hasher.verify(target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    return ok and bool(password_hash)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True
