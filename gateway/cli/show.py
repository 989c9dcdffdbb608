"""What the CLI prints: tables, plain lines and JSON, every untrusted value shown literally."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.safetext import json_terminal_safe, literal

T = TypeVar("T")

# Pipes get full-width lines and tables: nothing is wrapped or cut for scripts and logs.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 4096)


def fmt_time(value: datetime | None, empty: str = "-") -> str:
    if value is None:
        return empty
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_expiry(value: datetime | None) -> str:
    if value is None:
        return "never"
    text = fmt_time(value)
    return f"{text} (expired)" if value <= datetime.now(UTC) else text


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def print_json(data: Any) -> None:
    """JSON on stdout: exact values; characters that would act on a terminal are escaped."""
    doc = json.dumps(data, default=_jsonable, indent=2, ensure_ascii=False)
    sys.stdout.write(json_terminal_safe(doc) + "\n")


def cell(value: object) -> Text:
    """One table cell of untrusted text, shown literally: a rich ``Text`` (never parsed as
    markup, so ``[/]`` or ``[conceal]`` are just characters) with control characters escaped."""
    return Text(literal(value))


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], title: str | None = None) -> None:
    """A table; every cell is shown literally (see :func:`cell`)."""
    t = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    console.print(t)


def listing(
    items: Iterable[T],
    as_json: bool,
    view: Callable[[T], Any],
    columns: Sequence[str],
    row: Callable[[T], Sequence[str]],
) -> None:
    """A list command's output: a JSON array of each item's ``view``, or a table of ``row``s."""
    if as_json:
        print_json([view(x) for x in items])
    else:
        table(columns, (row(x) for x in items))


def say(text: str) -> None:
    """Plain lines on stdout: no markup interpretation, control characters escaped (the line
    breaks of ``text`` itself are kept)."""
    console.print(
        Text("\n".join(literal(line) for line in text.split("\n"))), markup=False, highlight=False
    )


def labels_text(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    return ",".join(f"{k}={v}" for k, v in pairs) or "-"
