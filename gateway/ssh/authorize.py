"""Which right a session needs, what the grants decide, and what a denied user is told. Pure.

The session reads the grants and the container (I/O); this module turns them into a
:class:`~gateway.policy.Decision` per right, and a denial into the one error the user sees:
a container the user has no grant on is "no such container" (its existence is not revealed).
``sshgw check`` asks the same question through :func:`decide_access`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.errors import AccessDenied, GatewayError, NoSuchContainer
from gateway.policy import Decision, Grant, Right, Subject, access, decide, decide_as
from gateway.policy import Target as PolicyTarget
from gateway.vocab import DenyReason, SessionKind

if TYPE_CHECKING:
    from gateway.engines import Container
    from gateway.ssh.context import Identity

# The right each session kind needs before it starts.
KIND_RIGHT: dict[SessionKind, Right] = {
    SessionKind.SHELL: Right.SHELL,
    SessionKind.EXEC: Right.EXEC,
    SessionKind.SFTP: Right.SFTP_READ,
    SessionKind.SCP: Right.SFTP_READ,
}


def policy_target(container: Container | str) -> PolicyTarget:
    """The policy's view of ``container``; a bare name (a container the engine does not know)
    is matched by name only, without labels."""
    if isinstance(container, str):
        return PolicyTarget(container)
    return PolicyTarget(container.name, container.id, container.labels, container.engine)


def decide_access(
    user: str,
    groups: frozenset[str],
    grants: Iterable[Grant],
    container: Container | str,
    right: str,
    login: str | None,
    *,
    disabled: bool = False,
    port: int | None = None,
) -> Decision:
    """May ``user`` (a member of ``groups``) use ``right`` on ``container`` as ``login`` (None:
    the grant's default)? For ``forward``, ``port`` is the port in the container (None: any
    port a grant lists). The decision explains itself in ``message``. A disabled user is
    denied; the message then says what the grants would decide once the user is enabled."""
    decision = decide(
        Subject(user, groups), grants, policy_target(container), right, login, port=port
    )
    if not disabled:
        return decision
    return Decision(
        False,
        right,
        f"deny: user {user} is disabled (with the user enabled: {decision.message})",
        grant=decision.grant,
        reason=decision.reason,
    )


def decide_session(
    ident: Identity, grants: Iterable[Grant], container: Container, right: str
) -> Decision:
    """May ``ident`` use ``right`` on ``container``, as the login asked for in the login name?"""
    return decide_access(ident.user, ident.groups, grants, container, right, ident.target.login)


def decide_forward(
    ident: Identity, grants: Iterable[Grant], container: Container, port: int
) -> Decision:
    """May ``ident`` forward a connection to ``port`` in ``container`` (right ``forward`` from a
    grant whose ports include it), as the login asked for in the login name?"""
    return decide_access(
        ident.user, ident.groups, grants, container, Right.FORWARD, ident.target.login, port=port
    )


def decide_write(
    ident: Identity, grants: Iterable[Grant], container: Container, session: Decision
) -> Decision:
    """Writing, for a file session: decided for the session's own login, with the paths of the
    write grants."""
    return decide_as(
        Subject(ident.user, ident.groups),
        grants,
        policy_target(container),
        Right.SFTP_WRITE,
        session.login,
    )


def deny_reason(decision: Decision) -> DenyReason:
    return decision.reason or DenyReason.NO_GRANT


def denial(decision: Decision, ident: Identity, container: Container) -> GatewayError:
    """The error a denied ``decision`` is shown to the user as."""
    reason = deny_reason(decision)
    if reason in (DenyReason.NO_GRANT, DenyReason.EXPIRED):
        return NoSuchContainer(ident.target.container or container.name)
    if reason is DenyReason.PORT_NOT_ALLOWED:
        return AccessDenied(
            f"access denied: port {decision.port} is not allowed on {container.name}"
        )
    if reason is DenyReason.LOGIN_NOT_ALLOWED:
        return AccessDenied(
            f"access denied: login {ident.target.login!r} is not allowed on {container.name}"
        )
    return AccessDenied(f"access denied: you have no {decision.right} right on {container.name}")


def reachable(
    ident: Identity, grants: Iterable[Grant], candidates: Iterable[Container]
) -> list[Container]:
    """The ``candidates`` some live grant gives ``ident`` any right on (a name found on several
    engines is named to the user only where it may reach it)."""
    subject = Subject(ident.user, ident.groups)
    grants = list(grants)
    return [c for c in candidates if access(subject, grants, policy_target(c)) is not None]
