"""The admin API's request and response models (pydantic v2); the OpenAPI document is made
from them (:mod:`gateway.web.api.openapi`).

Responses describe the JSON forms of :mod:`gateway.admin` (the ``*_view`` functions, also the
CLI's ``--json``): a handler validates a view through its model, so the two cannot drift apart.
Requests forbid unknown fields; free text refuses control characters and is bounded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.routing import ENGINE_RE, USER_RE

# Text without control characters (no NUL reaches the database), bounded.
Text = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
# A user or group name (gateway.routing.USER_RE).
Name = Annotated[str, StringConstraints(pattern=USER_RE.pattern)]
LongText = Annotated[str, StringConstraints(max_length=8192)]  # far more than any public key
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
When = Annotated[
    str,
    StringConstraints(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$"),
    Field(
        description="YYYY-MM-DD (00:00 UTC), an ISO date-time (UTC unless an offset is given), "
        "or +30d/+12h"
    ),
]
Limit = Annotated[int, Field(ge=1, le=1000, description="At most this many items.")]


class Request(BaseModel):
    """A JSON body: unknown fields refused, no type coerced (0 is not false)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters: text, read as numbers and booleans where the model says so."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Errors -------------------------------------------------------------------------------------


class ErrorDetail(Response):
    code: str = Field(description="Stable: not_found, conflict, invalid, unauthorized, ...")
    message: str = Field(description="One line for a person.")
    field: str | None = Field(description="The request field at fault, if one is.")


class Error(Response):
    error: ErrorDetail


# Users and keys -----------------------------------------------------------------------------


class KeySummary(Response):
    fingerprint: str
    algorithm: str
    comment: str | None
    expires_at: datetime | None
    last_used_at: datetime | None


class UserOut(Response):
    name: str
    display: str | None
    disabled: bool
    password: bool = Field(description="Whether the user has a password.")
    created_at: datetime
    groups: list[str]
    keys: list[KeySummary]


class GrantOut(Response):
    id: int
    user: str | None
    group: str | None
    target: str
    labels: dict[str, str]
    rights: list[str]
    logins: list[str]
    paths: list[str]
    ports: str
    engine: str
    expires_at: datetime | None
    record: bool


class UserDetail(UserOut):
    grants: list[GrantOut] = Field(description="Own grants and those of the user's groups.")


class UserList(Response):
    items: list[UserOut]
    more: bool = Field(description="More items follow (raise offset).")


class UserCreate(Request):
    name: Name
    display: Text | None = None
    password: Password | None = None
    key: LongText | None = Field(default=None, description="A public key (OpenSSH or RFC 4716).")


class UserPatch(Request):
    disabled: bool | None = Field(
        default=None, description="Disable (open connections end within seconds) or enable."
    )
    password: Password | None = Field(
        default=None, description="A new password; null clears it (keys only from then on)."
    )


class KeyOut(Response):
    user: str
    fingerprint: str
    algorithm: str
    comment: str | None
    public_key: str
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class KeyList(Response):
    items: list[KeyOut]
    more: bool


class KeyCreate(Request):
    key: LongText = Field(description="A public key (OpenSSH or RFC 4716).")
    comment: Text | None = None
    expires: When | None = None


class KeyRemove(Query):
    fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=128)]


# Groups and grants --------------------------------------------------------------------------


class GroupOut(Response):
    name: str
    members: list[str]
    created_at: datetime


class GroupList(Response):
    items: list[GroupOut]
    more: bool


class GroupCreate(Request):
    name: Name


class GroupPatch(Request):
    add: list[Name] = Field(default=[], max_length=1000, description="Users to add.")
    remove: list[Name] = Field(default=[], max_length=1000, description="Users to remove.")


class GrantList(Response):
    items: list[GrantOut]
    more: bool


class GrantCreate(Request):
    user: Name | None = Field(default=None, description="Exactly one of user and group.")
    group: Name | None = None
    target: Text = Field(description="Container name glob, e.g. 'web*' or '*'.")
    rights: list[Text] = Field(max_length=32, description="shell, exec, sftp-read, ...")
    labels: dict[Text, Text] = Field(default={}, max_length=64)
    logins: list[Text] = Field(default=[], max_length=64)
    paths: list[Text] = Field(default=[], max_length=64)
    ports: Text = ""
    engine: Text = "*"
    expires: When | None = None
    record: bool = True


# Check and containers -----------------------------------------------------------------------


class CheckQuery(Query):
    user: Name
    container: Text
    right: Text = "shell"
    login: Text | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class CheckOut(Response):
    allowed: bool
    user: str
    container: str
    container_id: str | None
    engine: str | None = Field(
        default=None, description="The container's engine ('': the local default engine)."
    )
    right: str
    login: str | None
    grant: int | None
    reason: str | None
    message: str
    paths: list[str]
    port: int | None
    ports: str | None
    record: bool
    warnings: list[str]


class ContainerOut(Response):
    name: str
    id: str
    image: str
    state: str
    labels: dict[str, str]
    engine: str = Field(description="The engine it runs on ('': the local default engine).")


class ContainerList(Response):
    items: list[ContainerOut]
    more: bool


class EngineOut(Response):
    name: str
    url: str
    state: str = Field(description="up or down (asked now, within seconds).")
    version: str = Field(description="The Docker engine's version ('' when down).")
    containers: int
    error: str = Field(description="Why it is down ('' when up).")


class EngineList(Response):
    items: list[EngineOut]
    more: bool


class EngineCreate(Request):
    name: Annotated[str, StringConstraints(pattern=ENGINE_RE.pattern)] = Field(
        description="a-z, 0-9 and '-'."
    )
    url: Text = Field(description="unix:///PATH or tcp://HOST:PORT (with TLS).")
    tls_ca: Text | None = Field(default=None, description="CA file of the engine's cert.")
    tls_cert: Text | None = Field(default=None, description="Client certificate file.")
    tls_key: Text | None = Field(default=None, description="Client key file.")


class Page(Query):
    limit: Limit = 100
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0


# Sessions and audit -------------------------------------------------------------------------


class EventOut(Response):
    id: int
    ts: datetime
    kind: str
    actor: str | None
    user: str | None
    container: str | None
    remote: str | None
    session_id: str | None
    detail: dict[str, Any]


class EventList(Response):
    items: list[EventOut]
    more: bool = Field(description="Older events match too (narrow since or raise limit).")


class AuditQuery(Query):
    since: When | None = Field(default=None, description="30m, 1h, 2d, 1w, or a date")
    user: Name | None = None
    container: Text | None = None
    kind: Text | None = Field(
        default=None, description="login, session, file, denied or admin (sub-kinds included)"
    )
    session: Text | None = Field(default=None, description="A session id or a prefix of it.")
    limit: Limit = 100


class SessionOut(Response):
    id: str
    user: str
    container: str | None
    container_id: str | None
    login: str | None
    kind: str
    command: str | None
    remote: str | None
    started_at: datetime
    ended_at: datetime | None
    active: bool
    duration: float
    bytes_in: int
    bytes_out: int
    exit_status: int | None
    end_reason: str | None
    kill_requested: bool
    recording: str | None
    replica: str | None = Field(description="The gateway process that runs (ran) it.")


class SessionDetail(SessionOut):
    events: list[EventOut]


class SessionList(Response):
    items: list[SessionOut]
    more: bool


class SessionQuery(Query):
    active: bool = False
    user: Name | None = None
    limit: Limit = 100


class SessionKill(Request):
    wait: Annotated[float, Field(ge=0, le=30)] = Field(
        default=0, description="Seconds to wait for the gateway to end it."
    )
