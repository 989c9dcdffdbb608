"""Alembic revisions, one file each; Alembic reads this directory by path and skips this file."""
