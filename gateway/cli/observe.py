"""``sshgw audit``, ``sshgw sessions [show|kill]``, ``sshgw replay`` and ``sshgw replicas``.

These read the ``audit_events`` and ``sessions`` tables the gateway writes. ``sessions kill``
works while the gateway runs as another process: it sets ``kill_requested`` on the session's row
and the gateway, which polls for such rows every second while it has sessions open, ends the
session and tells the user.
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from gateway.admin import audit, replicas, sessions
from gateway.admin.audit import KINDS_HELP, event_view
from gateway.admin.recordings import recording_file
from gateway.admin.sessions import (
    session_seconds,
    session_status,
    session_view,
    session_with_events_view,
)
from gateway.admin.when import parse_since
from gateway.cli.common import actor, open_store, run, settings, with_store
from gateway.cli.show import JsonOpt, print_json, say, table
from gateway.errors import InvalidInput, NotFound
from gateway.store import AuditRecord, SessionRecord

# The recordings module is imported only by `replay`, so every other command starts quickly.


sessions_app = typer.Typer(
    help="Sessions: list them, show one, end a running one.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
    app.add_typer(sessions_app, name="sessions")
    app.command("replay")(replay_cmd)
    app.command("replicas")(replicas_cmd)


# Helpers ------------------------------------------------------------------------------------


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
            help=f"Only this kind: {KINDS_HELP}.",
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
    if since:
        parse_since(since)  # a bad --since is refused before the database is opened
    rows, truncated = with_store(
        ctx,
        lambda store: audit.events(
            store,
            since=since,
            user=user,
            container=container,
            kind=kind,
            session=session,
            limit=limit,
        ),
    )
    if as_json:
        print_json([event_view(r) for r in rows])
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
    rows: list[SessionRecord] = with_store(
        ctx, lambda store: sessions.list_sessions(store, active=active, user=user, limit=limit)
    )
    now = datetime.now(UTC)
    if as_json:
        print_json([session_view(r, now) for r in rows])
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
                _duration(session_seconds(r, now)),
                _bytes(r.bytes_in) if r.ended_at else "-",
                _bytes(r.bytes_out) if r.ended_at else "-",
                session_status(r),
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
    found: tuple[SessionRecord, list[AuditRecord]] = with_store(
        ctx, lambda store: sessions.session_and_events(store, session_id)
    )
    row, events = found
    now = datetime.now(UTC)
    if as_json:
        print_json(session_with_events_view(row, events))
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
        ("duration", _duration(session_seconds(row, now))),
        ("status", session_status(row)),
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
            lost_after = 3 * cfg.heartbeat_interval  # a replica silent this long is gone
            row = await sessions.request_kill(store, actor(), session_id, lost_after)
            cur = await sessions.wait_ended(store, row.id, wait)
            if cur.ended_at is not None:
                return "ended", f"session {row.id} ended: {session_status(cur)}"
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
    from gateway.observe.recorder import CastError, read_cast

    row: SessionRecord = with_store(ctx, lambda store: store.find_session(session_id))
    path = recording_file(row)
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


# sshgw replicas -----------------------------------------------------------------------------


def replicas_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The gateway processes (replicas) on this database: heartbeat and state."""
    rows, now = with_store(ctx, replicas.list_replicas)
    lost_after = 3 * settings(ctx).heartbeat_interval
    if as_json:
        print_json([replicas.replica_view(r, now, lost_after) for r in rows])
        return
    if not rows:
        say("no replica is running")
        return
    table(
        ("NAME", "ADDRESS", "PID", "STARTED (UTC)", "LAST SEEN", "STATE"),
        [
            (
                r.name,
                r.address or "-",
                str(r.pid or "-"),
                _ts(r.started_at),
                _duration((now - r.last_seen).total_seconds()) + " ago",
                replicas.replica_state(r, now, lost_after),
            )
            for r in rows
        ],
    )
