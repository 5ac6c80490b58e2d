"""The version manifest: a deterministic msgpack record, and its human-readable card.

Layout (``format`` 3, what every register writes)::

    {format, name, version, created_at, author, framework, serializer, serializer_meta,
     files: [{path, size, mode, digest, chunks: [[digest bytes(32), size], ...],
              tensors?: [[name, dtype, shape, begin, end, digest], ...]}],
     content_digest, metrics, params, tags, description, lineage, libraries}

A file's ``digest`` is its identity. In format 3 it is the Merkle identity of its chunk
list (``_storage.merkle.merkle_identity`` over ``(chunk name, size)``), a pure function of
the chunks listed, which the gate checks; a tensor's ``digest`` is the Merkle identity of
its bytes split at the chunk boundaries (``_records.tensors``). Format 2 is the same
layout with BLAKE3 of the bytes as both digests (what ``b3sum`` prints); format 1 is format
2 without ``tensors``. All three are read, forever; the two kinds of digest are never
compared with each other (``_ops.diff`` compares chunks or bytes across kinds). A
manifest of a format above :data:`MANIFEST_FORMAT` is refused with
:class:`NewerManifestError`: upgrade uniflow.

Packing sorts every map's keys, so the same record always gives the same bytes (and the
same Git blob). :func:`unpack` is the one gate for manifests read from Git or a cache:
it validates everything (see :func:`check`), raises only :class:`IntegrityError`, and
returns the typed, frozen :class:`Manifest` (files as :class:`FileEntry`, tensors as
``_records.tensors.TensorInfo``) that every reader uses. ``pack(unpack(data))`` gives
``data`` back byte for byte: optional keys a manifest does not hold are remembered as
absent, and keys this version does not know are kept as they were.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3
import msgpack

from .._bounded import load_msgpack
from .._errors import IntegrityError, UniflowError
from .._format import human_size
from .._naming import validate_digest, validate_key, validate_model_name, validate_relpath, validate_version
from .._storage.chunking import ChunkRef, FileRecord
from .._storage.merkle import merkle_identity
from .._types import ChunkDigest, FileInfo, ModelVersion
from .config import Limits
from .tensors import TensorInfo, check_tensors

__all__ = [
    "Manifest",
    "FileEntry",
    "MANIFEST_FORMAT",
    "MERKLE_FORMAT",
    "NewerManifestError",
    "READ_FORMATS",
    "pack",
    "unpack",
    "check",
    "MAX_CHUNK_BYTES",
    "MIN_NONFINAL_CHUNK",
    "file_entry",
    "file_records",
    "content_digest",
    "render_card",
    "to_model_version",
    "json_safe",
]

MANIFEST_FORMAT = 3
#: formats this gate reads: 1 has no per-tensor data, 3 has Merkle identities as digests
READ_FORMATS = (1, 2, 3)
#: the first format whose file and tensor digests are Merkle identities (before: BLAKE3 of the bytes)
MERKLE_FORMAT = 3


class NewerManifestError(IntegrityError):
    """A manifest written by a newer uniflow, of a format this one does not read."""


#: the largest chunk a manifest may name (the chunker cuts at most 4 MiB)
MAX_CHUNK_BYTES = 64 << 20
#: the smallest chunk but a file's last a manifest may name. The chunker never cuts below
#: 256 KiB; a quarter of that leaves room to retune it. So a file of S bytes has at most
#: 1 + (S - 1) // 64 KiB chunks, and a claimed size bounds the chunk list it may carry.
MIN_NONFINAL_CHUNK = 64 << 10
#: manifests smaller than this are decoded at once; larger ones are pre-scanned first
_PRESCAN_FROM = 1 << 20
_MAX_TOP_KEYS = 64
_MAX_FILE_KEYS = 16
_MODES = (0o644, 0o755)
_REQUIRED = ("name", "version", "created_at", "framework", "serializer", "files", "content_digest")
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


#: the keys of a manifest a reader may find absent (read as their empty value)
_OPTIONAL = ("author", "description", "serializer_meta", "metrics", "params", "tags", "lineage", "libraries")
_KNOWN = frozenset(_REQUIRED + _OPTIONAL + ("format",))
_FILE_KNOWN = frozenset(("path", "size", "mode", "digest", "chunks", "tensors"))


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a version, as its manifest entry records it.

    ``chunks`` are ``(BLAKE3-256 digest as 32 bytes, size)`` pairs in file order;
    ``tensors`` is None when the entry records no tensor list (format 1, or not a tensor
    file). ``extra`` holds keys this version of uniflow does not know (packed back as read).
    """

    path: str
    size: int
    mode: int
    digest: str
    chunks: tuple[tuple[bytes, int], ...]
    tensors: tuple[TensorInfo, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, f: Mapping[str, Any]) -> FileEntry:
        """The entry of a file map that :func:`check` accepted."""
        rows = f.get("tensors")
        return cls(
            path=f["path"],
            size=f["size"],
            mode=f["mode"],
            digest=f["digest"],
            chunks=tuple(map(tuple, f["chunks"])),  # checked: [bytes, int] pairs
            tensors=None if rows is None else tuple(map(TensorInfo.from_row, rows)),
            extra={k: v for k, v in f.items() if k not in _FILE_KNOWN},
        )

    def to_dict(self) -> dict[str, Any]:
        """The map that is packed: the on-disk form of this entry."""
        out: dict[str, Any] = {
            **self.extra,
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "digest": self.digest,
            "chunks": [list(c) for c in self.chunks],
        }
        if self.tensors is not None:
            out["tensors"] = [t.to_row() for t in self.tensors]
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """A version's manifest (``.uniflow/card/manifest.msgpack`` of its commit), typed and frozen.

    Built by the gate (:func:`unpack`) from bytes it validated, or by register. Optional keys
    read as empty values; ``absent`` names those the bytes did not hold and ``extra`` keeps
    keys this version does not know, so :func:`pack` gives the bytes read back exactly.
    """

    format: int
    name: str
    version: str
    created_at: str
    framework: str
    serializer: str
    files: tuple[FileEntry, ...]
    content_digest: str
    author: str = ""
    description: str = ""
    serializer_meta: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    libraries: Mapping[str, str] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, m: Mapping[str, Any]) -> Manifest:
        """The record of a manifest map that :func:`check` accepted."""
        return cls(
            format=m["format"],
            name=m["name"],
            version=m["version"],
            created_at=m["created_at"],
            framework=m["framework"],
            serializer=m["serializer"],
            files=tuple(map(FileEntry.from_dict, m["files"])),
            content_digest=m["content_digest"],
            author=m.get("author", ""),
            description=m.get("description", ""),
            serializer_meta=m.get("serializer_meta", {}),
            metrics=m.get("metrics", {}),
            params=m.get("params", {}),
            tags=m.get("tags", {}),
            lineage=m.get("lineage", {}),
            libraries=m.get("libraries", {}),
            absent=frozenset(k for k in _OPTIONAL if k not in m),
            extra={k: v for k, v in m.items() if k not in _KNOWN},
        )

    def to_dict(self) -> dict[str, Any]:
        """The map that is packed: the on-disk form of this manifest."""
        out: dict[str, Any] = {
            **self.extra,
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "framework": self.framework,
            "serializer": self.serializer,
            "files": [f.to_dict() for f in self.files],
            "content_digest": self.content_digest,
        }
        for key in _OPTIONAL:
            if key not in self.absent:
                out[key] = getattr(self, key)
        return out

    @property
    def size(self) -> int:
        """The bytes of all the version's files."""
        return sum(f.size for f in self.files)


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def pack(manifest: Manifest | Mapping[str, Any]) -> bytes:
    """The manifest's bytes: deterministic msgpack with every map's keys sorted. A plain map
    is packed as it is (how tests forge a manifest the gate must refuse)."""
    raw = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    packed: bytes = msgpack.packb(_canonical(raw), use_bin_type=True)
    return packed


def unpack(
    data: bytes,
    context: str = "",
    *,
    limits: Limits | None = None,
    name: str | None = None,
    version: str | None = None,
) -> Manifest:
    """Decode and validate a manifest read from Git (or a cache of it): the one gate.

    Raises :class:`IntegrityError` naming ``context`` (the ref or commit) for anything that
    is not a well-formed manifest (see :func:`check`), and never any other exception,
    whatever ``data`` holds. The blob's length is bounded before decoding, and a manifest
    whose headers claim more files or chunks than its sizes allow is refused before its
    chunk lists are decoded, and one whose decoding would cost more than
    ``_bounded.RATIO`` times its length (however deep or wide its arrays, in any field)
    is refused before anything is built. ``name``/``version``, when given, must be the manifest's own.
    """
    where = f"{context}: " if context else ""
    lim = limits or Limits()
    if not isinstance(data, (bytes, bytearray)):
        raise IntegrityError(f"{where}manifest is not a byte string")
    if len(data) > lim.max_manifest_bytes:
        raise IntegrityError(
            f"{where}manifest is {len(data)} bytes, more than max_manifest_bytes ({lim.max_manifest_bytes}; "
            "[limits] in .uniflow/config.toml)"
        )
    if len(data) > _PRESCAN_FROM:
        _prescan(bytes(data), where, lim)
    # Every container, element and payload byte is costed from the raw bytes before any
    # object is built (``_bounded``): nested or wide empty arrays in any field are refused.
    m = load_msgpack(bytes(data), f"{where}manifest")
    check(m, context, limits=lim)
    record = Manifest.from_dict(m)
    if (name is not None and record.name != name) or (version is not None and record.version != version):
        raise IntegrityError(f"{where}the tag points at the manifest of {record.name} {record.version}")
    return record


def check(m: object, context: str = "", *, limits: Limits | None = None) -> None:
    """Raise :class:`IntegrityError` unless ``m`` is a well-formed manifest within ``limits``.

    Checked: format (one above :data:`MANIFEST_FORMAT` is :class:`NewerManifestError`), name
    and version; ``content_digest`` and every file digest are 64 lowercase hex and
    ``content_digest`` is the digest of the files; in format 3, every file digest is the
    Merkle identity of the file's chunk list; paths are relative,
    normalised, unique and no path is a directory of another; modes are exactly 0o644 or
    0o755; each file's size is the sum of its chunks, each chunk 1 byte to MAX_CHUNK_BYTES
    and, but for a file's last, at least MIN_NONFINAL_CHUNK; chunk, file and byte counts
    within ``limits``; metrics, params, tags, lineage, libraries and serializer_meta are of
    the right types, and the keys of metrics, params and tags are printable one-line
    strings (:func:`validate_key`); ``created_at`` is an ISO-8601 time.
    """
    where = f"{context}: " if context else ""
    try:
        _check(m, where, limits or Limits())
    except IntegrityError as exc:
        if str(exc).startswith(where):
            raise
        raise IntegrityError(f"{where}{exc}") from exc  # e.g. validate_digest's message
    except UniflowError as exc:  # a name, version or path rule: the manifest is at fault
        raise IntegrityError(f"{where}manifest rejected: {exc}") from exc
    except (
        KeyError,
        TypeError,
        IndexError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise IntegrityError(f"{where}manifest is malformed ({type(exc).__name__}: {exc})") from exc


def _bad(where: str, what: str) -> IntegrityError:
    return IntegrityError(f"{where}{what}")


def _check(m: object, where: str, lim: Limits) -> None:
    if not isinstance(m, dict):
        raise _bad(where, f"manifest is a {type(m).__name__}, not a map")
    fmt = m.get("format")
    if type(fmt) is int and fmt > MANIFEST_FORMAT:
        raise NewerManifestError(
            f"{where}manifest written by a newer uniflow (format {fmt}; this one reads up to "
            f"{MANIFEST_FORMAT}): upgrade uniflow"
        )
    if type(fmt) is not int or fmt not in READ_FORMATS:
        raise _bad(where, f"unsupported manifest format {fmt!r}")
    for key in _REQUIRED:
        if key not in m:
            raise _bad(where, f"manifest has no {key!r}")
    validate_model_name(m["name"])
    validate_version(m["version"])
    for key in ("created_at", "framework", "serializer", "author", "description"):
        if key in m and not isinstance(m[key], str):
            raise _bad(where, f"manifest field {key!r} is not a string")
    created = datetime.fromisoformat(m["created_at"])  # ValueError -> IntegrityError above
    del created
    validate_digest(m["content_digest"], "content digest")
    files = m["files"]
    if not isinstance(files, list):
        raise _bad(where, "manifest 'files' is not a list")
    if len(files) > lim.max_chunks:
        raise _bad(where, f"manifest lists {len(files)} files, more than max_chunks ({lim.max_chunks})")
    _check_files(files, where, lim, m["format"])
    if content_digest(files) != m["content_digest"]:
        raise _bad(where, "content digest does not match the manifest's files")
    _check_annotations(m, where)


def _check_annotations(m: dict[str, Any], where: str) -> None:
    """The free-form parts of a manifest: metrics, params and serializer metadata are JSON-like;
    tags and libraries map strings to strings; keys print on one line; lineage is checked."""
    for key in ("metrics", "params", "serializer_meta"):
        if key in m:
            _json_like(m[key], f"{where}manifest {key!r}", top=True)
    for key in ("tags", "libraries"):
        if key in m and not (
            isinstance(m[key], dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in m[key].items())
        ):
            raise _bad(where, f"manifest {key!r} must map strings to strings")
    for key in ("metrics", "params", "tags"):  # printed in tables and cards: one printable line each
        for k in m.get(key, {}):
            validate_key(k, key[:-1])
    if "lineage" in m:
        _check_lineage(m["lineage"], where)


def _check_files(files: list[Any], where: str, lim: Limits, fmt: int = MANIFEST_FORMAT) -> None:
    paths: set[str] = set()
    total_chunks = total_size = total_tensors = 0
    for f in files:
        if not isinstance(f, dict):
            raise _bad(where, "a manifest file entry is not a map")
        path = validate_relpath(f["path"])
        if path in paths:
            raise _bad(where, f"path {path!r} is listed twice")
        paths.add(path)
        validate_digest(f["digest"], "file digest")
        mode = f["mode"]
        if mode not in _MODES or isinstance(mode, bool):
            raise _bad(where, f"file {path!r} has mode {_octal(mode)}: only 0o644 and 0o755 are allowed")
        size, chunks = f["size"], f["chunks"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(where, f"bad size {size!r} for {path!r}")
        if not isinstance(chunks, list):
            raise _bad(where, f"chunk list of {path!r} is not a list")
        # O(1) bounds first, so a forged list of a million tiny chunks costs nothing to refuse
        _check_count(len(chunks), size, path, where)
        total_chunks += len(chunks)
        total_size += size
        if total_chunks > lim.max_chunks:
            raise _bad(where, f"manifest has more than max_chunks ({lim.max_chunks}) chunks")
        if total_size > lim.max_version_bytes:
            raise _bad(where, f"manifest claims more than max_version_bytes ({lim.max_version_bytes}) bytes")
        _check_chunks(chunks, size, path, where)
        if fmt >= MERKLE_FORMAT and f["digest"] != merkle_identity((c[0], c[1]) for c in chunks):
            raise _bad(where, f"file {path!r}: its digest is not the identity of its chunks")
        if "tensors" in f:  # format 2: per-tensor data (_tensors), counted against max_chunks
            if fmt < 2:
                raise _bad(where, f"format-{fmt} manifest carries tensor data for {path!r}")
            total_tensors += check_tensors(f["tensors"], size, path, lim.max_chunks - total_tensors)
    for path in paths:  # "a" and "a/b" cannot both be files
        parent = path.rpartition("/")[0]
        while parent:  # bounded by the path's depth
            if parent in paths:
                raise _bad(where, f"path {parent!r} is both a file and the directory of {path!r}")
            parent = parent.rpartition("/")[0]


def _check_count(count: int, size: int, path: str, where: str) -> None:
    if size == 0 and count == 0:
        return
    low = -(-size // MAX_CHUNK_BYTES)
    high = 1 + (size - 1) // MIN_NONFINAL_CHUNK if size > 0 else 0
    if not low <= count <= high:
        raise _bad(where, f"file {path!r} of {size} bytes cannot have {count} chunks")


def _check_chunks(chunks: list[Any], size: int, path: str, where: str) -> None:
    total = 0
    last = len(chunks) - 1
    for i, c in enumerate(chunks):
        if not (isinstance(c, list) and len(c) == 2 and isinstance(c[0], bytes) and len(c[0]) == 32):
            raise _bad(where, f"bad chunk entry in {path!r}")
        n = c[1]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHUNK_BYTES:
            raise _bad(where, f"bad chunk size {n!r} in {path!r}")
        if i != last and n < MIN_NONFINAL_CHUNK:
            raise _bad(
                where, f"chunk {i} of {path!r} is {n} bytes; only a file's last chunk may be that small"
            )
        total += n
    if total != size:
        raise _bad(where, f"file {path!r} claims {size} bytes but its chunks hold {total}")


def _check_lineage(lineage: object, where: str) -> None:
    _json_like(lineage, f"{where}manifest 'lineage'", top=True)
    assert isinstance(lineage, dict)
    commit = lineage.get("code_commit")
    if commit is not None and not (isinstance(commit, str) and _SHA_RE.fullmatch(commit)):
        raise _bad(where, f"lineage code_commit {commit!r} is not a commit id")
    if lineage.get("branch") is not None and not isinstance(lineage["branch"], str):
        raise _bad(where, "lineage branch is not a string")
    if not isinstance(lineage.get("dirty", False), bool):
        raise _bad(where, "lineage dirty is not a boolean")


def _json_like(value: object, what: str, top: bool = False, depth: int = 0) -> None:
    """``value`` is what JSON holds: str-keyed maps, lists, str, int, float, bool, None."""
    if top and not isinstance(value, dict):
        raise IntegrityError(f"{what} is not a map")
    if depth > 32:
        raise IntegrityError(f"{what} is nested too deeply")
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, list):
        for v in value:
            _json_like(v, what, depth=depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise IntegrityError(f"{what} has a key that is not a string")
            _json_like(v, what, depth=depth + 1)
        return
    raise IntegrityError(f"{what} holds a {type(value).__name__}")


def _octal(mode: object) -> str:
    return oct(mode) if isinstance(mode, int) else repr(mode)


def _array_len(data: bytes, pos: int) -> int | None:
    """The length an msgpack array header at ``pos`` announces (None: not an array)."""
    b = data[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC:
        return int.from_bytes(data[pos + 1 : pos + 3], "big")
    if b == 0xDD:
        return int.from_bytes(data[pos + 1 : pos + 5], "big")
    return None


def _prescan(data: bytes, where: str, lim: Limits) -> None:
    """Refuse a large manifest whose files claim impossible chunk counts, from headers alone.

    Walks the top-level map to ``files`` and reads each file's ``size`` and the *header* of
    its chunk list (skipping the entries in C), so ten million forged chunk entries are
    refused without being decoded. Anything unexpected is left to the full check.
    """
    u = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1))
    u.feed(data)
    try:
        keys = u.read_map_header()
        if keys > _MAX_TOP_KEYS:
            raise _bad(where, f"manifest has {keys} fields")
        for _ in range(keys):
            if u.unpack() != "files":
                u.skip()
                continue
            n_files = u.read_array_header()
            if n_files > lim.max_chunks:
                raise _bad(where, f"manifest lists {n_files} files, more than max_chunks ({lim.max_chunks})")
            total = 0
            for _f in range(n_files):
                fields = u.read_map_header()
                if fields > _MAX_FILE_KEYS:
                    raise _bad(where, f"a manifest file entry has {fields} fields")
                count: int | None = None
                size: object = None
                path: object = None
                for _k in range(fields):
                    key = u.unpack()
                    if key == "chunks":
                        count = _array_len(data, u.tell())
                        u.skip()
                    elif key == "size":
                        size = u.unpack()
                    elif key == "path":
                        path = u.unpack()
                    else:
                        u.skip()
                if count is not None and isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                    _check_count(count, size, path if isinstance(path, str) else "?", where)
                    total += count
                    if total > lim.max_chunks:
                        raise _bad(where, f"manifest has more than max_chunks ({lim.max_chunks}) chunks")
            return
    except IntegrityError:
        raise
    except Exception:  # malformed in a way the full decode and check will name
        return


def file_entry(
    path: str, rec: FileRecord, mode: int, tensors: Sequence[Sequence[Any]] | None = None
) -> FileEntry:
    """The manifest entry of a file the store holds as ``rec`` (``tensors``: its rows, if scanned)."""
    return FileEntry(
        path=path,
        size=rec.size,
        mode=0o755 if mode & 0o111 else 0o644,
        digest=rec.digest,
        chunks=tuple((bytes.fromhex(c.digest), c.size) for c in rec.chunks),
        tensors=None if tensors is None else tuple(map(TensorInfo.from_row, tensors)),
    )


def file_records(manifest: Manifest) -> list[tuple[str, FileRecord, int]]:
    """``(path, store record, mode)`` of every file of ``manifest``."""
    out = []
    for f in manifest.files:
        chunks = tuple(ChunkRef(ChunkDigest(d.hex()), n) for d, n in f.chunks)
        out.append((f.path, FileRecord(f.size, f.digest, chunks), f.mode))
    return out


def content_digest(files: Sequence[FileEntry] | Sequence[Mapping[str, Any]]) -> str:
    """Identity of a version's bytes: BLAKE3 over sorted (path, mode, file digest)."""
    rows = [
        (f.path, f.mode, f.digest) if isinstance(f, FileEntry) else (f["path"], f["mode"], f["digest"])
        for f in files
    ]
    h = blake3.blake3(b"uniflow-content-v1\x00")
    for path, mode, digest in sorted(rows, key=lambda r: r[0]):
        h.update(f"{path}\x00{mode:o}\x00{digest}\n".encode())
    return h.hexdigest()


def json_safe(value: Any) -> Any:
    """Metrics, params, tags and lineage must round-trip through JSON and msgpack.

    Non-finite floats (NaN, infinities) become ``None`` (``null`` in JSON), as documented.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    # numpy / torch scalars
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return repr(value)


def render_card(m: Manifest) -> str:
    """A Markdown model card: what ``git show`` of a version tag prints."""
    lines = [f"# {m.name} {m.version}", ""]
    if m.description:
        lines += [m.description, ""]
    lineage = m.lineage
    lines += [
        f"- framework: {m.framework} (serializer: {m.serializer})",
        f"- registered: {m.created_at} by {m.author}",
        f"- code commit: {lineage.get('code_commit') or 'none'}"
        + (" (working tree was dirty)" if lineage.get("dirty") else "")
        + (f" on {lineage['branch']}" if lineage.get("branch") else ""),
        f"- size: {human_size(m.size)} in {len(m.files)} file(s)",
        f"- content digest: blake3:{m.content_digest}",
        "",
    ]
    for title, values in (("Metrics", m.metrics), ("Parameters", m.params), ("Tags", m.tags)):
        if values:
            lines += (
                [f"## {title}", ""] + [f"- {k}: {json.dumps(v)}" for k, v in sorted(values.items())] + [""]
            )
    lines += ["## Files", ""]
    kind = "id" if m.format >= MERKLE_FORMAT else "blake3"
    lines += [f"- `{f.path}` {human_size(f.size)} {kind}:{f.digest[:16]}" for f in m.files]
    extra = {k: v for k, v in lineage.items() if k not in ("code_commit", "branch", "dirty")}
    if extra:
        lines += ["", "## Lineage", "", "```json", json.dumps(extra, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def to_model_version(m: Manifest, stage: str, tag_ref: str = "") -> ModelVersion:
    """The public :class:`ModelVersion` of a manifest, at ``stage``."""
    lineage = m.lineage
    files = tuple(
        FileInfo(path=f.path, size=f.size, digest=f.digest, chunks=len(f.chunks), mode=f.mode)
        for f in m.files
    )
    created = datetime.fromisoformat(m.created_at)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return ModelVersion(
        name=m.name,
        version=m.version,
        stage=stage,
        framework=m.framework,
        serializer=m.serializer,
        metrics=dict(m.metrics),
        tags=dict(m.tags),
        params=dict(m.params),
        description=m.description,
        created_at=created,
        author=m.author,
        code_commit=lineage.get("code_commit"),
        branch=lineage.get("branch"),
        dirty=bool(lineage.get("dirty", False)),
        size=sum(f.size for f in files),
        digest=m.content_digest,
        files=files,
        lineage=dict(lineage),
        libraries=dict(m.libraries),
        tag_ref=tag_ref,
    )
