"""Login grammar: ``USER``, ``USER+CONTAINER`` or ``USER+CONTAINER+LOGIN``; CONTAINER may be
qualified by its engine as ``NAME.ENGINE`` (:func:`split_qualified`).

Pure functions only: no I/O, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import BadLogin

# Gateway user names: like POSIX user names, a little more permissive (dots, @ for e-mail style).
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
# Docker container names ([a-zA-Z0-9][a-zA-Z0-9_.-]+) and hex ID prefixes.
CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Engine names (``sshgw engine add NAME``): lower-case letters, digits and '-', starting with a
# letter or digit; no dot, so ``CONTAINER.ENGINE`` splits at its last dot.
ENGINE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Engine name globs in grants (``--engine 'host*'``).
ENGINE_GLOB_RE = re.compile(r"^[a-z0-9*?\[\]!-]{1,63}$")
# Logins inside the container: a user name or a numeric uid[:gid].
LOGIN_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}(?::[0-9]{1,10})?)$")

MAX_LOGIN_LEN = 256


@dataclass(frozen=True, slots=True)
class Target:
    """What a login name asks for."""

    user: str
    container: str | None = None
    login: str | None = None


def valid_user_name(name: str) -> bool:
    return bool(USER_RE.fullmatch(name))


def parse_login(raw: str) -> Target:
    """Split an SSH login name into gateway user, container and in-container login.

    Raises :class:`BadLogin` with a message safe to show for anything malformed.
    """
    if not raw:
        raise BadLogin("empty login name")
    if len(raw) > MAX_LOGIN_LEN:
        raise BadLogin("login name too long")
    if not raw.isprintable() or any(c.isspace() for c in raw):
        raise BadLogin("login name contains control or space characters")
    parts = raw.split("+")
    if len(parts) > 3:
        raise BadLogin("login name has too many '+' parts (USER+CONTAINER+LOGIN)")
    user = parts[0]
    if not USER_RE.fullmatch(user):
        raise BadLogin("malformed user name")
    container: str | None = None
    login: str | None = None
    if len(parts) >= 2:
        container = parts[1]
        if not CONTAINER_RE.fullmatch(container):
            raise BadLogin("malformed container name")
    if len(parts) == 3:
        login = parts[2]
        if not LOGIN_RE.fullmatch(login):
            raise BadLogin("malformed login")
    return Target(user=user, container=container, login=login)


def split_qualified(ref: str) -> tuple[str, str] | None:
    """``CONTAINER.ENGINE`` split at its last dot, or None when ``ref`` is not of that form.

    Container names may contain dots themselves: the caller tries ``ref`` as an exact name first
    and this split only when no container has that name.
    """
    name, dot, engine = ref.rpartition(".")
    if not dot or not ENGINE_RE.fullmatch(engine) or not CONTAINER_RE.fullmatch(name):
        return None
    return name, engine
