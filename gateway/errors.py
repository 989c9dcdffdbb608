"""The project's own error types.

Every error that may reach a person carries a one-line ``user_message`` that is safe to show:
no tracebacks, no secrets, no internal identifiers beyond what the person typed.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of all errors the gateway reports to a person."""

    exit_status = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_message = message


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


class ExecFailed(GatewayError):
    """A process could not be started inside the container (no shell, unknown login, ...)."""


class StoreUnavailable(GatewayError):
    """The database could not be reached."""


class NotFound(GatewayError):
    """An object named on the command line does not exist (user, key, group, grant)."""


class Conflict(GatewayError):
    """An object named on the command line already exists."""


class InvalidInput(GatewayError):
    """A value given on the command line or in configuration is malformed."""
