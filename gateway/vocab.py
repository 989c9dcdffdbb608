"""The words sessions are counted, audited and stored under. Pure: stdlib only.

Each is a :class:`~enum.StrEnum` whose values are the strings written to metric labels, audit
events and the ``sessions`` table, so a member compares, formats and serializes as that string.
"""

from __future__ import annotations

from enum import StrEnum


class SessionKind(StrEnum):
    """What a session channel does (:func:`gateway.ssh.channel.classify_request`)."""

    SHELL = "shell"
    EXEC = "exec"
    SFTP = "sftp"
    SCP = "scp"  # legacy ``scp -t|-f``, answered by the gateway itself
    LIST = "list"  # ``ssh user@gw`` with no container: the containers the user may reach
    FORWARD = "forward"  # ``ssh -L`` / ``ssh -D``: one forwarded TCP connection into a container


class EndReason(StrEnum):
    """Why a session ended (``sessions.end_reason``, ``sshgw_sessions_ended{result}``)."""

    EXIT = "exit"  # the process (or file transfer, or listing) finished
    CLIENT_GONE = "client_gone"
    CONTAINER_GONE = "container_gone"
    KILLED = "killed"  # by an administrator (``sshgw sessions kill``)
    REVOKED = "revoked"  # the connection's user or credential is no longer valid
    SHUTDOWN = "shutdown"  # the gateway stopped
    ERROR = "error"


class DenyReason(StrEnum):
    """Why a session was refused (``Decision.reason``, ``sshgw_access_denied{reason}``)."""

    NO_GRANT = "no_grant"
    RIGHT_MISSING = "right_missing"
    LOGIN_NOT_ALLOWED = "login_not_allowed"
    PATH_RULE = "path_rule"
    EXPIRED = "expired"
    PORT_NOT_ALLOWED = "port_not_allowed"  # a forward to a port no ``--ports`` of a grant lists
    DEST_NOT_ALLOWED = "dest_not_allowed"  # a forward to anything but the container itself
    # Not a policy decision: the connection's user or credential was revoked.
    REVOKED = "revoked"
