"""The version manifest: a deterministic msgpack record, and its human-readable card.

Layout (``format`` 1)::

    {format, name, version, created_at, author, framework, serializer, serializer_meta,
     files: [{path, size, mode, digest, chunks: [[digest bytes(32), size], ...]}],
     content_digest, metrics, params, tags, description, lineage, libraries}

Packing sorts every map's keys, so the same record always gives the same bytes (and the
same Git blob). Unpacking validates what it reads: paths, digests, types.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import blake3
import msgpack

from ._errors import IntegrityError, UsageError
from ._naming import validate_digest, validate_model_name, validate_relpath, validate_version
from ._store import ChunkRef, FileRecord
from ._types import FileInfo, ModelVersion

__all__ = [
    "MANIFEST_FORMAT",
    "pack",
    "unpack",
    "file_entry",
    "file_records",
    "content_digest",
    "render_card",
    "to_model_version",
    "json_safe",
]

MANIFEST_FORMAT = 1


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def pack(manifest: dict[str, Any]) -> bytes:
    return msgpack.packb(_canonical(manifest), use_bin_type=True)


def unpack(data: bytes, context: str = "") -> dict[str, Any]:
    """Decode and validate a manifest; raise IntegrityError when it is malformed."""
    where = f"{context}: " if context else ""
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise IntegrityError(f"{where}manifest is not valid msgpack") from exc
    try:
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
            raise IntegrityError(f"{where}unsupported manifest format {m.get('format') if isinstance(m, dict) else m!r}")
        validate_model_name(m["name"])
        validate_version(m["version"])
        for f in m["files"]:
            validate_relpath(f["path"])
            validate_digest(f["digest"], "file digest")
            if not isinstance(f["size"], int) or f["size"] < 0:
                raise IntegrityError(f"{where}bad size for {f['path']!r}")
            for c in f["chunks"]:
                if not (isinstance(c[0], bytes) and len(c[0]) == 32 and isinstance(c[1], int) and c[1] > 0):
                    raise IntegrityError(f"{where}bad chunk entry in {f['path']!r}")
    except IntegrityError:
        raise
    except UsageError as exc:
        raise IntegrityError(f"{where}manifest rejected: {exc}") from exc
    except (KeyError, TypeError, IndexError) as exc:
        raise IntegrityError(f"{where}manifest is missing fields ({exc})") from exc
    return m


def file_entry(path: str, rec: FileRecord, mode: int) -> dict[str, Any]:
    return {
        "path": path,
        "size": rec.size,
        "mode": 0o755 if mode & 0o111 else 0o644,
        "digest": rec.digest,
        "chunks": [[bytes.fromhex(c.digest), c.size] for c in rec.chunks],
    }


def file_records(manifest: dict[str, Any]) -> list[tuple[str, FileRecord, int]]:
    out = []
    for f in manifest["files"]:
        chunks = tuple(ChunkRef(c[0].hex(), c[1]) for c in f["chunks"])
        out.append((f["path"], FileRecord(f["size"], f["digest"], chunks), f.get("mode", 0o644)))
    return out


def content_digest(files: list[dict[str, Any]]) -> str:
    """Identity of a version's bytes: BLAKE3 over sorted (path, mode, file digest)."""
    h = blake3.blake3(b"uniflow-content-v1\x00")
    for f in sorted(files, key=lambda f: f["path"]):
        h.update(f"{f['path']}\x00{f['mode']:o}\x00{f['digest']}\n".encode())
    return h.hexdigest()


def json_safe(value: Any, what: str = "value") -> Any:
    """Metrics, params, tags and lineage must round-trip through JSON and msgpack."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, what) for v in value]
    # numpy / torch scalars
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item(), what)
        except (TypeError, ValueError):
            pass
    return repr(value)


def _fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_card(m: dict[str, Any]) -> str:
    """A Markdown model card: what ``git show`` of a version tag prints."""
    lines = [f"# {m['name']} {m['version']}", ""]
    if m.get("description"):
        lines += [m["description"], ""]
    size = sum(f["size"] for f in m["files"])
    lineage = m.get("lineage", {})
    lines += [
        f"- framework: {m['framework']} (serializer: {m['serializer']})",
        f"- registered: {m['created_at']} by {m['author']}",
        f"- code commit: {lineage.get('code_commit') or 'none'}"
        + (" (working tree was dirty)" if lineage.get("dirty") else "")
        + (f" on {lineage['branch']}" if lineage.get("branch") else ""),
        f"- size: {_fmt_size(size)} in {len(m['files'])} file(s)",
        f"- content digest: blake3:{m['content_digest']}",
        "",
    ]
    for title, key in (("Metrics", "metrics"), ("Parameters", "params"), ("Tags", "tags")):
        if m.get(key):
            lines += [f"## {title}", ""] + [f"- {k}: {json.dumps(v)}" for k, v in sorted(m[key].items())] + [""]
    lines += ["## Files", ""]
    lines += [f"- `{f['path']}` {_fmt_size(f['size'])} blake3:{f['digest'][:16]}" for f in m["files"]]
    extra = {k: v for k, v in lineage.items() if k not in ("code_commit", "branch", "dirty")}
    if extra:
        lines += ["", "## Lineage", "", "```json", json.dumps(extra, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def to_model_version(m: dict[str, Any], stage: str, tag_ref: str = "") -> ModelVersion:
    lineage = m.get("lineage", {})
    files = tuple(
        FileInfo(path=f["path"], size=f["size"], digest=f["digest"], chunks=len(f["chunks"]), mode=f.get("mode", 0o644))
        for f in m["files"]
    )
    created = datetime.fromisoformat(m["created_at"])
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return ModelVersion(
        name=m["name"],
        version=m["version"],
        stage=stage,
        framework=m["framework"],
        serializer=m["serializer"],
        metrics=dict(m.get("metrics", {})),
        tags=dict(m.get("tags", {})),
        params=dict(m.get("params", {})),
        description=m.get("description", ""),
        created_at=created,
        author=m.get("author", ""),
        code_commit=lineage.get("code_commit"),
        branch=lineage.get("branch"),
        dirty=bool(lineage.get("dirty", False)),
        size=sum(f.size for f in files),
        digest=m["content_digest"],
        files=files,
        lineage=dict(lineage),
        libraries=dict(m.get("libraries", {})),
        tag_ref=tag_ref,
    )
