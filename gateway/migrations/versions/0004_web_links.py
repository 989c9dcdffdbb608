"""Web terminal links: the one-time links ``ssh USER@gw web CONTAINER`` prints, and the browser
session each one becomes once opened.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 18:10:00

Only SHA-256 digests of the link's token and of the cookie are stored, so any replica can redeem
a link another one printed, and a copy of the table opens nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("link_hash", sa.String(64), nullable=False),
        sa.Column("cookie_hash", sa.String(64), nullable=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("container", sa.Text(), nullable=False),
        sa.Column("login", sa.Text(), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("credential", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_links")),
        sa.UniqueConstraint("link_hash", name=op.f("uq_web_links_link_hash")),
        sa.UniqueConstraint("cookie_hash", name=op.f("uq_web_links_cookie_hash")),
    )
    op.create_index(op.f("ix_web_links_expires_at"), "web_links", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_web_links_expires_at"), table_name="web_links")
    op.drop_table("web_links")
