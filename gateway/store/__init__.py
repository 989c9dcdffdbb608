"""The gateway's database: SQLAlchemy models, async repositories and the database engine.

Migrations ship inside the package, in ``gateway/migrations/`` (Alembic).
"""

from gateway.store.audit import AuditRecord
from gateway.store.db import SchemaState, safe_url
from gateway.store.groups import GroupInfo
from gateway.store.keys import ParsedKey, parse_public_key
from gateway.store.passwords import hash_password, needs_rehash, verify_password
from gateway.store.sessions import SessionRecord
from gateway.store.store import Store
from gateway.store.users import AuthKey, AuthUser, KeyInfo, UserInfo

__all__ = [
    "AuditRecord",
    "AuthKey",
    "AuthUser",
    "GroupInfo",
    "KeyInfo",
    "ParsedKey",
    "SchemaState",
    "SessionRecord",
    "Store",
    "UserInfo",
    "hash_password",
    "needs_rehash",
    "parse_public_key",
    "safe_url",
    "verify_password",
]
