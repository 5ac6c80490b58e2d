"""What each page shows, gathered through the public ``ModelRegistry`` API only.

These functions return plain values (dataclasses, dicts, lists) that the templates render
and the JSON routes serialise; nothing here knows about HTTP or HTML, except the SVG
charts (already escaped by :mod:`uniflow._views.charts`). The JSON payloads have the shapes
of the CLI's ``--json`` (see docs/cli.md).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import IntegrityError, UniflowError
from .._stages import ModelStage, stage_sort_key
from .._types import version_events
from .._views.charts import Point, Span, StageMark, delta_direction, metric_chart, sparkline, timeline

if TYPE_CHECKING:  # pragma: no cover
    from .. import Comparison, HistoryEvent, ModelSummary, ModelVersion
    from .._types import VersionRow

    Row = ModelVersion | VersionRow  # what a versions table needs: version, stage, metrics, size, created_at

__all__ = [
    "Reader",
    "CommitInfo",
    "OverviewRow",
    "Signatures",
    "commit_info",
    "compare_page",
    "history_page",
    "model_page",
    "overview",
    "signatures",
    "unverified",
    "with_signatures",
    "stage_marks",
    "stage_spans",
    "version_page",
]

#: sparkline length on the overview (the newest versions)
TREND_POINTS = 20
#: metrics where a smaller value is better: their deltas are coloured the other way round
_SHA_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


class Reader(Protocol):
    """The read API the pages use: a ``ModelRegistry`` or a :class:`uniflow.ui.cache.CachedRegistry`."""

    root: Path

    def list_models(self) -> list[ModelSummary]: ...
    def list_versions(self, name: str, stage: Any = None) -> list[ModelVersion]: ...
    def version_rows(self, name: str, stage: Any = None) -> list[VersionRow]: ...
    def history(self, name: str, *, last: int | None = None) -> list[HistoryEvent]: ...
    def get(self, name: str, version: str | None = None, stage: Any = None) -> ModelVersion: ...
    def compare_versions(self, name: str, versions: list[str]) -> Comparison: ...
    def stages(self) -> dict[str, bool]: ...


def stage_key(stage: str) -> tuple[int, str]:
    """Production first, then staging, custom stages, development, archived."""
    return stage_sort_key(stage)


# --------------------------------------------------------------------------- stage history


def stage_marks(events: list[HistoryEvent]) -> list[StageMark]:
    """Every event that moved a version into a stage other than development."""
    return [
        StageMark(e.version, e.to_stage, e.at, e.action)
        for e in events
        if e.to_stage and e.to_stage != ModelStage.DEVELOPMENT and e.action != "register"
    ]


def stage_spans(events: list[HistoryEvent], single: dict[str, bool]) -> list[Span]:
    """Replay the lifecycle: which version held each single-holder stage, from when to when."""
    holder: dict[str, tuple[str, datetime, int]] = {}  # stage -> (version, since, seq)
    where: dict[str, str] = {}  # version -> the single-holder stage it holds
    spans: list[Span] = []

    def close(stage: str, e: HistoryEvent) -> None:
        held = holder.pop(stage, None)
        if held is not None:
            spans.append(Span(stage, held[0], held[1], e.at, held[2], e.seq))
            where.pop(held[0], None)

    for e in events:
        if e.displaced:
            for st, held in list(holder.items()):
                if held[0] == e.displaced:
                    close(st, e)
        old = where.get(e.version)
        if old is not None and old != e.to_stage:
            close(old, e)
        target = e.to_stage
        if (
            target
            and single.get(target, False)
            and target != ModelStage.ARCHIVED
            and (target not in holder or holder[target][0] != e.version)
        ):
            close(target, e)
            holder[target] = (e.version, e.at, e.seq)
            where[e.version] = target
    for st, (v, since, seq) in holder.items():
        spans.append(Span(st, v, since, None, seq, None))
    order = {st: i for i, st in enumerate(sorted({s.stage for s in spans}, key=stage_key))}
    return sorted(spans, key=lambda s: (order[s.stage], s.start))


# --------------------------------------------------------------------------- overview


@dataclass
class OverviewRow:
    """One model on ``/``."""

    name: str
    latest: str | None
    versions: int
    stages: list[tuple[str, str]]
    updated_at: datetime | None
    last_event: HistoryEvent | None
    metric: str | None
    trend: str = ""


def _first_metric(versions: Sequence[Row]) -> str | None:
    for mv in reversed(versions):
        for key, value in mv.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(key)
    return None


def _points(versions: Sequence[Row], metric: str) -> list[Point]:
    out = []
    for mv in versions:
        value = mv.metrics.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(Point(mv.version, float(value), mv.stage))
    return out


def readable_history(
    registry: Reader, name: str, last: int | None = None
) -> tuple[list[HistoryEvent], str | None]:
    """``(events, None)``, or ``([], why)`` when the model's lifecycle is unreadable (its ref on
    a non-commit, a corrupt commit): the pages show the versions without their events (one
    bad record spoils only itself; the history page itself answers with the error)."""
    try:
        return registry.history(name, last=last), None
    except IntegrityError as exc:
        return [], f"lifecycle unreadable, shown without its events: {exc}"


def overview(registry: Reader) -> list[OverviewRow]:
    """Every model: latest version, stage holders, last event, trend of its first metric
    (from the model's listing index and its newest lifecycle event: no manifest is opened)."""
    rows = []
    for summary in registry.list_models():
        versions = registry.version_rows(summary.name)
        events = readable_history(registry, summary.name, last=1)[0]
        metric = _first_metric(versions)
        trend = sparkline(metric, _points(versions, metric)[-TREND_POINTS:]) if metric else ""
        rows.append(
            OverviewRow(
                name=summary.name,
                latest=summary.latest,
                versions=summary.versions,
                stages=sorted(summary.stages.items(), key=lambda kv: stage_key(kv[0])),
                updated_at=summary.updated_at,
                last_event=events[-1] if events else None,
                metric=metric,
                trend=trend,
            )
        )
    return rows


# --------------------------------------------------------------------------- model page


def _sort_value(mv: Row, sort: str) -> tuple[int, Any]:
    if sort == "created":
        return (0, mv.created_at.timestamp())
    if sort == "size":
        return (0, mv.size)
    if sort == "stage":
        return (0, stage_key(mv.stage))
    value = mv.metrics.get(sort)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return (0, value)
    return (1, 0)  # missing values sort last


def model_page(
    registry: Reader, name: str, *, stage: str | None = None, sort: str | None = None, desc: bool = False
) -> dict[str, Any]:
    """The versions table (sorted, filtered), one chart per metric and the promotion timeline
    (the versions are the rows of the model's listing index: no manifest is opened)."""
    versions = registry.version_rows(name)
    events, lifecycle_notice = readable_history(registry, name)
    shown = registry.version_rows(name, stage=stage) if stage else list(versions)
    metric_keys = sorted({str(k) for mv in versions for k in mv.metrics})
    if sort and sort != "version":
        present = [mv for mv in shown if _sort_value(mv, sort)[0] == 0]
        missing = [mv for mv in shown if _sort_value(mv, sort)[0] != 0]
        present.sort(key=lambda mv: _sort_value(mv, sort)[1], reverse=desc)
        shown = present + missing
    elif desc:
        shown = shown[::-1]
    marks = stage_marks(events)
    charts = [
        (metric, metric_chart(metric, _points(versions, metric), marks, chart_id=f"chart-{i}"))
        for i, metric in enumerate(metric_keys)
    ]
    previous = {b.version: a.version for a, b in zip(versions, versions[1:], strict=False)}
    now = datetime.now(UTC)
    notice = getattr(registry, "skipped_notice", None)  # a CachedRegistry tells; test readers may not
    return {
        "name": name,
        "skipped": notice(name) if callable(notice) else None,
        "lifecycle_notice": lifecycle_notice,
        "versions": shown,
        "all_versions": versions,
        "previous": previous,
        "latest": versions[-1].version if versions else None,
        "metric_keys": metric_keys,
        "stages_present": sorted({mv.stage for mv in versions}, key=stage_key),
        "charts": charts,
        "timeline": timeline(stage_spans(events, registry.stages()), now),
        "events": events,
        "stage": stage,
        "sort": sort or "version",
        "desc": desc,
    }


# --------------------------------------------------------------------------- version page


@dataclass(frozen=True)
class CommitInfo:
    """A code commit as ``git show -s`` tells it (empty strings when Git cannot)."""

    sha: str
    subject: str = ""
    author: str = ""
    date: str = ""


@lru_cache(maxsize=4096)  # commits are immutable
def commit_info(root: Path, sha: str | None) -> CommitInfo | None:
    """The subject, author and date of code commit ``sha`` in the repository at ``root``."""
    if not sha:
        return None
    if not _SHA_RE.fullmatch(sha):
        return CommitInfo(sha)
    try:
        proc = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "show",
                "-s",
                "--no-show-signature",
                "--format=%s%x00%an <%ae>%x00%aI",
                sha,
            ],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return CommitInfo(sha)
    parts = proc.stdout.rstrip("\n").split("\x00")
    if proc.returncode != 0 or len(parts) != 3:
        return CommitInfo(sha)
    return CommitInfo(sha, parts[0], parts[1], parts[2])


# --------------------------------------------------------------------------- signatures
@dataclass(frozen=True)
class Signatures:
    """Who signed each lifecycle event (``events``, by commit id) and version tag (``tags``, by
    version), with the policy's verdict: ``{"signer", "ok", "verdict", "signature"}`` each;
    ``error``: the policy chain itself could not be verified (then nothing counts as verified)."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def event(self, commit: str) -> dict[str, Any] | None:
        """The verdict on the event of lifecycle commit ``commit`` (None: not verified)."""
        return self.events.get(commit)


def signatures(registry: Reader, name: str) -> Signatures | None:
    """The signer and verdict of every event and version tag of ``name`` when a policy exists
    (:func:`uniflow._ops.authority.verify_lifecycle`); None without a policy, or for a reader
    without a repository: the pages then show nothing of it."""
    repository = getattr(registry, "repository", None)
    if repository is None:
        repository = getattr(getattr(registry, "registry", None), "repository", None)
    if repository is None:
        return None
    from .._ops.authority import policy_chain, verify_lifecycle

    try:
        chain = policy_chain(repository)
        if chain is None:
            return None
        verdicts = verify_lifecycle(repository, name, chain=chain)
    except UniflowError as exc:
        return Signatures(error=str(exc))
    events = {
        e.commit: {"signer": e.signer, "ok": e.ok, "verdict": e.reason, "signature": e.signature}
        for e in verdicts.events
    }
    tags = {
        t.version: {"signer": t.signer, "ok": t.ok, "verdict": t.reason, "signature": t.signature}
        for t in verdicts.tags.values()
    }
    return Signatures(events, tags)


def with_signatures(payload: dict[str, Any], sigs: Signatures | None, commit: str) -> dict[str, Any]:
    """``payload`` (an event's JSON) with ``"signature"``: its verdict, when there is a policy."""
    if sigs is None:
        return payload
    found = sigs.event(commit)
    payload["signature"] = found if found is not None else unverified(sigs)
    return payload


def unverified(sigs: Signatures) -> dict[str, Any]:
    """The verdict of something the verification did not reach (or the chain's error)."""
    return {"signer": None, "ok": False, "verdict": sigs.error or "not verified", "signature": ""}


def version_page(registry: Reader, name: str, version: str) -> dict[str, Any]:
    """The card of one version: metadata, files, lineage, history, bytes shared with the previous one."""
    mv = registry.get(name, version)
    names = [v.version for v in registry.version_rows(name)]
    events = readable_history(registry, name)[0]
    index = names.index(mv.version) if mv.version in names else -1
    prev = names[index - 1] if index > 0 else None
    nxt = names[index + 1] if 0 <= index < len(names) - 1 else None
    shared: int | None = None
    commits: list[dict[str, str]] = []
    if prev is not None:
        comparison = registry.compare_versions(name, [prev, mv.version])
        shared = comparison.shared_bytes.get(mv.version)
        commits = comparison.commits.get(mv.version, [])
    lineage = [
        (str(k), v) for k, v in mv.lineage.items() if k not in ("code_commit", "commit", "branch", "dirty")
    ]
    return {
        "mv": mv,
        "name": name,
        "prev": prev,
        "next": nxt,
        "shared_bytes": shared,
        "commits": commits,
        "commit": commit_info(registry.root, mv.code_commit),
        "lineage": lineage,
        "events": version_events(mv.version, events),
        "sigs": signatures(registry, name),
    }


# --------------------------------------------------------------------------- compare / history


@dataclass
class CompareView:
    """``Comparison.to_dict()`` plus the cell colouring the page needs."""

    data: dict[str, Any]
    comparison: Comparison
    sections: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)


def compare_page(registry: Reader, name: str, versions: list[str]) -> CompareView:
    """Versions side by side: every section of ``Comparison.to_dict()`` with coloured deltas."""
    comparison = registry.compare_versions(name, versions)
    data = comparison.to_dict()
    sections = []
    for section, rows in data["sections"].items():
        if not rows:
            continue
        out = []
        for row in rows:
            deltas = list(row.get("delta") or [None] * len(row["values"]))
            cells = []
            for i, value in enumerate(row["values"]):
                delta = deltas[i] if i < len(deltas) else None
                direction = delta_direction(row["key"], delta) if section == "metrics" and i > 0 else "same"
                changed = i > 0 and value != row["values"][0]
                cells.append(
                    {
                        "value": value,
                        "delta": delta if i > 0 else None,
                        "direction": direction,
                        "changed": changed,
                    }
                )
            out.append({"key": row["key"], "cells": cells, "changed": row.get("changed", False)})
        sections.append((section, out))
    return CompareView(data, comparison, sections)


def history_page(registry: Reader, name: str) -> list[HistoryEvent]:
    """Every lifecycle event of ``name``, newest first (the audit log)."""
    return list(reversed(registry.history(name)))
