"""What changed inside a model between two versions, per file and per tensor, from the two
manifests alone: no chunk is read (``registry.diff``, ``uniflow models diff``).

Files are matched by path, tensors by name within a file. A tensor is ``added``,
``removed``, ``changed`` (same dtype and shape, other bytes), ``reshaped`` (dtype or shape
differ: a cast, a resize) or ``unchanged``; a file is ``added``, ``removed``, ``changed`` or
``unchanged`` (its digest). A file without tensor data on one side (a version registered
with manifest format 1, or a file that is not a tensor file) is listed with ``tensors``
``None`` and a note saying so, never an error.

Digests are compared only with digests of their own kind: format 3 records Merkle
identities, formats 1 and 2 BLAKE3 of the bytes (``_records.manifest``). Across kinds, a
file or tensor is unchanged when it is made of the same chunks (same names, same
offsets); otherwise its bytes decide: the ``b3sum`` of the format-3 side, read from its
chunks (``same_bytes``, :func:`store_bytes`), against the format-2 digest. Without
``same_bytes`` (from the manifests alone), what the chunks cannot settle counts as changed.

``--stats`` adds, for each changed tensor (and each dtype cast of the same shape), max |Δ|,
mean |Δ| and the relative L2 change ``||b - a|| / ||a||``: those tensors alone are read
(``_ops.partial``), and :func:`tensor_stats` computes the figures here.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .._format import human_size
from .._records.manifest import MERKLE_FORMAT, FileEntry, Manifest
from .._records.tensors import TensorInfo
from .._storage.chunking import ChunkRef, range_b3sum
from .._types import ChunkDigest

if TYPE_CHECKING:
    from .._storage.store import ObjectStore

__all__ = [
    "STATUSES",
    "FileDelta",
    "TensorDelta",
    "VersionDiff",
    "BytesFn",
    "diff_manifests",
    "store_bytes",
    "tensor_stats",
]

#: the BLAKE3 (what ``b3sum`` prints) of the bytes ``[begin, end)`` of a file, read from
#: its stored chunks: how bytes recorded under different kinds of digest are compared
BytesFn = Callable[[FileEntry, int, int], str]

#: tensor statuses, in the order they are listed (everything but ``unchanged`` first)
STATUSES = ("changed", "reshaped", "added", "removed", "unchanged")
_RANK = {s: i for i, s in enumerate(STATUSES)}


@dataclass(frozen=True)
class TensorDelta:
    """One tensor of a file in either version: its status, and both sides."""

    name: str
    status: str
    a: TensorInfo | None
    b: TensorInfo | None
    stats: dict[str, float | None] | None = None

    @property
    def info(self) -> TensorInfo:
        """The newer side, or the older one for a removed tensor."""
        side = self.b or self.a
        assert side is not None
        return side

    def to_dict(self) -> dict[str, Any]:
        t = self.info
        d: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "nbytes": t.nbytes,
        }
        if self.status == "reshaped" and self.a is not None:
            d["from"] = {"dtype": self.a.dtype, "shape": list(self.a.shape), "nbytes": self.a.nbytes}
        d["digest_a"] = self.a.digest if self.a else None
        d["digest_b"] = self.b.digest if self.b else None
        if self.stats is not None:
            d["stats"] = {k: (v if v is None or math.isfinite(v) else None) for k, v in self.stats.items()}
        return d


@dataclass(frozen=True)
class FileDelta:
    """One file in either version; ``tensors`` is None when a side has no tensor data."""

    path: str
    status: str
    size_a: int | None
    size_b: int | None
    tensors: list[TensorDelta] | None
    note: str | None = None
    #: the path in ``a`` when the one tensor file removed and the one added were paired
    renamed_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "size_a": self.size_a,
            "size_b": self.size_b,
            "tensors": None if self.tensors is None else [t.to_dict() for t in self.tensors],
            "note": self.note,
            "renamed_from": self.renamed_from,
        }


@dataclass(frozen=True)
class VersionDiff:
    """Two versions of a model compared file by file and tensor by tensor.

    ``str()`` is the human report (changed tensors first, unchanged ones counted);
    ``to_dict()`` is the JSON of ``uniflow models diff --json``.
    """

    name: str
    a: str
    b: str
    files: list[FileDelta]
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        counts = {s: 0 for s in STATUSES}
        total = changed = 0
        for f in self.files:
            for t in f.tensors or ():
                counts[t.status] += 1
                total += t.info.nbytes
                if t.status != "unchanged":
                    changed += t.info.nbytes
        file_counts = {
            s: sum(f.status == s for f in self.files) for s in ("added", "removed", "changed", "unchanged")
        }
        with_data = sum(f.tensors is not None for f in self.files)
        return {
            "tensors": sum(counts.values()),
            **counts,
            "changed_bytes": changed,
            "total_bytes": total,
            "files": file_counts,
            "tensor_data": "complete" if with_data == len(self.files) else "partial" if with_data else "none",
            "line": self.summary_line(counts, changed, total, with_data),
        }

    def summary_line(self, counts: dict[str, int], changed: int, total: int, with_data: int) -> str:
        """ "2 of 202 tensors changed (40 KiB of 120 MiB)", or why there is no tensor data."""
        if not with_data and self.files:
            return "no tensor data: " + (self.notes[0] if self.notes else "neither version records tensors")
        n = sum(counts.values())
        moved = n - counts["unchanged"]
        kinds = [f"{counts[s]} {s}" for s in STATUSES[:-1] if counts[s]]
        detail = f": {', '.join(kinds)}" if len(kinds) > 1 or (kinds and not counts["changed"]) else ""
        part, whole = human_size(changed, significant=True), human_size(total, significant=True)
        line = f"{moved} of {n} tensors changed{detail} ({part} of {whole})"
        missing = len(self.files) - with_data
        if missing:
            line += f"; {missing} file{'s' if missing > 1 else ''} without tensor data"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "files": [f.to_dict() for f in self.files],
            "summary": self.summary,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        lines = [f"Diff of {self.name} {self.a} -> {self.b}"]
        for f in self.files:
            renamed = f" (renamed from {f.renamed_from})" if f.renamed_from else ""
            lines.append(f"{f.path}{renamed}  {f.status}" + (f" ({f.note})" if f.note else ""))
            shown = [t for t in f.tensors or () if t.status != "unchanged"]
            for t in shown:
                lines.append("  " + "  ".join(_tensor_cells(t)))
            same = len(f.tensors or ()) - len(shown)
            if same:
                lines.append(f"  {same} unchanged tensor{'s' if same > 1 else ''}")
        lines.append(self.summary["line"])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"VersionDiff({self.name!r}, {self.a!r}, {self.b!r}: {self.summary['line']})"


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _tensor_cells(t: TensorDelta) -> list[str]:
    """status, name, dtype and shape (``F32 [10, 10] -> F16 [10, 10]`` when reshaped), size, stats."""
    info = t.info
    kind = f"{info.dtype} {_shape(info.shape)}"
    if t.status == "reshaped" and t.a is not None:
        kind = f"{t.a.dtype} {_shape(t.a.shape)} -> {kind}"
    cells = [t.status.ljust(9), t.name, kind, human_size(info.nbytes, significant=True)]
    if t.stats is not None:
        cells.append(stats_text(t.stats))
    return cells


def stats_text(stats: dict[str, float | None]) -> str:
    def g(key: str) -> str:
        v = stats.get(key)
        return "-" if v is None or not math.isfinite(v) else f"{v:.3g}"

    return f"max|d| {g('max_abs_diff')}  mean|d| {g('mean_abs_diff')}  rel L2 {g('rel_l2')}"


# ---------------------------------------------------------------------- building a diff
class _Sides:
    """The two versions' files, and how to tell whether two byte ranges of them hold the
    same bytes (their digests when of one kind; else their chunks, else their bytes)."""

    def __init__(self, ma: Manifest, mb: Manifest, same_bytes: BytesFn | None) -> None:
        self.merkle = (ma.format >= MERKLE_FORMAT, mb.format >= MERKLE_FORMAT)
        self.same_bytes = same_bytes

    def files_equal(self, a: FileEntry, b: FileEntry) -> bool:
        if self.merkle[0] == self.merkle[1]:
            return a.digest == b.digest
        if a.chunks == b.chunks:
            return True
        if a.size != b.size:
            return False
        return self._bytes_equal((a, 0, a.size, a.digest), (b, 0, b.size, b.digest))

    def tensors_equal(self, fa: FileEntry, ta: TensorInfo, fb: FileEntry, tb: TensorInfo) -> bool:
        if self.merkle[0] == self.merkle[1]:
            return ta.digest == tb.digest
        if _cover(fa, ta.begin, ta.end) == _cover(fb, tb.begin, tb.end):
            return True
        return self._bytes_equal((fa, ta.begin, ta.end, ta.digest), (fb, tb.begin, tb.end, tb.digest))

    def _bytes_equal(self, a: tuple[FileEntry, int, int, str], b: tuple[FileEntry, int, int, str]) -> bool:
        """The b3sum of each side (its digest on the side of BLAKE3 digests), compared."""
        if self.same_bytes is None:
            return False
        sums = [
            d if not m else self.same_bytes(f, lo, hi)
            for (f, lo, hi, d), m in zip((a, b), self.merkle, strict=True)
        ]
        return sums[0] == sums[1]


def _cover(f: FileEntry, begin: int, end: int) -> tuple[int, int, tuple[bytes, ...]]:
    """The bytes ``[begin, end)`` of ``f`` named by the chunks holding them: the offset in
    the first, the length, the chunk names. Equal keys mean equal bytes."""
    starts, pos = [], 0
    for _, n in f.chunks:
        starts.append(pos)
        pos += n
    if begin >= end or not starts:
        return (0, 0, ())
    i = bisect.bisect_right(starts, begin) - 1
    j = bisect.bisect_left(starts, end) - 1
    return (begin - starts[i], end - begin, tuple(d for d, _ in f.chunks[i : j + 1]))


def store_bytes(store: ObjectStore) -> BytesFn:
    """A :data:`BytesFn` reading (and verifying) the chunks from ``store``."""

    def b3(f: FileEntry, begin: int, end: int) -> str:
        chunks = [ChunkRef(ChunkDigest(d.hex()), n) for d, n in f.chunks]
        return range_b3sum(chunks, store.read_chunk, begin, end)

    return b3


def _tensor_status(
    a: TensorInfo | None, b: TensorInfo | None, same: Callable[[TensorInfo, TensorInfo], bool]
) -> str:
    if a is None:
        return "added"
    if b is None:
        return "removed"
    if a.dtype != b.dtype or a.shape != b.shape:
        return "reshaped"
    return "unchanged" if same(a, b) else "changed"


def _tensors(
    ea: FileEntry | None, eb: FileEntry | None, status: str, sides: _Sides
) -> list[TensorDelta] | None:
    ta = ea.tensors if ea is not None else None
    tb = eb.tensors if eb is not None else None
    if status == "added":
        ta = ()
    elif status == "removed":
        tb = ()
    if ta is None or tb is None:
        return None

    def same(a: TensorInfo, b: TensorInfo) -> bool:
        assert ea is not None and eb is not None  # both sides hold the tensor
        return sides.tensors_equal(ea, a, eb, b)

    by_a = {t.name: t for t in ta}
    by_b = {t.name: t for t in tb}
    out = [
        TensorDelta(n, _tensor_status(by_a.get(n), by_b.get(n), same), by_a.get(n), by_b.get(n))
        for n in {**by_a, **by_b}
    ]
    out.sort(key=lambda t: (_RANK[t.status], t.name))
    return out


def _no_data_note(version: str, fmt: int) -> str:
    if fmt < 2:
        return f"no tensor data in {version} (registered with manifest format {fmt})"
    return f"no tensor data in {version} (not a tensor file)"


def diff_manifests(ma: Manifest, mb: Manifest, same_bytes: BytesFn | None = None) -> VersionDiff:
    """The diff of two validated manifests of one model (``a`` the older); ``same_bytes``
    reads bytes where the two record different kinds of digest (see the module doc)."""
    sides = _Sides(ma, mb, same_bytes)
    fa = {f.path: f for f in ma.files}
    fb = {f.path: f for f in mb.files}
    # A single-file model registered under another name (model-v1 -> model-v2.safetensors):
    # the one tensor file removed and the one added are compared with each other.
    only_a, only_b = [p for p in fa if p not in fb], [p for p in fb if p not in fa]
    renamed: dict[str, str] = {}
    if (
        len(only_a) == 1
        and len(only_b) == 1
        and fa[only_a[0]].tensors is not None
        and fb[only_b[0]].tensors is not None
    ):
        renamed[only_b[0]] = only_a[0]
    files: list[FileDelta] = []
    for path in sorted(p for p in {**fa, **fb} if p not in renamed.values()):
        ea, eb = fa.get(renamed.get(path, path)), fb.get(path)
        status = (
            "added"
            if ea is None
            else "removed"
            if eb is None
            else ("unchanged" if sides.files_equal(ea, eb) else "changed")
        )
        ta = ea.tensors if ea is not None else None
        tensors = _tensors(ea, eb, status, sides)
        note = None
        if tensors is None:
            side, m = (ma, ea) if ta is None and ea is not None else (mb, eb)
            note = _no_data_note(side.version, side.format) if m is not None else None
        files.append(
            FileDelta(
                path,
                status,
                ea.size if ea is not None else None,
                eb.size if eb is not None else None,
                tensors,
                note,
                renamed.get(path),
            )
        )
    notes = [
        f"{m.version} was registered with manifest format {m.format}, which records no tensor data"
        for m in (ma, mb)
        if m.format < 2
    ]
    return VersionDiff(ma.name, ma.version, mb.version, files, notes)


def with_stats(diff: VersionDiff, stats: dict[tuple[str, str], dict[str, float | None]]) -> VersionDiff:
    """``diff`` with ``stats[(path, tensor name)]`` attached to those tensors."""
    files = []
    for f in diff.files:
        tensors = (
            None
            if f.tensors is None
            else [
                replace(t, stats=stats[(f.path, t.name)]) if (f.path, t.name) in stats else t
                for t in f.tensors
            ]
        )
        files.append(replace(f, tensors=tensors))
    return replace(diff, files=files)


def wants_stats(t: TensorDelta) -> bool:
    """Stats are computed for changed tensors and for dtype casts of the same shape."""
    return (
        t.a is not None and t.b is not None and t.status in ("changed", "reshaped") and t.a.shape == t.b.shape
    )


def tensor_stats(a: Any, b: Any) -> dict[str, float | None]:
    """max |b - a|, mean |b - a| and ||b - a|| / ||a|| of two numpy arrays of one shape."""
    import numpy as np

    x = np.asarray(a).astype(np.complex128 if np.iscomplexobj(a) else np.float64, copy=False).ravel()
    y = np.asarray(b).astype(np.complex128 if np.iscomplexobj(b) else np.float64, copy=False).ravel()
    if x.size == 0:
        return {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "rel_l2": 0.0}
    d = np.abs(y - x)
    norm_a = float(np.linalg.norm(x))
    norm_d = float(np.linalg.norm(d))
    rel = norm_d / norm_a if norm_a > 0 else (0.0 if norm_d == 0 else None)
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "rel_l2": rel}
