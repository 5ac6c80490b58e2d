"""The registry in a notebook: HTML renderings, pandas frames and matplotlib plots.

The ``_repr_html_`` methods of ``ModelVersion``, ``Comparison`` and the lists returned by
``list_versions`` and ``history`` call the ``*_html`` functions here. They use only the
standard library and :mod:`uniflow._views.charts` (the same inline SVG charts as the web UI)
and escape every string from the registry; a description is rendered as sanitised
Markdown. pandas and matplotlib (the ``notebook`` extra) are imported only by
:func:`versions_frame`, :func:`comparison_frame` and :func:`plot_metric`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache
from html import escape
from typing import Any

from .._errors import UsageError
from .._format import human_size
from .._stages import SHARED_STAGES
from .charts import Html, Point, StageMark, format_number, metric_chart, stage_colour

# The value types are passed in by their own ``_repr_html_`` methods (``_types``, ``_ops.compare``
# import this module), so they are named here only as ``Any``: importing them back would be
# an import cycle.
ModelVersion = Any
HistoryEvent = Any
Comparison = Any

__all__ = [
    "comparison_frame",
    "comparison_html",
    "history_html",
    "plot_metric",
    "version_html",
    "versions_frame",
    "versions_html",
]

#: charts drawn under a versions table (one per metric, at most this many)
MAX_CHARTS = 4
_TABLE = 'style="border-collapse:collapse;font-size:13px"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top"'


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _badge(stage: str | None) -> str:
    if not stage:
        return "-"
    return (
        f'<span style="background:{stage_colour(stage)};color:#fff;border-radius:9px;padding:0 6px;'
        f'font-size:12px">{_e(stage)}</span>'
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    """A table; ``header`` is plain text, ``rows`` are already-escaped HTML cells."""
    head = "".join(f"<th {_CELL}>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td {_CELL}>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}" {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv(mapping: dict[str, Any]) -> str:
    if not mapping:
        return "-"
    return "<br>".join(
        f"{_e(k)} = {_e(format_number(v))}" for k, v in sorted(mapping.items(), key=lambda kv: str(kv[0]))
    )


def version_html(mv: ModelVersion) -> Html:
    """A version's card: stage, metrics, params, tags, files, lineage, description."""
    from .markdown import render_markdown

    rows = [
        ["stage", _badge(mv.stage)],
        ["framework", _e(mv.framework or "-")],
        ["size", _e(human_size(mv.size))],
        ["created", _e(f"{mv.created_at:%Y-%m-%d %H:%M %Z}".strip()) + " by " + _e(mv.author or "unknown")],
        ["metrics", _kv(mv.metrics)],
        ["params", _kv(mv.params)],
        ["tags", _kv(mv.tags)],
        ["files", "<br>".join(f"{_e(f.path)} ({_e(human_size(f.size))})" for f in mv.files) or "-"],
        [
            "code commit",
            _e((mv.code_commit or "-")[:12])
            + (" (dirty)" if mv.dirty else "")
            + (f" on {_e(mv.branch)}" if mv.branch else ""),
        ],
    ]
    desc = f'<div class="uniflow-card">{render_markdown(mv.description)}</div>' if mv.description else ""
    return Html(
        f'<div class="uniflow uniflow-version"><strong>{_e(mv.name)} {_e(mv.version)}</strong>'
        f"{desc}{_table(['', ''], rows, 'uniflow-kv')}</div>"
    )


def _metric_points(versions: Sequence[ModelVersion], metric: str) -> list[Point]:
    out = []
    for mv in versions:
        value = mv.metrics.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(Point(mv.version, float(value), mv.stage))
    return out


def versions_html(versions: Sequence[ModelVersion]) -> Html:
    """The versions as a table, then a chart per metric (the first few)."""
    if not versions:
        return Html('<div class="uniflow"><em>no versions</em></div>')
    metrics = sorted({str(k) for mv in versions for k in mv.metrics})
    rows = [
        [
            _e(mv.version),
            _badge(mv.stage),
            *(_e(format_number(mv.metrics.get(m))) for m in metrics),
            _e(human_size(mv.size)),
            _e(f"{mv.created_at:%Y-%m-%d %H:%M}"),
        ]
        for mv in versions
    ]
    table = _table(["version", "stage", *metrics, "size", "created"], rows, "uniflow-versions")
    name = versions[0].name
    charts = "".join(
        f"<div><strong>{_e(m)}</strong><br>"
        f"{metric_chart(m, _metric_points(versions, m), width=520, height=200)}</div>"
        for m in metrics[:MAX_CHARTS]
    )
    more = (
        f"<p><em>{len(metrics) - MAX_CHARTS} more metrics not drawn</em></p>"
        if len(metrics) > MAX_CHARTS
        else ""
    )
    return Html(
        f'<div class="uniflow uniflow-versions-list"><strong>{_e(name)}</strong>: '
        f"{len(versions)} versions{table}{charts}{more}</div>"
    )


def history_html(events: Sequence[HistoryEvent]) -> Html:
    """The lifecycle events as a table, oldest first."""
    rows = []
    for e in events:
        stage = (f"{_badge(e.from_stage)} → " if e.from_stage else "") + _badge(e.to_stage)
        note = "; ".join(x for x in (f"{e.displaced} → archived" if e.displaced else "", e.reason or "") if x)
        rows.append(
            [
                _e(e.seq),
                _e(f"{e.at:%Y-%m-%d %H:%M}"),
                _e(e.action),
                _e(e.version),
                stage,
                _e(e.actor or "-"),
                _e(note),
            ]
        )
    return Html(
        '<div class="uniflow uniflow-history">'
        + _table(["#", "when", "action", "version", "stage", "by", "note"], rows, "uniflow-events")
        + "</div>"
    )


def comparison_html(comparison: Comparison) -> Html:
    """The comparison as a table with coloured deltas, and a chart per metric."""
    from .charts import delta_direction

    data = comparison.to_dict()
    versions = [str(v) for v in data["versions"]]
    rows: list[list[str]] = []
    for section, entries in data["sections"].items():
        if not entries:
            continue
        rows.append([f"<strong>{_e(section)}</strong>", *([""] * len(versions))])
        for entry in entries:
            deltas = list(entry.get("delta") or [None] * len(entry["values"]))
            cells = [_e(entry["key"])]
            for i, value in enumerate(entry["values"]):
                text = _e(
                    human_size(value)
                    if isinstance(value, int) and ("bytes" in entry["key"] or entry["key"] == "size")
                    else format_number(value)
                )
                delta = deltas[i] if i < len(deltas) else None
                if i > 0 and isinstance(delta, (int, float)) and delta:
                    direction = delta_direction(entry["key"], delta) if section == "metrics" else "same"
                    colour = {"better": "#1a7f37", "worse": "#cf222e"}.get(direction, "#656d76")
                    text += f' <span style="color:{colour};font-weight:600">({delta:+.4g})</span>'
                cells.append(text)
            rows.append(cells)
    table = _table(["", *versions], rows, "uniflow-compare")
    mvs = list(comparison.models)
    metric_names = [r["key"] for r in data["sections"].get("metrics", [])][:MAX_CHARTS]
    charts = (
        "".join(metric_chart(m, _metric_points(mvs, m), width=420, height=180) for m in metric_names)
        if mvs
        else ""
    )
    return Html(
        f'<div class="uniflow uniflow-comparison"><strong>{_e(data["name"])}</strong>: '
        f"{_e(', '.join(versions))}{table}{charts}</div>"
    )


# --------------------------------------------------------------------------- pandas / matplotlib


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ModuleNotFoundError("this needs pandas: pip install 'uniflow-registry[notebook]'") from None
    return pandas


def versions_frame(versions: Sequence[ModelVersion]) -> Any:
    """One row per version (index ``version``): stage, created_at, size, framework, author,
    code_commit, then one column per metric, ``param.<key>`` and ``tag.<key>``."""
    pd = _pandas()
    records = []
    for mv in versions:
        rec: dict[str, Any] = {
            "version": mv.version,
            "stage": mv.stage,
            "created_at": mv.created_at,
            "size": mv.size,
            "framework": mv.framework,
            "author": mv.author,
            "code_commit": mv.code_commit,
        }
        for k, v in mv.metrics.items():
            rec[str(k) if str(k) not in rec else f"metric.{k}"] = v
        rec.update({f"param.{k}": v for k, v in mv.params.items()})
        rec.update({f"tag.{k}": v for k, v in mv.tags.items()})
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    return frame.set_index("version") if len(frame) else frame


def comparison_frame(comparison: Comparison) -> Any:
    """The comparison's values: a row per ``(section, key)``, a column per version."""
    pd = _pandas()
    data = comparison.to_dict()
    index, values = [], []
    for section, entries in data["sections"].items():
        for entry in entries:
            index.append((section, entry["key"]))
            values.append(list(entry["values"]))
    return pd.DataFrame(
        values,
        index=pd.MultiIndex.from_tuples(index, names=["section", "key"]),
        columns=list(data["versions"]),
        dtype=object,
    )


@lru_cache(maxsize=1)
def _figure_class() -> Any:
    """A matplotlib ``Figure`` that shows itself as a PNG in a notebook.

    The figure is not registered with pyplot (no global state, never shown twice); a plain
    ``Figure`` has no notebook representation until pyplot is imported, so this one says
    how to draw itself.
    """
    from matplotlib.figure import Figure

    class MetricFigure(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=100)
            return buf.getvalue()

    return MetricFigure


def plot_metric(versions: Sequence[ModelVersion], metric: str, events: Sequence[HistoryEvent] = ()) -> Any:
    """A matplotlib ``Figure``: ``metric`` across versions, points coloured by stage, dashed
    lines where a version entered staging, production or a custom stage."""
    try:
        from matplotlib.lines import Line2D
    except ImportError:
        raise ModuleNotFoundError("plot needs matplotlib: pip install 'uniflow-registry[notebook]'") from None
    points = _metric_points(versions, metric)
    if not points:
        known = sorted({str(k) for mv in versions for k in mv.metrics})
        name = versions[0].name if versions else "?"
        raise UsageError(
            f"model {name!r} has no numeric metric {metric!r}; metrics: {', '.join(known) or 'none'}"
        )
    fig = _figure_class()(figsize=(max(5.0, min(12.0, 0.45 * len(points) + 3)), 3.4))
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    ax.plot(xs, [p.value for p in points], color="#57606a", linewidth=1.3, zorder=1)
    ax.scatter(xs, [p.value for p in points], c=[stage_colour(p.stage) for p in points], s=28, zorder=2)
    index = {p.version: i for i, p in enumerate(points)}
    marks = [
        StageMark(e.version, e.to_stage, e.at, e.action)
        for e in events
        if e.to_stage and e.to_stage not in SHARED_STAGES and e.action != "register"
    ]
    for m in marks:
        if m.version in index:
            ax.axvline(
                index[m.version],
                color=stage_colour(m.stage),
                linestyle="--",
                linewidth=1,
                alpha=0.6,
                zorder=0,
            )
    step = max(1, math.ceil(len(points) / 12))
    ax.set_xticks(
        xs[::step],
        [p.version for p in points][::step],
        rotation=30 if len(points) > 6 else 0,
        ha="right" if len(points) > 6 else "center",
    )
    ax.set_ylabel(metric)
    ax.set_title(f"{versions[0].name}: {metric} by version")
    stages = sorted({p.stage for p in points})
    ax.legend(
        handles=[Line2D([], [], marker="o", linestyle="", color=stage_colour(s), label=s) for s in stages],
        loc="best",
        fontsize=8,
        frameon=False,
    )
    ax.grid(axis="y", color="#eaeef2")
    fig.tight_layout()
    return fig
