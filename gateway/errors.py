"""The project's own error types.

Every error that may reach a person carries a one-line ``user_message`` that is safe to show
to an administrator (CLI, logs): no tracebacks, no secrets. What an SSH user sees is
``public_message``: the same line, except for errors about the gateway's own infrastructure,
which name no Docker endpoint, database host or exception class (admins find those in the log
and in ``/readyz``).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of all errors the gateway reports to a person."""

    exit_status = 1
    # What an SSH user is told instead of ``user_message``; None: the same line.
    public: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_message = message

    @property
    def public_message(self) -> str:
        """The line for an SSH user (no endpoint, host or exception class)."""
        return self.public if self.public is not None else self.user_message


class BadLogin(GatewayError):
    """The SSH login name does not follow the USER+CONTAINER[+LOGIN] grammar."""


class NoSuchContainer(GatewayError):
    """Unknown container, or one the user may not reach: the two look the same on purpose."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no such container, or access denied: {name}")


class AccessDenied(GatewayError):
    """The user may reach the container but not with this right or login."""


class ContainerNotRunning(GatewayError):
    def __init__(self, name: str, state: str = "not running") -> None:
        super().__init__(f"container {name} is not running ({state})")


class EngineUnavailable(GatewayError):
    """The Docker engine could not be reached or answered with an error."""

    public = "the container engine is unavailable; try again later"


class ExecFailed(GatewayError):
    """A process could not be started inside the container (no shell, unknown login, ...)."""


class StoreUnavailable(GatewayError):
    """The database could not be reached."""

    public = "the gateway cannot reach its database; try again later"


class NotFound(GatewayError):
    """An object named on the command line does not exist (user, key, group, grant)."""


class Conflict(GatewayError):
    """An object named on the command line already exists."""


class InvalidInput(GatewayError):
    """A value given on the command line or in configuration is malformed."""
