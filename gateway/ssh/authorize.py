"""Which right a session needs, what the grants decide, and what a denied user is told. Pure.

The session reads the grants and the container (I/O); this module turns them into a
:class:`~gateway.policy.Decision` per right, and a denial into the one error the user sees:
a container the user has no grant on is "no such container" (its existence is not revealed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.errors import AccessDenied, GatewayError, NoSuchContainer
from gateway.policy import Decision, Grant, Right, Subject, decide, decide_as
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


def policy_target(container: Container) -> PolicyTarget:
    return PolicyTarget(container.name, container.id, container.labels)


def decide_session(
    ident: Identity, grants: Iterable[Grant], container: Container, right: str
) -> Decision:
    """May ``ident`` use ``right`` on ``container``, as the login asked for in the login name?"""
    return decide(
        Subject(ident.user, ident.groups),
        grants,
        policy_target(container),
        right,
        ident.target.login,
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
    if reason is DenyReason.LOGIN_NOT_ALLOWED:
        return AccessDenied(
            f"access denied: login {ident.target.login!r} is not allowed on {container.name}"
        )
    return AccessDenied(f"access denied: you have no {decision.right} right on {container.name}")
