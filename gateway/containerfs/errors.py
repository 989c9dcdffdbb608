"""Errors of container file operations: an errno plus a one-line message safe to show."""

from __future__ import annotations

import errno
import os

from gateway.errors import GatewayError


def show_path(path: bytes | str) -> str:
    """A path for a human: undecodable bytes as escapes, control characters made visible."""
    text = path.decode("utf-8", "backslashreplace") if isinstance(path, bytes) else path
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class FSError(GatewayError):
    """A file operation inside a container failed with ``code`` (an errno value)."""

    def __init__(self, code: int, path: bytes | str = b"", detail: str | None = None) -> None:
        reason = detail or os.strerror(code)
        super().__init__(f"{show_path(path)}: {reason}" if path else reason)
        self.code = code
        self.path = path
        self.reason = reason


class Unsupported(FSError):
    def __init__(self, what: str) -> None:
        super().__init__(errno.EOPNOTSUPP, b"", what)


class ContainerGone(FSError):
    """The helper process in the container ended (container stopped, engine gone)."""

    def __init__(self, detail: str = "the connection to the container was lost") -> None:
        super().__init__(errno.EIO, b"", detail)


class NoShell(FSError):
    """The image has no usable ``sh``: file transfer needs one (or the archive API fallback)."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.EOPNOTSUPP, b"", detail)
