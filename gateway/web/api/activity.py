"""``/sessions``, ``/sessions/{id}``, ``/sessions/{id}/kill``, ``/audit``, ``/recordings/{id}``,
``/containers``, ``/engines``, ``/engines/{name}`` and ``/check``: thin handlers over
:mod:`gateway.admin`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.admin import audit, engines, sessions
from gateway.admin.audit import event_view
from gateway.admin.checks import check_view, evaluate
from gateway.admin.containers import container_view
from gateway.admin.engines import engine_view
from gateway.admin.recordings import recording_file
from gateway.admin.sessions import session_view, session_with_events_view
from gateway.engines.base import TLSFiles
from gateway.web.api import models as m
from gateway.web.api.base import Call, Route, listed
from gateway.web.api.fields import at_field

CAST_TYPE = "application/x-asciicast"


async def list_sessions(call: Call) -> m.SessionList:
    q: m.SessionQuery = call.query
    rows = await sessions.list_sessions(call.store, active=q.active, user=q.user, limit=q.limit + 1)
    more = len(rows) > q.limit
    rows = rows[1:] if more else rows  # oldest first: the extra one is the oldest
    return m.SessionList(
        items=[m.SessionOut.model_validate(session_view(r)) for r in rows], more=more
    )


async def show_session(call: Call) -> m.SessionDetail:
    with at_field("id"):
        row, events = await sessions.session_and_events(call.store, call.path["id"])
    return m.SessionDetail.model_validate(session_with_events_view(row, events))


async def kill_session(call: Call) -> m.SessionOut:
    b: m.SessionKill = call.body
    with at_field("id"):
        row = await sessions.request_kill(
            call.store, call.actor, call.path["id"], 3 * call.gw.settings.heartbeat_interval
        )
    if b.wait:
        row = await sessions.wait_ended(call.store, row.id, b.wait)
    return m.SessionOut.model_validate(session_view(row))


async def list_events(call: Call) -> m.EventList:
    q: m.AuditQuery = call.query
    with at_field("since"):
        rows, more = await audit.events(
            call.store,
            since=q.since,
            user=q.user,
            container=q.container,
            kind=q.kind,
            session=q.session,
            limit=q.limit,
        )
    return m.EventList(items=[m.EventOut.model_validate(event_view(r)) for r in rows], more=more)


async def recording(call: Call) -> web.StreamResponse:
    with at_field("id"):
        row = await call.store.find_session(call.path["id"])
    path = await asyncio.to_thread(recording_file, row)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": CAST_TYPE,
            "Content-Disposition": f'attachment; filename="{row.id}.cast"',
        },
    )


async def list_containers(call: Call) -> m.ContainerList:
    found = await call.gw.engine.list_containers()
    return listed(call, found, container_view, m.ContainerOut, m.ContainerList)


async def list_engines(call: Call) -> m.EngineList:
    found = await engines.engine_states(call.store)
    return listed(call, found, engine_view, m.EngineOut, m.EngineList)


async def add_engine(call: Call) -> m.EngineOut:
    b: m.EngineCreate = call.body
    with at_field("url"):  # the name is the model's; the TLS files name their field
        await engines.add_engine(
            call.store, call.actor, b.name, b.url, TLSFiles(b.tls_ca, b.tls_cert, b.tls_key)
        )
    (state,) = await engines.engine_states(call.store, b.name)
    return m.EngineOut.model_validate(engine_view(state))


async def remove_engine(call: Call) -> None:
    await engines.remove_engine(call.store, call.actor, call.path["name"])


async def check(call: Call) -> m.CheckOut:
    q: m.CheckQuery = call.query
    with at_field("right"):
        result = await evaluate(
            call.store, call.gw.engine, q.user, q.container, q.right, q.login, q.port
        )
    return m.CheckOut.model_validate(check_view(result))


REF = {"id": "ref"}
ROUTES = [
    Route("GET", "/sessions", list_sessions, "Sessions, newest last", "sessions",
          m.SessionList, query=m.SessionQuery),
    Route("GET", "/sessions/{id}", show_session, "One session (id or a prefix) and its audit "
          "events", "sessions", m.SessionDetail, params=REF),
    Route("POST", "/sessions/{id}/kill", kill_session, "End a running session (the user is told "
          "an administrator ended it)", "sessions", m.SessionOut, status=202,
          body=m.SessionKill, params=REF, write=True),
    Route("GET", "/audit", list_events, "Audit events, oldest first: logins, sessions, file "
          "operations, denials and admin changes", "audit", m.EventList, query=m.AuditQuery),
    Route("GET", "/recordings/{id}", recording, "A session's recording (asciicast v2)",
          "sessions", None, params=REF, media=CAST_TYPE),
    Route("GET", "/containers", list_containers, "Containers on the gateway's engine",
          "containers", m.ContainerList, query=m.Page),
    Route("GET", "/engines", list_engines, "The Docker engines the gateway serves, each asked "
          "now for its version and containers (within seconds)", "engines", m.EngineList,
          query=m.Page),
    Route("POST", "/engines", add_engine, "Serve another Docker engine's containers (the "
          "gateways pick it up within seconds)", "engines", m.EngineOut, status=201,
          body=m.EngineCreate, write=True),
    Route("DELETE", "/engines/{name}", remove_engine, "Stop serving an engine's containers "
          "(open sessions go on)", "engines", None, status=204, params={"name": "name"},
          write=True),
    Route("GET", "/check", check, "Would USER get RIGHT on CONTAINER? The decision a session "
          "would get", "check", m.CheckOut, query=m.CheckQuery),
]  # fmt: skip
