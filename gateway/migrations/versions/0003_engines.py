"""Engines: the Docker engines one gateway serves (``sshgw engine add``), and the engine glob a
grant applies to (``sshgw grant add --engine GLOB``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 18:05:00

Existing grants apply to any engine (``*``). With no row in ``engines`` the gateway uses the
local default engine (``DOCKER_HOST`` or the local socket), as before this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("grants", sa.Column("engine", sa.Text(), nullable=False, server_default="*"))
    op.create_table(
        "engines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("tls_ca", sa.Text(), nullable=True),
        sa.Column("tls_cert", sa.Text(), nullable=True),
        sa.Column("tls_key", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_engines"),
        sa.UniqueConstraint("name", name="uq_engines_name"),
    )


def downgrade() -> None:
    op.drop_table("engines")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("engine")
