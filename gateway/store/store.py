"""The gateway's database: users, keys, groups, grants, sessions and audit events.

One :class:`Store` per process, over an async SQLAlchemy engine (aiosqlite or asyncpg). It is
the repositories of the aggregates (:mod:`~gateway.store.users`, :mod:`~gateway.store.groups`,
:mod:`~gateway.store.grants`, :mod:`~gateway.store.sessions`, :mod:`~gateway.store.audit`,
:mod:`~gateway.store.weblinks`) over one :class:`~gateway.store.db.Database`, which maps every
database failure to the project's errors.
"""

from __future__ import annotations

from gateway.store.audit import AuditRepo
from gateway.store.engines import EnginesRepo
from gateway.store.grants import GrantsRepo
from gateway.store.groups import GroupsRepo
from gateway.store.replicas import ReplicasRepo
from gateway.store.sessions import SessionsRepo
from gateway.store.throttle import ThrottleRepo
from gateway.store.tokens import TokensRepo
from gateway.store.users import UsersRepo
from gateway.store.weblinks import WebLinksRepo


class Store(
    UsersRepo,
    GroupsRepo,
    GrantsRepo,
    EnginesRepo,
    SessionsRepo,
    AuditRepo,
    WebLinksRepo,
    ReplicasRepo,
    ThrottleRepo,
    TokensRepo,
):
    """Async repository over the gateway's database."""
