"""Failed password attempts per user name, shared by every replica (``auth_failures``).

The per-user part of the failure throttle (:class:`gateway.ssh.limits.FailureThrottle`) must hold
across replicas: an attacker who alternates between them must get no more guesses than against
one. So the count lives here, keyed by a *bucket* — 16 bits of a hash of the name — never the
name itself: the table holds at most 65,536 rows whatever names a flood of failures tries (a
typed name may be a password typed into the wrong field: it is not stored), and rows quiet for
``forget`` seconds count as zero and are pruned. Two names in one bucket share a count (the
throttle of one slows the other down, no more). One failure is one atomic upsert; a check before
a password verification is one indexed read.
"""

from __future__ import annotations

import hashlib
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.db import Database
from gateway.store.models import AuthFailure
from gateway.store.replicas import db_ago, db_now

FAILURES = cast(sa.Table, AuthFailure.__table__)

#: Buckets of user names (rows of ``auth_failures`` at most).
BUCKETS = 1 << 16


def failure_bucket(name: str) -> int:
    """The bucket ``name``'s failures are counted in."""
    digest = hashlib.blake2b(
        name.encode("utf-8", "surrogateescape"), digest_size=4, person=b"sshgw-fail"
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class ThrottleRepo(Database):
    """The shared per-user failure counts."""

    async def auth_failures(self, name: str, forget: float) -> int:
        """Failures counted for ``name``'s bucket, the last within ``forget`` seconds (else 0)."""
        q = sa.select(FAILURES.c.failures).where(
            FAILURES.c.bucket == failure_bucket(name),
            FAILURES.c.last_at >= db_ago(self.dialect, forget),
        )

        async def read(conn: AsyncConnection) -> int:
            return int((await conn.execute(q)).scalar() or 0)

        return await self._read(read)

    async def auth_failed(self, name: str, forget: float) -> int:
        """One more failure for ``name``'s bucket (counting from 1 again after ``forget`` quiet
        seconds); returns the bucket's count, this failure included. One statement."""
        now = db_now(self.dialect)
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        row = insert(FAILURES).values(bucket=failure_bucket(name), failures=1, last_at=now)
        stmt = row.on_conflict_do_update(
            index_elements=[FAILURES.c.bucket],
            set_={
                "failures": sa.case(
                    (FAILURES.c.last_at < db_ago(self.dialect, forget), 1),
                    else_=FAILURES.c.failures + 1,
                ),
                "last_at": now,
            },
        ).returning(FAILURES.c.failures)
        async with self._guard(), self._autocommit.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def prune_auth_failures(self, forget: float) -> int:
        """Remove the buckets quiet for ``forget`` seconds; returns how many went."""
        async with self._guard(), self._autocommit.connect() as conn:
            res = await conn.execute(
                FAILURES.delete().where(FAILURES.c.last_at < db_ago(self.dialect, forget))
            )
            return int(res.rowcount or 0)
