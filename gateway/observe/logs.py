"""Structured logs: plain text by default, one JSON object per line by a switch.

Every line carries the connection id and session id of the task that wrote it (``conn`` and
``session``), taken from two context variables the SSH server sets for each connection and channel.
Nothing here ever formats a secret: callers log names, ids and reasons, never keys or passwords.
Control characters in messages (a user's command, a hostile file name) are written escaped
(``gateway.safetext``): a log line never drives a terminal and never spans two lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, TextIO

from gateway.config import Settings
from gateway.safetext import json_terminal_safe, literal

conn_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("conn_id", default=None)
session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "session_id", default=None
)

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is shown.
_RESERVED = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "conn_id", "session_id"}
)
# Field names that are never written, whatever a caller passes in ``extra=``.
_SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "private_key", "passphrase"})


class ContextFilter(logging.Filter):
    """Put the current connection and session ids on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "conn_id"):
            record.conn_id = conn_id_var.get()
        if not hasattr(record, "session_id"):
            record.session_id = session_id_var.get()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _RESERVED or key.startswith("_"):
            continue
        out[key] = "***" if key.lower() in _SECRET_KEYS else value
    return out


class PlainFormatter(logging.Formatter):
    """``2024-05-01T12:00:00.123Z INFO  gateway.ssh [conn=ab12 session=cd34] message k=v``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ms = int(record.msecs)
        ids = []
        conn = getattr(record, "conn_id", None)
        sess = getattr(record, "session_id", None)
        if conn:
            ids.append(f"conn={conn}")
        if sess:
            ids.append(f"session={sess}")
        ctx = f" [{' '.join(ids)}]" if ids else ""
        # Messages quote what users and containers chose (commands, paths, names): escaped, so
        # that nothing in them acts on the terminal of whoever reads the log, or forges a line.
        extras = "".join(f" {k}={literal(v)}" for k, v in _extras(record).items())
        msg = literal(record.getMessage())
        line = f"{ts}.{ms:03d}Z {record.levelname:<5} {record.name}{ctx} {msg}{extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, conn_id, session_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "conn_id": getattr(record, "conn_id", None),
            "session_id": getattr(record, "session_id", None),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json_terminal_safe(json.dumps(doc, default=str, ensure_ascii=False))


def setup_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure the root logger once: format from ``settings.log_format``, level from
    ``settings.log_level``. Calling it again replaces the handler it installed before."""
    level_name = settings.log_level.upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    fmt = settings.log_format.lower()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("sshgw")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "sshgw":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # asyncssh logs every packet-level step at INFO; keep it for debugging only.
    logging.getLogger("asyncssh").setLevel(level if level <= logging.DEBUG else logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters (password hashes among them).
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
