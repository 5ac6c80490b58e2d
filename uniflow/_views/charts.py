"""Inline SVG charts drawn by the project: no JavaScript, no CDN, standard library only.

Every chart is a self-contained ``<svg>`` string. Each data point is an element with
class ``point`` that carries ``data-version="<version>"`` and a ``<title>`` (read by screen
readers and shown as a tooltip), so tests and people can tell which version a mark is.
Every string that reaches the SVG is escaped here; callers pass plain text.

- :func:`metric_chart`: one metric across versions (one point per version that has it),
  points coloured by stage, stage changes marked with vertical rules.
- :func:`sparkline`: a small trend (the overview's first metric).
- :func:`timeline`: which version held each single-holder stage when.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from .._stages import ModelStage

__all__ = [
    "Html",
    "STAGE_COLOURS",
    "stage_colour",
    "Point",
    "StageMark",
    "Span",
    "metric_chart",
    "sparkline",
    "timeline",
    "format_number",
]


class Html(str):
    """Markup built (and escaped) by this package: Jinja2 and IPython insert it as it is.

    Only this package's renderers create it, from text they escaped or sanitised; a string
    read from the registry is never wrapped in it directly.
    """

    def __html__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Point:
    """One version's value of a metric (``stage`` is the version's current stage)."""

    version: str
    value: float
    stage: str = ""


@dataclass(frozen=True)
class StageMark:
    """A stage change of ``version`` (drawn as a vertical rule at that version)."""

    version: str
    stage: str
    at: datetime | None = None
    action: str = "promote"


@dataclass(frozen=True)
class Span:
    """``version`` held ``stage`` from ``start`` to ``end`` (``None``: still holds it).

    ``start_seq``/``end_seq`` are the lifecycle event numbers that began and ended the
    holding: the timeline is laid out by event, so a day of quick promotions and a year of
    quiet both stay readable (the times are in each bar's title).
    """

    stage: str
    version: str
    start: datetime
    end: datetime | None = None
    start_seq: int = 0
    end_seq: int | None = None


#: stage colours, written as presentation attributes so a chart looks right without the
#: stylesheet too (in a notebook); the UI's CSS uses the same colours.
STAGE_COLOURS = {
    ModelStage.PRODUCTION.value: "#1a7f37",
    ModelStage.STAGING.value: "#9a6700",
    ModelStage.DEVELOPMENT.value: "#0a7ea4",
    ModelStage.ARCHIVED.value: "#8c959f",
}
CUSTOM_COLOUR = "#8250df"
_MUTED = "#656d76"
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def stage_colour(stage: str) -> str:
    """The colour of a stage (custom stages share one)."""
    return STAGE_COLOURS.get(stage, CUSTOM_COLOUR)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _cls(stage: str) -> str:
    """A CSS class for a stage (stage names are ``[a-z0-9_-]``; anything else is dropped)."""
    safe = "".join(c for c in stage.lower() if c.isascii() and (c.isalnum() or c in "_-"))
    return f"stage-{safe}" if safe else "stage-none"


def _text(x: float, y: float, text: str, *, cls: str = "tick", anchor: str = "", fill: str = _MUTED) -> str:
    """An SVG ``<text>`` element (``text`` escaped)."""
    align = f' text-anchor="{anchor}"' if anchor else ""
    return f'<text class="{cls}" fill="{fill}" x="{x:.1f}" y="{y:.1f}"{align}>{_e(text)}</text>'


def _circle(p: Point, x: float, y: float, r: float, title: str) -> str:
    """A data point: class ``point``, its stage's colour, ``data-version`` and a ``<title>``."""
    return (
        f'<circle class="point {_cls(p.stage)}" fill="{stage_colour(p.stage)}" '
        f'data-version="{_e(p.version)}" '
        f'cx="{x:.1f}" cy="{y:.1f}" r="{r}"><title>{_e(title)}</title></circle>'
    )


def format_number(value: object) -> str:
    """Numbers as people read them: ints as-is, floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def _finite(points: Sequence[Point]) -> list[Point]:
    return [p for p in points if isinstance(p.value, (int, float)) and math.isfinite(p.value)]


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    step = (hi - lo) / count
    return [lo + i * step for i in range(count + 1)]


def metric_chart(
    metric: str,
    points: Sequence[Point],
    marks: Sequence[StageMark] = (),
    *,
    width: int = 640,
    height: int = 220,
    chart_id: str = "",
) -> Html:
    """A line chart of ``metric`` across versions (in the order given), as inline SVG."""
    pts = _finite(points)
    title = f"{metric} across {len(pts)} version{'' if len(pts) == 1 else 's'}"
    ident = f' id="{_e(chart_id)}"' if chart_id else ""
    head = (
        f'<svg class="chart metric-chart"{ident} data-metric="{_e(metric)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" {_FONT} xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_e(title)}</title>"
    )
    if not pts:
        return Html(head + f'<text class="empty" x="{width // 2}" y="{height // 2}">no values</text></svg>')
    left, right, top, bottom = 60, 30, 14, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = _y_range([p.value for p in pts])

    def x_at(i: int) -> float:
        return left + (plot_w / 2 if len(pts) == 1 else plot_w * i / (len(pts) - 1))

    def y_at(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    out = [head, '<g class="axes">']
    for t in _ticks(lo, hi):
        y = y_at(t)
        out.append(
            f'<line class="grid" stroke="#eaeef2" x1="{left}" x2="{width - right}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>' + _text(left - 6, y + 4, format_number(t), anchor="end")
        )
    step = max(1, math.ceil(len(pts) / 8))
    for i, p in enumerate(pts):
        if i % step == 0 or i == len(pts) - 1:
            out.append(
                f'<text class="tick xlabel" fill="{_MUTED}" x="{x_at(i):.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{_e(p.version)}</text>'
            )
    out.append("</g>")
    index = {p.version: i for i, p in enumerate(pts)}
    for m in marks:
        if m.version not in index:
            continue
        x = x_at(index[m.version])
        when = f" on {m.at:%Y-%m-%d %H:%M}" if m.at else ""
        out.append(
            f'<g class="mark {_cls(m.stage)}" data-stage-change="{_e(m.version)}" '
            f'stroke="{stage_colour(m.stage)}">'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke-dasharray="4 3"/>'
            f"<title>{_e(f'{m.version}: {m.action} to {m.stage}{when}')}</title></g>"
        )
    coords = " ".join(f"{x_at(i):.1f},{y_at(p.value):.1f}" for i, p in enumerate(pts))
    out.append(f'<polyline class="line" fill="none" stroke="#57606a" stroke-width="1.5" points="{coords}"/>')
    for i, p in enumerate(pts):
        stage = f" ({p.stage})" if p.stage else ""
        out.append(
            _circle(
                p, x_at(i), y_at(p.value), 4.0, f"{p.version}: {metric} = {format_number(p.value)}{stage}"
            )
        )
    out.append(_text(left, height - 6, f"{metric} by version (oldest left)", cls="axis-label") + "</svg>")
    return Html("".join(out))


def sparkline(metric: str, points: Sequence[Point], *, width: int = 140, height: int = 30) -> Html:
    """A small trend of ``metric`` over ``points`` (every point marked, with its version)."""
    pts = _finite(points)
    head = (
        f'<svg class="chart sparkline" data-metric="{_e(metric)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" {_FONT} xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_e(f'{metric}: trend over the last {len(pts)} versions')}</title>"
    )
    if not pts:
        return Html(head + "</svg>")
    pad = 3.0
    lo, hi = _y_range([p.value for p in pts])

    def xy(i: int, v: float) -> tuple[float, float]:
        x = width / 2 if len(pts) == 1 else pad + (width - 2 * pad) * i / (len(pts) - 1)
        return x, pad + (height - 2 * pad) * (1 - (v - lo) / (hi - lo))

    coords = [xy(i, p.value) for i, p in enumerate(pts)]
    out = [
        head,
        '<polyline class="line" fill="none" stroke="#57606a" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        + '"/>',
    ]
    for (x, y), p in zip(coords, pts, strict=False):
        out.append(_circle(p, x, y, 1.8, f"{p.version}: {metric} = {format_number(p.value)}"))
    out.append("</svg>")
    return Html("".join(out))


def timeline(spans: Sequence[Span], now: datetime, *, width: int = 640, row_height: int = 26) -> Html:
    """Which version held each stage when: one row per stage, one bar per holding, laid out
    by lifecycle event (the x axis counts events; each bar's title gives the times)."""
    stages: list[str] = []
    for s in spans:
        if s.stage not in stages:
            stages.append(s.stage)
    label_w, right, top = 90, 10, 6
    height = top + row_height * max(len(stages), 1) + 22
    head = (
        f'<svg class="chart timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" {_FONT} xmlns="http://www.w3.org/2000/svg">'
        "<title>Which version held each stage when</title>"
    )
    if not spans:
        return Html(
            head + f'<text class="empty" x="{label_w}" y="{top + 16}">no stage was ever held</text></svg>'
        )
    first = min(s.start_seq for s in spans)
    last = max([*(s.start_seq for s in spans), *(s.end_seq for s in spans if s.end_seq is not None)]) + 1
    scale = (width - label_w - right) / max(last - first, 1)
    out = [head]
    for row, stage in enumerate(stages):
        y = top + row * row_height
        out.append(_text(label_w - 6, y + row_height / 2 + 4, stage, anchor="end"))
        for s in (s for s in spans if s.stage == stage):
            x0 = label_w + (s.start_seq - first) * scale
            x1 = label_w + ((last if s.end_seq is None else s.end_seq) - first) * scale
            w = max(x1 - x0, 3.0)
            until = f"{s.end:%Y-%m-%d %H:%M}" if s.end else "now"
            text = f"{s.version} held {stage} from {s.start:%Y-%m-%d %H:%M} to {until}"
            out.append(
                f'<g class="span {_cls(stage)}" fill="{stage_colour(stage)}" data-version="{_e(s.version)}">'
                f'<rect x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_height - 6}" rx="3"/>'
                f"<title>{_e(text)}</title>"
            )
            if w > 7 * len(s.version) + 8:
                out.append(_text(x0 + 4, y + row_height / 2 + 4, s.version, cls="span-label", fill="#fff"))
            out.append("</g>")
    axis_y = top + row_height * len(stages) + 16
    start = min(s.start for s in spans)
    out.append(_text(label_w, axis_y, f"event {first}, {start:%Y-%m-%d}"))
    out.append(_text(width - right, axis_y, f"now, {now:%Y-%m-%d}", anchor="end"))
    out.append("</svg>")
    return Html("".join(out))


_LOWER_IS_BETTER = re.compile(r"(loss|err|error|rmse|mse|mae|mape|latency|perplexity|time|_ms$|_s$)", re.I)


def delta_direction(metric: str, delta: Any) -> str:
    """``better``, ``worse`` or ``same`` for a metric delta (lower is better for losses, errors, times)."""
    if (
        not isinstance(delta, (int, float))
        or isinstance(delta, bool)
        or not math.isfinite(delta)
        or delta == 0
    ):
        return "same"
    up_is_good = not _LOWER_IS_BETTER.search(metric)
    return "better" if (delta > 0) == up_is_good else "worse"
