"""Rendering for the terminal: tables, stage colours, relative times, human sizes.

Two renderings of the same rows: on a terminal, a rich table (stage colours, relative
times such as "3 minutes ago"); otherwise plain text, columns aligned with spaces, an
upper-case header line, no colour codes and no box drawing, times as ISO-8601 UTC.
rich is imported only on the terminal path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from .._stages import ModelStage
from ._common import console, fancy

__all__ = [
    "Cell",
    "format_value",
    "iso_text",
    "iso_time",
    "print_heading",
    "print_kv",
    "print_columns",
    "print_line",
    "print_table",
    "printable_column",
    "relative_time",
    "show_time",
    "stage_style",
]

STAGE_STYLES = {
    ModelStage.PRODUCTION.value: "bold green",
    ModelStage.STAGING.value: "yellow",
    ModelStage.DEVELOPMENT.value: "cyan",
    ModelStage.ARCHIVED.value: "dim",
}


def stage_style(stage: str | None) -> str:
    if not stage:
        return ""
    return STAGE_STYLES.get(stage, "magenta")


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``: names, tags, descriptions and
    actors come from Git and remotes, and must never drive the terminal (escape sequences)."""
    return text.translate(_CONTROL)


@dataclass
class Cell:
    """A table cell: the text plus an optional rich style (ignored in plain output).

    ``spans`` optionally splits the text into differently styled pieces. Control characters
    in the text are neutralised (:func:`printable`).
    """

    text: str
    style: str = ""
    spans: list[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        self.text = printable(self.text)
        if self.spans is not None:
            self.spans = [(printable(t), style) for t, style in self.spans]

    @classmethod
    def join(cls, pieces: Sequence[tuple[str, str]], sep: str = ", ") -> Cell:
        spans: list[tuple[str, str]] = []
        for i, piece in enumerate(pieces):
            if i:
                spans.append((sep, ""))
            spans.append(piece)
        return cls("".join(t for t, _ in spans), spans=spans)

    def rich(self) -> Any:
        from rich.text import Text

        if self.spans is None:
            return Text(self.text, style=self.style)
        text = Text()
        for piece, style in self.spans:
            text.append(piece, style=style or None)
        return text


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def relative_time(when: datetime | None, now: datetime | None = None) -> str:
    """``3 minutes ago``, ``just now``, ``2 days ago``, ``in 5 seconds`` (clock skew)."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    delta = (_aware(now) - _aware(when)).total_seconds()
    future = delta < 0
    seconds = abs(delta)
    if seconds < 10:
        return "just now"
    for unit, size in (
        ("year", 365 * 86400),
        ("month", 30 * 86400),
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"  # pragma: no cover


def iso_time(when: datetime | None) -> str:
    """ISO-8601 in UTC to the second, ``2024-05-01T12:00:00Z``; ``-`` for None."""
    if when is None:
        return "-"
    return _aware(when).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_UTC_SECONDS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\+00:00")


def iso_text(recorded: str) -> str:
    """:func:`iso_time` of an ISO-8601 text as a manifest records it (``created_at``); the
    common ``...+00:00`` form to the second is sliced, not parsed (100,000-row listings)."""
    if _UTC_SECONDS.fullmatch(recorded):
        return recorded[:19] + "Z"
    when = datetime.fromisoformat(recorded)
    return iso_time(when if when.tzinfo is not None else when.replace(tzinfo=UTC))


def show_time(when: datetime | None) -> str:
    """Relative on a terminal, ISO-8601 otherwise."""
    return relative_time(when) if fancy() else iso_time(when)


def format_value(value: Any) -> str:
    """Metrics and params for humans: floats to 6 significant digits, the rest as text."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        import json

        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _cell(value: Any) -> Cell:
    if isinstance(value, Cell):
        return value
    return Cell("" if value is None else str(value))


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    justify: dict[int, str] | None = None,
    upper: bool = True,
) -> None:
    """Print rows under the given column headers (rich on a terminal, plain otherwise).

    Plain output upper-cases the headers unless ``upper`` is false (data as headers)."""
    justify = justify or {}
    if fancy():
        cells = [[_cell(v) for v in row] for row in rows]
        from rich.table import Table

        table = Table(title=title, title_justify="left", header_style="bold", box=_box())
        for i, col in enumerate(columns):
            table.add_column(col, justify=justify.get(i, "left"), no_wrap=(i == 0))  # type: ignore[arg-type]
        for row in cells:
            table.add_row(*(c.rich() for c in row))
        console().print(table)
        return
    if title:
        click.echo(title)
    header = [c.upper() if upper else c for c in columns]
    texts = [[_plain(v) for v in row] for row in rows]
    cols = [list(col) for col in zip(*texts, strict=True)] if texts else [[] for _ in header]
    print_columns(header, cols, justify=justify)


def print_columns(header: Sequence[str], columns: Sequence[list[str]], justify: dict[int, str]) -> None:
    """The plain rendering of :func:`print_table` from whole columns of text (already
    :func:`printable`): aligned with two spaces, the last column unpadded, lines right-stripped.
    One ``str.format`` per line and one write in all, for tables of 100,000 rows."""
    widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(header, columns, strict=True)]
    last = len(header) - 1
    fmt = "  ".join(
        f"{{{i}:>{w}}}" if justify.get(i) == "right" else f"{{{i}}}" if i == last else f"{{{i}:<{w}}}"
        for i, w in enumerate(widths)
    )
    lines = map(str.rstrip, map(fmt.format, *columns))
    click.echo("\n".join([fmt.format(*header).rstrip(), *lines]))


def printable_column(texts: list[str]) -> list[str]:
    """``[printable(t) for t in texts]``, checked in one pass first (the common case is clean)."""
    return texts if all(map(str.isprintable, texts)) else [_plain(t) for t in texts]


def _plain(value: Any) -> str:
    """The plain-output text of a cell: what ``_cell(value).text`` is, without making a Cell."""
    if isinstance(value, Cell):
        return value.text
    text = "" if value is None else str(value)
    return text if text.isprintable() else printable(text)


def _box() -> Any:
    from rich import box

    return box.SIMPLE_HEAD


def print_heading(text: str, style: str = "bold") -> None:
    """A section heading: bold on a terminal, plain line otherwise."""
    if fancy():
        from rich.text import Text

        console().print(Text(text, style=style))
    else:
        click.echo(text)


def print_line(*parts: Cell | str) -> None:
    """One line from pieces, each optionally styled (styles dropped in plain output)."""
    cells = [p if isinstance(p, Cell) else Cell(p) for p in parts]
    if fancy():
        from rich.text import Text

        text = Text()
        for c in cells:
            text.append_text(c.rich())
        console().print(text)
    else:
        click.echo("".join(c.text for c in cells))


def print_kv(pairs: Sequence[tuple[str, Any]], *, indent: int = 2) -> None:
    """``key: value`` lines with the keys aligned."""
    if not pairs:
        return
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        cell = (
            value
            if isinstance(value, Cell)
            else Cell(format_value(value) if not isinstance(value, str) else value)
        )
        print_line(" " * indent + f"{key + ':':<{width + 1}} ", cell)
