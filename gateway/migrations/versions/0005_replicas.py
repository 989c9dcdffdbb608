"""Many gateways on one database: replica heartbeats, the replica each session runs on, and
failed password counts shared by the replicas.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 18:05:00

- ``replicas``: one row per running gateway process (its heartbeat); a replica whose row goes
  stale has its live sessions marked ended (``gateway_lost``) by the others.
- ``sessions.replica``: the replica that serves the session (NULL for rows written before).
- ``auth_failures``: failed password attempts per user-name bucket (a hash of the name, at most
  65,536 rows), so the per-user throttle holds across replicas.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("draining", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_replicas")),
    )
    op.create_index(op.f("ix_replicas_last_seen"), "replicas", ["last_seen"], unique=False)
    op.create_table(
        "auth_failures",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_auth_failures")),
    )
    op.create_index(op.f("ix_auth_failures_last_at"), "auth_failures", ["last_at"], unique=False)
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("replica", sa.String(length=64), nullable=True))
        batch.create_index("ix_sessions_replica", ["replica"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_replica")
        batch.drop_column("replica")
    op.drop_index(op.f("ix_auth_failures_last_at"), table_name="auth_failures")
    op.drop_table("auth_failures")
    op.drop_index(op.f("ix_replicas_last_seen"), table_name="replicas")
    op.drop_table("replicas")
