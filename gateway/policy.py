"""Grants to decisions. Deny by default. Pure: data in, data out.

A grant gives a subject (a user or a group) some rights on the containers its target selects
(a name glob, an engine name glob and, optionally, labels that must all match), as some logins
inside the container.
:func:`check_grant` says whether a new grant may be stored (and in which normalized form).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Required, TypedDict, Unpack

from gateway.errors import InvalidInput
from gateway.routing import ENGINE_GLOB_RE, LOGIN_RE
from gateway.vocab import DenyReason

ANY_LOGIN = "*"
ANY_ENGINE = "*"


class Right(StrEnum):
    SHELL = "shell"
    EXEC = "exec"
    SFTP_READ = "sftp-read"
    SFTP_WRITE = "sftp-write"
    FORWARD = "forward"


KNOWN_RIGHTS: frozenset[str] = frozenset(r.value for r in Right)


@dataclass(frozen=True, slots=True)
class Grant:
    id: int
    target: str
    rights: frozenset[str]
    user: str | None = None
    group: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    logins: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    expires_at: datetime | None = None
    record: bool = True
    # Ports a ``forward`` right allows, as inclusive (first, last) ranges; empty: none.
    ports: tuple[tuple[int, int], ...] = ()
    # Engine name glob ("*": any engine, the local default's empty name included).
    engine: str = ANY_ENGINE

    @property
    def subject(self) -> str:
        return f"user {self.user}" if self.user is not None else f"group {self.group}"

    def describe(self) -> str:
        parts = [f"grant #{self.id} ({self.subject} -> {self.target}"]
        if self.engine != ANY_ENGINE:
            parts.append(f" on engine {self.engine}")
        if self.labels:
            parts.append(" " + ",".join(f"{k}={v}" for k, v in self.labels))
        parts.append(f"; rights {','.join(sorted(self.rights)) or '-'}")
        parts.append(f"; logins {','.join(self.logins) or 'image user only'}")
        if self.paths:
            parts.append(f"; paths {','.join(self.paths)}")
        if self.ports:
            parts.append(f"; ports {format_ports(self.ports)}")
        if self.expires_at is not None:
            parts.append(f"; expires {self.expires_at.isoformat(timespec='minutes')}")
        parts.append(")")
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class Subject:
    user: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Target:
    """The policy's view of a container."""

    name: str
    id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # The engine's name ("": the local default engine, when no engine is configured).
    engine: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    right: str
    message: str
    grant: Grant | None = None
    # The login to run as; None means the image's own user.
    login: str | None = None
    reason: DenyReason | None = None
    # Path prefixes the session is confined to; empty means unrestricted.
    paths: tuple[str, ...] = ()
    record: bool = True
    # ``forward``: the port asked for (None: any), and the ports the allowing grants list.
    port: int | None = None
    ports: tuple[tuple[int, int], ...] = ()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def is_expired(grant: Grant, now: datetime) -> bool:
    return grant.expires_at is not None and _aware(grant.expires_at) <= _aware(now)


def subject_matches(grant: Grant, subject: Subject) -> bool:
    if grant.user is not None:
        return grant.user == subject.user
    return grant.group is not None and grant.group in subject.groups


def target_matches(grant: Grant, target: Target) -> bool:
    name = target.name.lstrip("/")
    if not fnmatch.fnmatchcase(name, grant.target):
        return False
    if grant.engine != ANY_ENGINE and not fnmatch.fnmatchcase(target.engine, grant.engine):
        return False
    for key, want in grant.labels:
        have = target.labels.get(key)
        if have is None or not fnmatch.fnmatchcase(have, want):
            return False
    return True


IMAGE_USER = "(image user)"


def login_allowed(grant: Grant, login: str) -> bool:
    """A login asked for by name; a grant without logins allows only the image's own user."""
    return ANY_LOGIN in grant.logins or login in grant.logins


def default_login(grant: Grant) -> str | None:
    """The first login of the grant; None (the image's user) when the grant allows any."""
    if not grant.logins or grant.logins[0] == ANY_LOGIN:
        return None
    return grant.logins[0]


def _denied(
    right: str,
    reason: DenyReason,
    why: str,
    grants: Sequence[Grant] = (),
    port: int | None = None,
) -> Decision:
    """A denial saying ``why``, followed by the grants that matched; the first of them is the
    decision's grant."""
    return Decision(
        False,
        right,
        "deny: " + why + "; ".join(g.describe() for g in grants),
        grant=grants[0] if grants else None,
        reason=reason,
        port=port,
    )


def decide(
    subject: Subject,
    grants: Iterable[Grant],
    target: Target,
    right: str,
    login: str | None = None,
    now: datetime | None = None,
    *,
    exact: bool = False,
    port: int | None = None,
) -> Decision:
    """Decide whether ``subject`` may use ``right`` on ``target`` as ``login``.

    Deny by default. Grants are considered in id order; the first one that allows decides the
    login when none was asked for. With ``exact`` the login is already settled (a further right
    of a running session): ``login=None`` then means the image's own user, and only grants that
    allow that user count (see :func:`decide_as`). For ``forward`` only grants whose ports
    include ``port`` count (``port=None``: grants that list any port); a grant without ports
    allows none.
    """
    now = now or datetime.now(UTC)
    ordered = sorted(grants, key=lambda g: g.id)
    matching = [g for g in ordered if subject_matches(g, subject) and target_matches(g, target)]
    who = f"{subject.user}"
    if subject.groups:
        who += f" (groups: {','.join(sorted(subject.groups))})"
    if not matching:
        return _denied(
            right, DenyReason.NO_GRANT, f"no grant for {who} matches container {target.name}"
        )
    live = [g for g in matching if not is_expired(g, now)]
    if not live:
        return _denied(
            right,
            DenyReason.EXPIRED,
            f"every grant for {who} on {target.name} has expired: ",
            matching,
        )
    with_right = [g for g in live if right in g.rights]
    if not with_right:
        return _denied(
            right,
            DenyReason.RIGHT_MISSING,
            f"no grant gives right {right!r} to {who} on {target.name}; matching: ",
            live,
            port,
        )
    if right == Right.FORWARD:
        with_port = [
            g for g in with_right if g.ports and (port is None or port_allowed(g.ports, port))
        ]
        if not with_port:
            what = f"port {port}" if port is not None else "any port"
            return _denied(
                right,
                DenyReason.PORT_NOT_ALLOWED,
                f"no grant with right 'forward' allows {what} to {who} on {target.name}; "
                "matching: ",
                with_right,
                port,
            )
        with_right = with_port
    if login is None and exact:
        allowing = [g for g in with_right if not g.logins or ANY_LOGIN in g.logins]
        if not allowing:
            return _denied(
                right,
                DenyReason.LOGIN_NOT_ALLOWED,
                f"the image's user is not allowed for {who} on {target.name} with right "
                f"{right!r}; matching: ",
                with_right,
            )
        chosen = allowing[0]
        run_as = None
    elif login is None:
        chosen = with_right[0]
        run_as = default_login(chosen)
        allowing = [
            g for g in with_right if default_login(g) == run_as or login_allowed(g, run_as or "")
        ]
    else:
        allowing = [g for g in with_right if login_allowed(g, login)]
        if not allowing:
            return _denied(
                right,
                DenyReason.LOGIN_NOT_ALLOWED,
                f"login {login!r} is not allowed for {who} on {target.name}; matching: ",
                with_right,
                port,
            )
        chosen = allowing[0]
        run_as = login
    paths = _merge_paths(allowing)
    shown_login = run_as if run_as is not None else "the image's user"
    shown_port = f" to port {port}" if port is not None and right == Right.FORWARD else ""
    return Decision(
        True,
        right,
        f"allow: {chosen.describe()} gives {right}{shown_port} as {shown_login}",
        grant=chosen,
        login=run_as,
        paths=paths,
        record=chosen.record,
        port=port,
        ports=_merge_ports(allowing) if right == Right.FORWARD else (),
    )


def decide_as(
    subject: Subject,
    grants: Iterable[Grant],
    target: Target,
    right: str,
    login: str | None,
    now: datetime | None = None,
) -> Decision:
    """A further right for a session that already runs as ``login`` (None: the image's user).

    Only grants that give ``right`` *for that login* count, and the decision's paths come from
    those grants alone: a write grant for ``root`` never makes an ``app`` session writable, and a
    read grant's paths never widen where a write grant lets the session write.
    """
    return decide(subject, grants, target, right, login, now, exact=True)


def _merge_ports(grants: Sequence[Grant]) -> tuple[tuple[int, int], ...]:
    """The union of the grants' port ranges, sorted and joined."""
    return normalize_ports([r for g in grants for r in g.ports])


def _merge_paths(grants: Sequence[Grant]) -> tuple[str, ...]:
    """Union of path prefixes; unrestricted as soon as one allowing grant has none."""
    merged: list[str] = []
    for g in grants:
        if not g.paths:
            return ()
        for p in g.paths:
            norm = normalize_prefix(p)
            if norm not in merged:
                merged.append(norm)
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class Access:
    """What a subject may do on one container (for listings)."""

    rights: frozenset[str]
    logins: tuple[str, ...]


def access(
    subject: Subject, grants: Iterable[Grant], target: Target, now: datetime | None = None
) -> Access | None:
    """Union of live grants' rights and logins on ``target``; None when nothing applies."""
    now = now or datetime.now(UTC)
    rights: set[str] = set()
    logins: list[str] = []
    found = False
    for g in sorted(grants, key=lambda g: g.id):
        if subject_matches(g, subject) and target_matches(g, target) and not is_expired(g, now):
            found = True
            rights |= g.rights
            for login in g.logins or (IMAGE_USER,):
                if login not in logins:
                    logins.append(login)
    if not found or not rights:
        return None
    return Access(frozenset(rights), tuple(logins))


def normalize_prefix(path: str) -> str:
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if norm in ("/", "//") else norm.rstrip("/")


def path_allowed(paths: Sequence[str], resolved: str) -> bool:
    """True when the absolute, already resolved ``resolved`` lies under one of ``paths``.

    An empty ``paths`` means unrestricted. Matching is by whole path components, so
    ``/srv/app`` allows ``/srv/app`` and ``/srv/app/x`` but not ``/srv/application``.
    """
    if not paths:
        return True
    norm = posixpath.normpath("/" + resolved.lstrip("/"))
    for prefix in paths:
        p = normalize_prefix(prefix)
        if p == "/" or norm == p or norm.startswith(p + "/"):
            return True
    return False


# Ports -----------------------------------------------------------------------------------------

PORT_MAX = 65535
PORT_RANGES_MAX = 64  # ranges one grant may list


def normalize_ports(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted ranges, overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``80,8000-8100`` as ranges ``((80, 80), (8000, 8100))``; raise ValueError when malformed.

    Ports are 1-65535 in decimal; a range is ``FIRST-LAST`` with FIRST <= LAST; spaces around
    items are ignored; an empty text is no port.
    """
    ranges: list[tuple[int, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        first, sep, last = item.partition("-")
        bounds = (first.strip(), last.strip()) if sep else (first.strip(), first.strip())
        if not all(b.isascii() and b.isdigit() and len(b) <= 5 for b in bounds):
            raise ValueError(f"invalid port or range {item!r} (use 80 or 8000-8100)")
        lo, hi = int(bounds[0]), int(bounds[1])
        if not 1 <= lo <= PORT_MAX or not 1 <= hi <= PORT_MAX:
            raise ValueError(f"port out of range in {item!r} (1-{PORT_MAX})")
        if lo > hi:
            raise ValueError(f"empty port range {item!r} (first > last)")
        ranges.append((lo, hi))
    if len(ranges) > PORT_RANGES_MAX:
        raise ValueError(f"too many ports or ranges (at most {PORT_RANGES_MAX})")
    return normalize_ports(ranges)


def format_ports(ranges: Iterable[tuple[int, int]]) -> str:
    """Ranges as ``80,8000-8100`` (what :func:`parse_ports` reads)."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def port_allowed(ranges: Sequence[tuple[int, int]], port: int) -> bool:
    """True when ``port`` lies in one of ``ranges`` (no ranges: no port)."""
    return any(first <= port <= last for first, last in ranges)


def parse_rights(text: str) -> frozenset[str]:
    """Parse ``shell,exec`` into a set of known rights; raise ValueError on unknown ones."""
    rights = {r.strip() for r in text.split(",") if r.strip()}
    unknown = rights - KNOWN_RIGHTS
    if unknown:
        raise ValueError(
            f"unknown right(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_RIGHTS))}"
        )
    if not rights:
        raise ValueError("no rights given")
    return frozenset(rights)


# Grant validation: what may be stored ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """A new grant, validated and normalized (what :func:`check_grant` returns)."""

    user: str | None
    group: str | None
    target: str
    labels: tuple[tuple[str, str], ...]  # in the order given, each key once
    rights: frozenset[str]
    logins: tuple[str, ...]  # in the order given (the first is the default), each once
    paths: tuple[str, ...]  # normalized absolute prefixes, each once
    ports: tuple[tuple[int, int], ...] = ()  # for ``forward``: sorted, joined ranges
    engine: str = ANY_ENGINE  # engine name glob


class GrantFields(TypedDict, total=False):
    """The fields of a new grant as people give them (``sshgw grant add``, ``Store.add_grant``)."""

    user: str | None
    group: str | None
    target: Required[str]
    labels: Mapping[str, str] | Iterable[tuple[str, str]]
    rights: Required[str | Iterable[str]]
    logins: Sequence[str]
    paths: Sequence[str]
    ports: str
    engine: str


def check_grant(**fields: Unpack[GrantFields]) -> GrantSpec:
    """Validate a new grant for exactly one of ``user`` / ``group``; raise
    :class:`~gateway.errors.InvalidInput` with a message for people otherwise."""
    user, group = fields.get("user"), fields.get("group")
    if (user is None) == (group is None):
        raise InvalidInput("a grant needs exactly one subject: a user or a group")
    rights = check_rights(fields.get("rights", ""))
    ports = check_ports(fields.get("ports", ""))
    if ports and Right.FORWARD not in rights:
        raise InvalidInput("--ports is for the 'forward' right; add it to --rights")
    return GrantSpec(
        user=user,
        group=group,
        target=check_target(fields.get("target", "")),
        labels=tuple(check_labels(fields.get("labels", ())).items()),
        rights=rights,
        logins=check_logins(fields.get("logins", ())),
        paths=check_paths(fields.get("paths", ())),
        ports=ports,
        engine=check_engine_glob(fields.get("engine", ANY_ENGINE)),
    )


def check_engine_glob(glob: str) -> str:
    """An engine name glob (``host*``, ``host[12]``, ``*``): engine-name characters and glob
    characters only."""
    glob = glob.strip() if isinstance(glob, str) else ""
    if not ENGINE_GLOB_RE.fullmatch(glob):
        raise InvalidInput(
            f"invalid --engine glob {glob!r} (engine names: a-z, 0-9 and '-'; globs: * ? [...])"
        )
    return glob


def check_target(target: str) -> str:
    target = target.strip() if isinstance(target, str) else ""
    if not target:
        raise InvalidInput("a grant needs a target (a container name glob such as 'web*' or '*')")
    if not target.isprintable() or any(c.isspace() for c in target) or "/" in target:
        raise InvalidInput(f"invalid target glob {target!r}")
    return target


def check_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not key or not key.isprintable() or "=" in key:
            raise InvalidInput(f"invalid label key {key!r}")
        if not isinstance(value, str) or not value.isprintable():
            raise InvalidInput(f"invalid label value for {key!r}")
        if key in out and out[key] != value:
            raise InvalidInput(f"label {key!r} given twice")
        out[key] = value
    return out


def check_rights(rights: str | Iterable[str]) -> frozenset[str]:
    text = rights if isinstance(rights, str) else ",".join(rights)
    try:
        return parse_rights(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def check_ports(ports: str) -> tuple[tuple[int, int], ...]:
    try:
        return parse_ports(ports)
    except ValueError as exc:
        raise InvalidInput(f"--ports: {exc}") from None


def check_logins(logins: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for login in logins:
        login = login.strip()
        if not login:
            continue
        if login != ANY_LOGIN and not LOGIN_RE.fullmatch(login):
            raise InvalidInput(f"invalid login {login!r} (a user name, uid[:gid], or '*')")
        if login not in out:
            out.append(login)
    return tuple(out)


def check_paths(paths: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for path in paths:
        if not path.startswith("/"):
            raise InvalidInput(f"path {path!r} must be absolute (start with '/')")
        if "\n" in path or "\0" in path or not path.isprintable():
            raise InvalidInput(f"invalid path {path!r}")
        norm = normalize_prefix(path)
        if norm not in out:
            out.append(norm)
    return tuple(out)
