"""Tensors inside stored files: what register records about each, and what the gate accepts.

Register reads every file it stores (``ObjectStore.put_file``); for a ``.safetensors`` file
(what the torch serializer writes) or a ``.npy`` file, :class:`TensorScan` parses the header
from the file's start and hands the store the byte range of every tensor: the store cuts
the file's chunks at those edges (``_storage.cutting``) and builds each tensor's identity
from the chunk names (``_storage.merkle.RangeIdentities``). The result is a list in the
file's manifest entry (manifest formats 2 and 3)::

    tensors: [[name, dtype, [dim, ...], begin, end, digest], ...]

``begin``/``end`` are byte offsets in the file (``end`` exclusive), ``dtype`` one of
:data:`DTYPES` (safetensors' names; a ``.npy`` array's little-endian dtype is mapped to
them). ``digest`` is the tensor's identity: in format 3 the Merkle identity of its bytes
split at the file's chunk boundaries (a whole chunk is the leaf (chunk name, size), a
part of a chunk the leaf (BLAKE3 of that part, size)); in format 2 the BLAKE3-256 of the
tensor's bytes. Two digests of the same kind are equal exactly when the bytes are (up to
how the bytes were cut, for format 3: a tensor of at least the minimum chunk size whose
neighbours are not glued to it is cut by its own bytes alone), so two versions can be
compared tensor by tensor from their manifests alone (``_ops.diff``; across kinds it
compares chunks or bytes) and one tensor can be read from the chunks that cover its
range (``_ops.partial``).

A file whose header cannot be parsed, or that holds something outside the closed dtype set,
a Fortran-ordered or big-endian ``.npy``, a name that is not one printable line, simply
gets no tensor list: it is stored as bytes like any other file. (The numpy serializer writes
Fortran-ordered and big-endian arrays in C order, little-endian, and records how to restore
them in its meta, so the arrays it stores always get one.) :func:`check_tensors` is
the part of the manifest gate (``_records.manifest.check``) that validates these lists when a
manifest is read, so a hostile list can only ever produce an :class:`IntegrityError`.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._bounded import load_json
from .._errors import IntegrityError
from .._naming import validate_digest

__all__ = [
    "DTYPES",
    "MAX_NAME_LEN",
    "MAX_NDIM",
    "TensorInfo",
    "TensorScan",
    "check_tensors",
    "scan_for",
]

#: dtype name -> bytes per element: the closed set a manifest may name (safetensors' names)
DTYPES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2": 1,
    "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
    "C64": 8,
}
#: a tensor name is 1..MAX_NAME_LEN printable characters (no newline or control character)
MAX_NAME_LEN = 1024
#: at most this many dimensions, each at most MAX_DIM
MAX_NDIM = 64
MAX_DIM = 1 << 62
#: the largest safetensors header parsed at register. safetensors itself reads up to 100 MB,
#: but JSON decoded into Python objects takes many times its length; real headers take about 100 bytes a
#: tensor, so 16 MiB is over 150,000 tensors. A larger header, or one whose decoding would
#: cost more than ``_bounded.RATIO`` times its length (``_bounded.json_cost``), is not
#: parsed: the file is stored as bytes, without a tensor list. Peak: at most ~16 x 16 MiB.
_MAX_HEADER = 16 << 20
#: the largest ``.npy`` header parsed (numpy's own default ``max_header_size``): the
#: headers numpy writes for the plain dtypes recorded here are under 200 bytes
_MAX_NPY_HEADER = 10_000
#: .npy descr -> dtype (little-endian or byte-order-free only)
_NPY_DTYPES = {
    "|b1": "BOOL",
    "|u1": "U8",
    "|i1": "I8",
    "<u2": "U16",
    "<i2": "I16",
    "<f2": "F16",
    "<u4": "U32",
    "<i4": "I32",
    "<f4": "F32",
    "<u8": "U64",
    "<i8": "I64",
    "<f8": "F64",
    "<c8": "C64",
}
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor of a stored file, as its (validated) manifest entry records it: the row
    ``[name, dtype, shape, begin, end, digest]`` of the file's ``tensors`` list."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    digest: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TensorInfo:
        """The record of a manifest row that :func:`check_tensors` accepted."""
        return cls(row[0], row[1], tuple(row[2]), row[3], row[4], row[5])

    def to_row(self) -> list[Any]:
        """The manifest row, as packed: ``[name, dtype, [dim, ...], begin, end, digest]``."""
        return [self.name, self.dtype, list(self.shape), self.begin, self.end, self.digest]

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "digest": self.digest,
        }


# ---------------------------------------------------------------------- the gate
def _bad(path: str, what: str) -> IntegrityError:
    return IntegrityError(f"tensor list of {path!r}: {what}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LEN and name.isprintable()


def _check_shape(shape: object) -> int | None:
    """The element count of a valid shape (a list of 0..MAX_NDIM ints in 0..MAX_DIM), else None."""
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        return None
    count = 1
    for d in shape:
        if not _is_int(d) or not 0 <= d <= MAX_DIM:
            return None
        count *= d
    return count


def check_tensors(items: object, size: int, path: str, max_count: int) -> int:
    """Raise :class:`IntegrityError` unless ``items`` is a valid tensor list of a file of
    ``size`` bytes holding at most ``max_count`` tensors; return how many it holds.

    Each entry is ``[name, dtype, shape, begin, end, digest]``: a printable one-line name,
    unique in the file; a dtype of :data:`DTYPES`; a shape of at most :data:`MAX_NDIM`
    non-negative dimensions; ``0 <= begin <= end <= size`` with ``end - begin`` equal to the
    dtype's size times the element count; a 64-hex digest; and no two ranges overlap.
    """
    if not isinstance(items, list):
        raise _bad(path, "not a list")
    if len(items) > max_count:
        raise _bad(path, f"{len(items)} tensors, more than max_chunks ({max_count})")
    names: set[str] = set()
    spans: list[tuple[int, int]] = []
    for t in items:
        if not (isinstance(t, list) and len(t) == 6):
            raise _bad(path, "an entry is not [name, dtype, shape, begin, end, digest]")
        name, dtype, shape, begin, end, digest = t
        if not _check_name(name):
            raise _bad(path, f"invalid tensor name {str(name)[:80]!r}")
        if name in names:
            raise _bad(path, f"tensor {name!r} is listed twice")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _bad(path, f"tensor {name!r} has unknown dtype {str(dtype)[:20]!r}")
        count = _check_shape(shape)
        if count is None:
            raise _bad(path, f"tensor {name!r} has an invalid shape")
        if not (_is_int(begin) and _is_int(end) and 0 <= begin <= end <= size):
            raise _bad(path, f"tensor {name!r} has a byte range outside the file's {size} bytes")
        if end - begin != count * DTYPES[dtype]:
            raise _bad(path, f"tensor {name!r}: {end - begin} bytes do not hold {dtype} of shape {shape}")
        validate_digest(digest, f"digest of tensor {name!r}")
        spans.append((begin, end))
    spans.sort()
    for (_b0, e0), (b1, _e1) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            raise _bad(path, "two tensors overlap")
    return len(items)


# ---------------------------------------------------------------------- register: parsing headers
Parsed = list[tuple[str, str, list[int], int, int]]  # name, dtype, shape, begin, end


def parse_safetensors(view: memoryview, size: int | None = None) -> Parsed | None:
    """The tensors of a safetensors file's header (file order), or None if it is none.
    ``view`` is the file's start (at least its header), ``size`` its length (default: all
    of it is in ``view``)."""
    size = len(view) if size is None else size
    if len(view) < 8:
        return None
    n = int.from_bytes(view[:8], "little")
    if n < 2 or n > _MAX_HEADER or 8 + n > min(size, len(view)):
        return None
    try:
        header = load_json(bytes(view[8 : 8 + n]), "safetensors header", limit=_MAX_HEADER)
    except IntegrityError:  # not JSON, or would cost too much to decode
        return None
    if not isinstance(header, dict):
        return None
    base = 8 + n
    out: Parsed = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict):
            return None
        offsets = spec.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            return None
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if not isinstance(dtype, str) or not isinstance(shape, list):
            return None
        out.append((name, dtype, shape, base + offsets[0], base + offsets[1]))
    out.sort(key=lambda t: (t[3], t[4]))
    return out


def parse_npy(view: memoryview, name: str) -> Parsed | None:
    """The one array of a ``.npy`` file as a tensor named ``name``, or None (not a C-order,
    little-endian array of a known dtype). The header is read with ``ast.literal_eval``."""
    if len(view) < 10 or bytes(view[:6]) != _NPY_MAGIC:
        return None
    major = view[6]
    if major == 1:
        hlen, start = int.from_bytes(view[8:10], "little"), 10
    elif major in (2, 3) and len(view) >= 12:
        hlen, start = int.from_bytes(view[8:12], "little"), 12
    else:
        return None
    if hlen > _MAX_NPY_HEADER or start + hlen > len(view):
        return None
    try:
        header = ast.literal_eval(
            bytes(view[start : start + hlen]).decode("latin-1" if major < 3 else "utf-8")
        )
    except (ValueError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError, TypeError):
        return None
    if not isinstance(header, dict) or not isinstance(header.get("shape"), tuple):
        return None
    dtype = _NPY_DTYPES.get(str(header.get("descr")))
    shape = list(header["shape"])
    if dtype is None or (header.get("fortran_order") is not False and len(shape) > 1):
        return None
    count = _check_shape(shape)
    if count is None:
        return None
    begin = start + hlen
    return [(name, dtype, shape, begin, begin + count * DTYPES[dtype])]


class TensorScan:
    """What register gives ``ObjectStore.put_file`` for a tensor file: called with the file's
    first bytes (:meth:`head_size` says how many hold the header), it parses the header and
    returns the tensors' byte ranges (in file order), which the store cuts at and gives
    identities; :meth:`entries` then builds the manifest's tensor list."""

    def __init__(self, kind: str, npy_name: str = "array") -> None:
        self.kind = kind
        self.npy_name = npy_name
        self.found: Parsed | None = None
        self.size = 0

    def __call__(self, view: memoryview, size: int | None = None) -> Sequence[tuple[int, int]]:
        """The tensors' ranges, given the file's start ``view`` (at least its header; all of
        the file unless ``size`` says how long it is)."""
        size = len(view) if size is None else size
        try:
            if self.kind == "safetensors":
                parsed = parse_safetensors(view, size)
            else:
                parsed = parse_npy(view[:size], self.npy_name)
        except (ValueError, TypeError, OverflowError):
            parsed = None
        if parsed is not None:
            # Never record what the read gate would refuse: check with placeholder digests.
            try:
                check_tensors([[*t, "0" * 64] for t in parsed], size, "?", len(parsed))
            except IntegrityError:
                parsed = None
        self.found = parsed
        self.size = size
        return [(t[3], t[4]) for t in parsed or ()]

    def head_size(self, prefix: bytes) -> int:
        """How many bytes of the file's start hold its header, given its first 16 bytes (the
        store reads at least that much before calling this scan); 0 if it is no tensor file."""
        if self.kind == "safetensors" and len(prefix) >= 8:
            n = int.from_bytes(prefix[:8], "little")
            return 8 + n if n <= _MAX_HEADER else 0
        if self.kind == "npy" and len(prefix) >= 12 and prefix[:6] == _NPY_MAGIC:
            if prefix[6] == 1:
                return 10 + min(int.from_bytes(prefix[8:10], "little"), _MAX_NPY_HEADER)
            return 12 + min(int.from_bytes(prefix[8:12], "little"), _MAX_NPY_HEADER)
        return 0

    def entries(self, digests: Sequence[str]) -> list[list[Any]] | None:
        """The manifest tensor list, given the digests of the ranges returned (same order)."""
        if self.found is None or len(digests) != len(self.found):
            return None
        return [
            [name, dtype, list(shape), b, e, d]
            for (name, dtype, shape, b, e), d in zip(self.found, digests, strict=True)
        ]


def scan_for(path: str) -> TensorScan | None:
    """A scan for the manifest path ``path`` when it names a tensor file, else None."""
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return TensorScan("safetensors")
    if lower.endswith(".npy"):
        stem = path.rpartition("/")[2][: -len(".npy")] or "array"
        return TensorScan("npy", stem)
    return None
