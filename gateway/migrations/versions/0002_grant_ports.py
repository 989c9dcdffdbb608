"""Grants: the ports a ``forward`` grant allows (``sshgw grant add --ports 80,8000-8100``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 15:00:00

Existing grants get no ports: a ``forward`` right stored before this revision allows no port
until its grant is replaced with ``--ports``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("grants", sa.Column("ports", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("ports")
