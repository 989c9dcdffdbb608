"""The database migrations (Alembic): ``env.py``, ``script.py.mako`` and ``versions/``.

They ship inside the package so that an installed sshgw finds them through
``gateway.migrations.__file__``, never through a checkout. ``sshgw db upgrade`` (and the first
start on SQLite) runs them; developers use ``alembic -c alembic.ini …`` from the repository root.
"""
