"""Partial loads: some tensors of a version, read from the chunks that cover them only.

``registry.load(name, ..., tensors=["head.*"])`` and ``registry.diff(..., stats=True)``
come here. For every selected tensor the manifest (format 2, see ``_records.tensors``) gives its byte
range in its file; the chunks overlapping those ranges are fetched in one batch when they
are missing locally (the store's fetcher is called with exactly those digests, so a clone
whose chunks live on a blob remote downloads a fraction of the model), then read in file
order, each verified against its digest before a byte of it is used, and every tensor's
bytes are checked against the tensor's own BLAKE3 digest before it is returned.

Torch versions come back as torch tensors; ``.npy`` versions as numpy arrays; other files
as torch tensors when torch is installed, else numpy arrays (bfloat16 and float8 need torch).
"""

from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import blake3

from .._errors import IntegrityError, SerializationError, UsageError
from .._records.manifest import MERKLE_FORMAT, Manifest, file_records
from .._records.tensors import TensorInfo
from .._storage.chunking import FileRecord
from .._storage.merkle import range_identity
from .._storage.parallel import bounded_map
from .diff import VersionDiff, tensor_stats, wants_stats, with_stats

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository
    from .._storage.store import ObjectStore

__all__ = ["load_tensors", "diff_stats", "read_tensors"]

#: chunks read ahead of the one being copied (each up to 4 MiB)
_READ_AHEAD = 8
_NUMPY = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
    "C64": "<c8",
}
_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "F16": "float16",
    "BF16": "bfloat16",
    "U32": "uint32",
    "I32": "int32",
    "F32": "float32",
    "U64": "uint64",
    "I64": "int64",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}


def _context(name: str, version: str, path: str) -> str:
    return f"model {name!r} version {version!r} file {path!r}"


# ---------------------------------------------------------------------- reading bytes
def _chunk_reader(
    store: ObjectStore, rec: FileRecord, indices: list[int], context: str
) -> Generator[bytes, None, None]:
    """The verified bytes of ``rec.chunks[i]`` for each ``i`` in ``indices``, in order,
    read (and hashed) a few chunks ahead on two threads."""
    yield from bounded_map(
        lambda i: store.read_chunk(rec.chunks[i], context),
        indices,
        workers=2,
        window=_READ_AHEAD,
        name="uniflow-partial",
    )


def _identity(rec: FileRecord, t: TensorInfo, buf: bytearray, merkle: bool) -> str:
    """The digest of tensor ``t`` (its bytes ``buf``) of the kind its manifest records."""
    if not merkle:
        return blake3.blake3(buf).hexdigest()
    return range_identity([(c.digest, c.size) for c in rec.chunks], t.begin, t.end, buf)


def _tensor_bytes(
    store: ObjectStore, rec: FileRecord, tensors: list[TensorInfo], context: str, merkle: bool = True
) -> Iterator[tuple[TensorInfo, bytearray]]:
    """Each tensor's bytes (in file order), from only the chunks covering them; every chunk
    verified as it is read, every tensor against its own digest before it is yielded."""
    tensors = sorted(tensors, key=lambda t: (t.begin, t.end))
    starts, pos = [], 0
    for c in rec.chunks:
        starts.append(pos)
        pos += c.size
    spans = [
        (bisect.bisect_right(starts, t.begin) - 1, bisect.bisect_left(starts, t.end) - 1)
        for t in tensors
        if t.end > t.begin
    ]
    needed = sorted({i for first, last in spans for i in range(first, last + 1)})
    if needed:  # one batch: the fetcher is asked for exactly the missing chunks these need
        store.ensure_local([FileRecord(rec.size, rec.digest, tuple(rec.chunks[i] for i in needed))])
    reader = _chunk_reader(store, rec, needed, context)
    cache: dict[int, bytes] = {}
    queue = iter(needed)
    try:
        for t in tensors:
            buf = bytearray(t.nbytes)
            if t.nbytes:
                first = bisect.bisect_right(starts, t.begin) - 1
                last = bisect.bisect_left(starts, t.end) - 1
                for i in [k for k in cache if k < first]:
                    del cache[i]
                for i in range(first, last + 1):
                    while i not in cache:
                        cache[next(queue)] = next(reader)
                    lo, hi = max(t.begin, starts[i]), min(t.end, starts[i] + rec.chunks[i].size)
                    buf[lo - t.begin : hi - t.begin] = cache[i][lo - starts[i] : hi - starts[i]]
            if _identity(rec, t, buf, merkle) != t.digest:
                raise IntegrityError(
                    f"{context}: tensor {t.name!r} does not match its digest in the manifest"
                )
            yield t, buf
    finally:
        reader.close()


def read_tensors(
    repo: Repository, name: str, version: str, manifest: Manifest, wanted: dict[str, list[TensorInfo]]
) -> Iterator[tuple[str, TensorInfo, bytearray]]:
    """``(path, tensor, verified bytes)`` for the tensors ``wanted`` per file path."""
    records = {path: rec for path, rec, _mode in file_records(manifest)}
    for path, tensors in wanted.items():
        merkle = manifest.format >= MERKLE_FORMAT
        for t, buf in _tensor_bytes(
            repo.store, records[path], tensors, _context(name, version, path), merkle
        ):
            yield path, t, buf


# ---------------------------------------------------------------------- bytes to arrays
def _torch_wanted(serializer: str) -> bool:
    """Torch tensors for the torch serializer, numpy arrays for ``.npy``; for other files
    torch tensors when torch can be imported, else numpy arrays."""
    if serializer in ("torch", "numpy"):
        return serializer == "torch"
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def to_array(t: TensorInfo, buf: bytearray, use_torch: bool) -> Any:
    """A torch tensor or numpy array over ``buf`` (no copy), shaped as ``t`` says."""
    if use_torch:
        try:
            import torch
        except ImportError:
            raise SerializationError(
                "this version holds torch tensors; install uniflow-registry[torch] to load them"
            ) from None
        dtype = getattr(torch, _TORCH[t.dtype], None)
        if dtype is None:
            raise SerializationError(f"tensor {t.name!r} has dtype {t.dtype}, which this torch cannot hold")
        if not t.nbytes:
            return torch.empty(t.shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(t.shape)
    try:
        import numpy as np
    except ImportError:
        raise SerializationError(
            "loading tensors needs numpy or torch; install uniflow-registry[torch]"
        ) from None
    if t.dtype not in _NUMPY:
        raise SerializationError(
            f"tensor {t.name!r} has dtype {t.dtype}, which needs torch; install uniflow-registry[torch]"
        )
    return np.frombuffer(buf, dtype=np.dtype(_NUMPY[t.dtype])).reshape(t.shape)


def _as_float(t: TensorInfo, buf: bytearray) -> Any:
    """A numpy float64 (complex128) copy of a tensor, for statistics."""
    if t.dtype in _NUMPY:
        return to_array(t, buf, False)
    try:
        import torch
    except ImportError:
        raise SerializationError(
            f"statistics of {t.dtype} tensors need torch; install uniflow-registry[torch]"
        ) from None

    return to_array(t, buf, True).to(dtype=torch.float64).numpy()


# ---------------------------------------------------------------------- the two entry points
def _patterns(tensors: object) -> list[str]:
    patterns = [tensors] if isinstance(tensors, str) else tensors
    if (
        not isinstance(patterns, (list, tuple))
        or not patterns
        or not all(isinstance(p, str) and p for p in patterns)
    ):
        raise UsageError("tensors= takes a non-empty list of glob patterns, e.g. tensors=['head.*']")
    return list(patterns)


def load_tensors(
    repo: Repository, name: str, version: str, manifest: Manifest, tensors: object
) -> dict[str, Any]:
    """``{tensor name: tensor}`` for the tensors of a version matching any glob of ``tensors``."""
    patterns = _patterns(tensors)
    where = f"model {name!r} version {version!r}"
    index: dict[str, list[tuple[str, TensorInfo]]] = {}
    for f in manifest.files:
        for t in f.tensors or ():
            index.setdefault(t.name, []).append((f.path, t))
    if not index:
        why = (
            f"registered with manifest format {manifest.format}" if manifest.format < 2 else "no tensor file"
        )
        raise UsageError(f"{where} has no tensor data ({why}); load it whole, without tensors=")
    aliases = manifest.serializer_meta.get("aliases") if manifest.serializer == "torch" else None
    aliases = (
        {a: t for a, t in aliases.items() if isinstance(t, str) and t in index}
        if isinstance(aliases, dict)
        else {}
    )
    selected: dict[str, str] = {}  # returned name -> stored name
    for p in patterns:
        hits = [n for n in (*index, *aliases) if fnmatch.fnmatchcase(n, p)]
        if not hits:
            sample = ", ".join(sorted(index)[:3])
            raise UsageError(f"no tensor of {where} matches {p!r} ({len(index)} tensors, e.g. {sample})")
        for n in hits:
            selected[n] = aliases.get(n, n)
    wanted: dict[str, list[TensorInfo]] = {}
    for stored in dict.fromkeys(selected.values()):
        places = index[stored]
        if len(places) > 1:
            paths = ", ".join(path for path, _t in places)
            raise UsageError(f"tensor {stored!r} of {where} is in several files ({paths})")
        path, info = places[0]
        wanted.setdefault(path, []).append(info)
    use_torch = _torch_wanted(manifest.serializer)
    arrays = {
        t.name: to_array(t, buf, use_torch)
        for _path, t, buf in read_tensors(repo, name, version, manifest, wanted)
    }
    return {n: arrays[selected[n]] for n in sorted(selected)}


def diff_stats(repo: Repository, diff: VersionDiff, ma: Manifest, mb: Manifest) -> VersionDiff:
    """``diff`` with max |Δ|, mean |Δ| and relative L2 for each changed tensor (and each cast
    of the same shape), reading those tensors only, from both versions."""
    stats: dict[tuple[str, str], dict[str, float | None]] = {}
    for f in diff.files:  # one file at a time: memory holds the changed tensors of one side
        pairs = [
            (t.a, t.b) for t in f.tensors or () if wants_stats(t) and t.a is not None and t.b is not None
        ]
        if not pairs:
            continue
        want_a = {f.renamed_from or f.path: [a for a, _b in pairs]}
        old = {
            ta.name: _as_float(ta, buf) for _p, ta, buf in read_tensors(repo, diff.name, diff.a, ma, want_a)
        }
        for _p, tb, buf in read_tensors(repo, diff.name, diff.b, mb, {f.path: [b for _a, b in pairs]}):
            stats[(f.path, tb.name)] = tensor_stats(old.pop(tb.name), _as_float(tb, buf))
    return with_stats(diff, stats)
