"""``sshgw audit``, ``sshgw sessions [show|kill]`` and ``sshgw replay``.

These read the ``audit_events`` and ``sessions`` tables the gateway writes. ``sessions kill``
works while the gateway runs as another process: it sets ``kill_requested`` on the session's row
and the gateway (whichever replica runs it), which polls for such rows every second while it has
sessions open, ends the session and tells the user. A session whose replica sent no heartbeat
for three ``heartbeat_interval`` is marked ended at once (``gateway_lost``): nothing runs it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.common import actor, open_store, run, settings
from gateway.cli.inputs import parse_when
from gateway.cli.show import JsonOpt, pick, print_json, say, table
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.store import AuditRecord, SessionRecord
from gateway.store.replicas import LOST
from gateway.vocab import EndReason

# The recordings module is imported only by `replay`, so every other command starts quickly.


sessions_app = typer.Typer(
    help="Sessions: list them, show one, end a running one.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
    app.add_typer(sessions_app, name="sessions")
    app.command("replay")(replay_cmd)


# Helpers ------------------------------------------------------------------------------------

_AGO = re.compile(r"^(\d{1,7})\s*([smhdw])$")
_AGO_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` (that long ago), or a date / ISO date-time."""
    now = now or datetime.now(UTC)
    m = _AGO.fullmatch(text.strip())
    if m:
        return now - timedelta(**{_AGO_UNITS[m.group(2)]: int(m.group(1))})
    try:
        return parse_when(text, now=now, future=False)
    except InvalidInput:
        raise InvalidInput(
            f"invalid --since {text!r}: use 30m, 1h, 2d, 1w, YYYY-MM-DD or an ISO date-time"
        ) from None


def _ts(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def _detail_text(kind: str, detail: dict[str, Any]) -> str:
    d = dict(detail)
    parts: list[str] = []
    if kind == "admin":
        parts.append(str(d.pop("action", "?")))
    order = ("method", "result", "kind", "login", "op", "path", "command", "exit_status", "reason")
    for key in order:
        if d.get(key) not in (None, ""):
            parts.append(f"{key}={d.pop(key)}")
    for key, value in d.items():
        if value not in (None, "", [], {}):
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _session_status(row: SessionRecord) -> str:
    if row.ended_at is None:
        return "killing" if row.kill_requested else "active"
    reason = row.end_reason or "ended"
    if row.exit_status is None:
        return str(reason)
    if reason == EndReason.EXIT:
        return f"exit {row.exit_status}"
    return f"{reason}, status {row.exit_status}"


def _session_seconds(row: SessionRecord, now: datetime) -> float:
    end: datetime = row.ended_at or now
    started: datetime = row.started_at
    return max(0.0, (end - started).total_seconds())


def _session_json(row: SessionRecord, now: datetime) -> dict[str, Any]:
    return {
        **pick(row, "id user=user_name"),
        "container": row.container or None,
        **pick(row, "container_id login kind command remote=remote_addr started_at ended_at"),
        "active": row.ended_at is None,
        "duration": round(_session_seconds(row, now), 3),
        **pick(row, "bytes_in bytes_out exit_status end_reason"),
        "kill_requested": bool(row.kill_requested),
        "recording": row.recording_path,
        "replica": row.replica,
    }


def _event_json(row: AuditRecord) -> dict[str, Any]:
    return pick(
        row, "id ts kind actor user=user_name container remote=remote_addr session_id detail"
    )


# sshgw audit --------------------------------------------------------------------------------


def audit_cmd(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events newer than this: 30m, 1h, 2d, or a date."),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this gateway user.")] = None,
    container: Annotated[
        str | None, typer.Option("--container", help="Only this container.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Only this kind: login, session (session.start, session.end), file, denied, "
            "admin.",
        ),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Only events of this session id.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many (the newest) events.")
    ] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit trail: logins, sessions, file operations, denials and admin changes."""
    cfg = settings(ctx)
    since_at = parse_since(since) if since else None

    async def go() -> list[AuditRecord]:
        async with open_store(cfg) as store:
            return await store.audit_events(
                since=since_at,
                user=user,
                container=container,
                kind=kind,
                session=session,
                limit=limit + 1,
            )

    rows = run(go())
    truncated = len(rows) > limit
    rows = list(reversed(rows[:limit]))
    if as_json:
        print_json([_event_json(r) for r in rows])
    elif not rows:
        say("no audit events match")
    else:
        table(
            ("TIME (UTC)", "KIND", "USER", "CONTAINER", "FROM", "SESSION", "DETAIL"),
            [
                (
                    _ts(r.ts),
                    r.kind,
                    r.user_name or "-",
                    r.container or "-",
                    r.actor or r.remote_addr or "-",
                    (r.session_id or "-")[:12],
                    _detail_text(r.kind, r.detail or {}),
                )
                for r in rows
            ],
        )
    if truncated:
        print(
            f"(only the newest {limit} events are shown; use --limit or --since)", file=sys.stderr
        )


# sshgw sessions -----------------------------------------------------------------------------


@sessions_app.callback()
def sessions_list(
    ctx: typer.Context,
    active: Annotated[bool, typer.Option("--active", help="Only sessions still running.")] = False,
    user: Annotated[str | None, typer.Option("--user", help="Only this gateway user.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many (the newest) sessions.")
    ] = 200,
    as_json: JsonOpt = False,
) -> None:
    """List sessions (newest last). `sshgw sessions show ID`, `sshgw sessions kill ID`."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = settings(ctx)

    async def go() -> list[SessionRecord]:
        async with open_store(cfg) as store:
            return await store.list_sessions(active=active, user=user, limit=limit)

    rows = list(reversed(run(go())))
    now = datetime.now(UTC)
    if as_json:
        print_json([_session_json(r, now) for r in rows])
        return
    if not rows:
        say("no active sessions" if active else "no sessions")
        return
    table(
        (
            "ID",
            "USER",
            "CONTAINER",
            "LOGIN",
            "KIND",
            "STARTED (UTC)",
            "DURATION",
            "IN",
            "OUT",
            "STATUS",
            "REC",
            "REPLICA",
        ),
        [
            (
                r.id,
                r.user_name,
                r.container or "-",
                r.login or "-",
                r.kind,
                _ts(r.started_at),
                _duration(_session_seconds(r, now)),
                _bytes(r.bytes_in) if r.ended_at else "-",
                _bytes(r.bytes_out) if r.ended_at else "-",
                _session_status(r),
                "yes" if r.recording_path else "-",
                r.replica or "-",
            )
            for r in rows
        ],
    )


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id (or a prefix).")],
    as_json: JsonOpt = False,
) -> None:
    """Show one session and its audit events (file operations included)."""
    cfg = settings(ctx)

    async def go() -> tuple[SessionRecord, list[AuditRecord]]:
        async with open_store(cfg) as store:
            row = await store.find_session(session_id)
            return row, await store.session_events(row.id)

    row, events = run(go())
    now = datetime.now(UTC)
    if as_json:
        doc = _session_json(row, now)
        doc["events"] = [_event_json(e) for e in events]
        print_json(doc)
        return
    pairs = [
        ("id", row.id),
        ("user", row.user_name),
        (
            "container",
            f"{row.container or '-'}" + (f" ({row.container_id[:12]})" if row.container_id else ""),
        ),
        ("login", row.login or "-"),
        ("kind", row.kind),
        ("command", row.command or "-"),
        ("from", row.remote_addr or "-"),
        ("replica", row.replica or "-"),
        ("started", _ts(row.started_at) + " UTC"),
        ("ended", _ts(row.ended_at) + (" UTC" if row.ended_at else "")),
        ("duration", _duration(_session_seconds(row, now))),
        ("status", _session_status(row)),
        ("bytes in", str(row.bytes_in) if row.ended_at else "-"),
        ("bytes out", str(row.bytes_out) if row.ended_at else "-"),
        (
            "recording",
            (row.recording_path + f"  (sshgw replay {row.id[:12]})") if row.recording_path else "-",
        ),
    ]
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        say(f"{key:<{width}}  {value}")
    if events:
        say("")
        table(
            ("TIME (UTC)", "KIND", "DETAIL"),
            [(_ts(e.ts), e.kind, _detail_text(e.kind, e.detail or {})) for e in events],
        )


@sessions_app.command("kill")
def sessions_kill(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id (or a prefix).")],
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="Seconds to wait for the gateway to end it."),
    ] = 15.0,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="If no gateway ends it in time (the gateway that ran it is gone), mark the "
            "session ended in the database.",
        ),
    ] = False,
) -> None:
    """End a running session. The user sees a message that an administrator ended it."""
    cfg = settings(ctx)

    async def go() -> tuple[str, str]:
        async with open_store(cfg) as store:
            row = await store.find_session(session_id)
            if row.ended_at is not None:
                raise Conflict(f"session {row.id} already ended ({_session_status(row)})")
            # A replica silent for three heartbeats is gone: nothing runs the session any more.
            lost_after = 3 * cfg.heartbeat_interval
            gone = row.replica is not None and not await store.replica_alive(
                row.replica, lost_after
            )
            if gone:
                await store.force_end(row.id, LOST)
            else:
                await store.request_kill(row.id)
            await store.add_audit_event(
                "admin",
                actor=actor(),
                detail={
                    "action": "session.kill",
                    "session": row.id,
                    **({"replica_gone": row.replica} if gone else {}),
                },
                user_name=row.user_name,
                container=row.container or None,
                session_id=row.id,
            )
            deadline = time.monotonic() + wait
            while True:
                cur = await store.get_session(row.id)
                if cur.ended_at is not None:
                    return "ended", f"session {row.id} ended: {_session_status(cur)}"
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.2)
            if not force:
                return "pending", (
                    f"kill requested, but no gateway has ended session {row.id} within "
                    f"{wait:g}s (is the gateway that runs it still up? --force marks it ended)"
                )
            await store.force_end(row.id)
            return "forced", f"session {row.id} marked ended; no gateway answered"

    outcome, message = run(go())
    say(message)
    if outcome == "pending":
        raise typer.Exit(1)


# sshgw replay -------------------------------------------------------------------------------


def replay_cmd(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id (or a prefix).")],
    speed: Annotated[
        float, typer.Option("--speed", min=0.01, help="Play N times faster (2 = double speed).")
    ] = 1.0,
    idle_limit: Annotated[
        float | None,
        typer.Option("--idle-limit", min=0, help="Cap pauses at this many seconds."),
    ] = None,
) -> None:
    """Play a session recording to the terminal at real speed (or N times faster)."""
    from gateway.observe.recorder import (
        CastError,
        convert_spool,
        read_cast,
        spool_in_use,
        spool_path,
    )

    cfg = settings(ctx)

    async def go() -> SessionRecord:
        async with open_store(cfg) as store:
            return await store.find_session(session_id)

    row = run(go())
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
    try:
        header, events = read_cast(path)
    except FileNotFoundError:
        raise NotFound(f"recording file {path} is missing") from None
    except CastError as exc:
        raise InvalidInput(str(exc)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if sys.stdout.isatty():
        cols, rows = shutil.get_terminal_size()
        if cols < header.width or rows < header.height:
            print(
                f"(the recording is {header.width}x{header.height}; this terminal is "
                f"{cols}x{rows})",
                file=sys.stderr,
            )
    out = sys.stdout.buffer
    start = time.monotonic()
    last = 0.0
    shift = 0.0  # time removed by --idle-limit
    try:
        for ev in events:
            if idle_limit is not None and ev.time - last > idle_limit:
                shift += ev.time - last - idle_limit
            last = ev.time
            if ev.code != "o":
                continue
            due = start + (ev.time - shift) / speed
            delay = due - time.monotonic()
            if delay > 0:
                out.flush()
                time.sleep(delay)
            out.write(ev.data.encode("utf-8", "replace"))
        out.flush()
    except CastError as exc:
        raise InvalidInput(str(exc)) from None
    except BrokenPipeError:
        return
