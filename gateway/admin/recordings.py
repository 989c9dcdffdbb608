"""A session's recording file (asciicast v2), for ``sshgw replay`` and the API's download."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.store import SessionRecord


def recording_file(row: SessionRecord) -> Path:
    """The recording of a session, written out from its spool when a gateway stopped before
    doing so; NotFound when it has none, Conflict while it is being recorded. Blocking file
    I/O (run it in a thread in the gateway)."""
    from gateway.observe.recorder import CastError, convert_spool, spool_in_use, spool_path

    if not row.recording_path:
        raise NotFound(
            f"session {row.id} has no recording (only PTY sessions with recording on are recorded)"
        )
    path = Path(row.recording_path)
    spool = spool_path(path)
    if not path.exists() and spool.exists():
        if spool_in_use(spool):
            raise Conflict(f"session {row.id} is still being recorded; replay it once it has ended")
        try:  # left by a gateway that stopped before writing the recording out
            convert_spool(spool, path)
        except (OSError, CastError) as exc:
            raise InvalidInput(f"cannot read the recording spool {spool}: {exc}") from None
    if not path.is_file():
        raise NotFound(f"recording file {path} is missing")
    return path
