"""``Comparison``: versions of one model side by side (what ``compare_versions`` returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._format import human_size
from .._records.manifest import Manifest, file_records
from .._types import ModelVersion
from .diff import BytesFn, diff_manifests

if TYPE_CHECKING:
    from .._records.git import GitRepo

__all__ = ["Comparison", "build_comparison"]

_MAX_COMMITS = 200


@dataclass(frozen=True)
class Comparison:
    """Versions side by side. ``str()`` is a plain-text table; ``to_dict()`` is JSON-safe."""

    name: str
    versions: list[str]
    rows: dict[str, list[dict[str, Any]]]  # section -> [{"key", "values", "delta"}]
    shared_bytes: dict[str, int]  # version -> bytes it shares with the first version
    commits: dict[str, list[dict[str, str]]]  # version -> code commits since the previous version
    models: list[ModelVersion] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "sections": self.rows,
            "shared_bytes": dict(self.shared_bytes),
            "commits": self.commits,
        }

    def __str__(self) -> str:
        header = ["", *self.versions]
        lines: list[list[str]] = [header]
        for section, rows in self.rows.items():
            if not rows:
                continue
            lines.append([f"[{section}]"] + [""] * len(self.versions))
            for row in rows:
                cells = [_cell(v, row["key"]) for v in row["values"]]
                for i, d in enumerate(row.get("delta") or []):
                    if d is not None and i > 0:
                        cells[i] += f" ({d:+.4g})"
                lines.append([f"  {row['key']}", *cells])
        widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
        text = [f"Comparing {self.name}: {', '.join(self.versions)}"]
        for r in lines:
            text.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        for v in self.versions[1:]:
            commits = self.commits.get(v, [])
            if commits:
                text.append(
                    f"code commits up to {v}: " + "; ".join(f"{c['sha'][:8]} {c['subject']}" for c in commits)
                )
        return "\n".join(text)

    def __repr__(self) -> str:
        return f"Comparison({self.name!r}, {self.versions!r})"

    def _repr_html_(self) -> str:
        """The table with coloured deltas and metric charts, for notebooks."""
        from .._views.notebook import comparison_html

        return comparison_html(self)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``: a row per ``(section, key)``, a column per version (needs pandas)."""
        from .._views.notebook import comparison_frame

        return comparison_frame(self)


def _cell(v: Any, key: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and ("bytes" in key or key == "size"):
        return human_size(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _rows(dicts: list[dict[str, Any]], numeric_delta: bool) -> list[dict[str, Any]]:
    keys = sorted({k for d in dicts for k in d})
    rows = []
    for k in keys:
        values = [d.get(k) for d in dicts]
        row: dict[str, Any] = {"key": k, "values": values}
        if numeric_delta and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            row["delta"] = [None] + [v - values[0] for v in values[1:]]  # type: ignore[operator]
        row["changed"] = any(v != values[0] for v in values[1:])
        rows.append(row)
    return rows


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
    return out


def _commits_between(git: GitRepo, old: str | None, new: str | None) -> list[dict[str, str]]:
    """Code commits reachable from ``new`` but not from ``old`` (bounded, newest first)."""
    if not new or new == old:
        return []
    stop: set[str] = set()
    if old:
        stack, seen = [old], 0
        while stack and seen < 20 * _MAX_COMMITS:
            sha = stack.pop()
            if sha in stop:
                continue
            stop.add(sha)
            seen += 1
            try:
                stack.extend(p.decode() for p in git.read_commit(sha).parents)
            except Exception:
                continue
    out: list[dict[str, str]] = []
    stack = [new]
    visited: set[str] = set()
    while stack and len(out) < _MAX_COMMITS:
        sha = stack.pop()
        if sha in stop or sha in visited:
            continue
        visited.add(sha)
        try:
            c = git.read_commit(sha)
        except Exception:
            continue
        out.append(
            {"sha": sha, "subject": c.message.decode(errors="replace").splitlines()[0] if c.message else ""}
        )
        stack.extend(p.decode() for p in c.parents)
    return out


def _tensor_summary(first: Manifest, m: Manifest, same_bytes: BytesFn | None) -> str:
    """The tensor summary line of ``m`` against the first version (from the manifests,
    and the bytes where the two record different kinds of digest: ``_ops.diff``)."""
    summary = diff_manifests(first, m, same_bytes).summary
    if first is m or first.version == m.version:
        if summary["tensor_data"] == "none":
            return "no tensor data"
        return f"{summary['tensors']} tensors"
    return str(summary["line"])


def build_comparison(
    git: GitRepo, mvs: list[ModelVersion], manifests: list[Manifest], same_bytes: BytesFn | None = None
) -> Comparison:
    base_chunks = {c.digest: c.size for _, r, _ in file_records(manifests[0]) for c in r.chunks}
    shared = {}
    for mv, m in zip(mvs, manifests, strict=True):
        chunks = {c.digest: c.size for _, r, _ in file_records(m) for c in r.chunks}
        shared[mv.version] = sum(s for d, s in chunks.items() if d in base_chunks)
    info = [
        {
            "framework": mv.framework,
            "stage": mv.stage,
            "size": mv.size,
            "shared with first (bytes)": shared[mv.version],
            "code commit": (mv.code_commit or "")[:12] + (" (dirty)" if mv.dirty else ""),
            "created": mv.created_at.isoformat(timespec="seconds"),
            "tensors (vs first)": _tensor_summary(manifests[0], m, same_bytes),
        }
        for mv, m in zip(mvs, manifests, strict=True)
    ]
    lineage = [
        _flat({k: v for k, v in mv.lineage.items() if k not in ("code_commit", "branch", "dirty")})
        for mv in mvs
    ]
    for d in lineage:  # times always differ; they are not a lineage difference
        for k in [
            k
            for k in d
            if k.endswith(
                ("started_at", "start_time", "duration", "duration_s", "duration_seconds", "run_id")
            )
        ]:
            d.pop(k)
    rows = {
        "metrics": _rows([mv.metrics for mv in mvs], True),
        "params": _rows([_flat(mv.params) for mv in mvs], True),
        "tags": _rows([mv.tags for mv in mvs], False),
        "info": _rows(info, False),
        "lineage": [r for r in _rows(lineage, False) if r["changed"]],
    }
    commits = {}
    for prev, cur in zip(mvs, mvs[1:], strict=False):
        commits[cur.version] = _commits_between(git, prev.code_commit, cur.code_commit)
    return Comparison(mvs[0].name, [mv.version for mv in mvs], rows, shared, commits, list(mvs))
