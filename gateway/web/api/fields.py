"""Which request field an error is about."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gateway.errors import InvalidInput


@contextlib.contextmanager
def at_field(name: str) -> Iterator[None]:
    """An :class:`InvalidInput` raised inside names ``name`` as its field (the JSON error's
    ``field``), unless it names one already."""
    try:
        yield
    except InvalidInput as exc:
        if getattr(exc, "field", None) is None:
            exc.field = name  # type: ignore[attr-defined]
        raise
