"""``verify`` (re-hash everything) and ``gc`` (drop chunks nothing reaches).

gc never deletes a chunk that any version reachable from a ref reaches: every ref in the
repository is considered (tags, uniflow refs, remote-tracking refs, branches), an
annotated tag named ``models/...`` or a commit carrying a version card counts as a version.
It defaults to a dry run and spares objects younger than a grace period, so a register in
flight (chunks written, tag not yet created) is never collected.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._errors import IntegrityError, UniflowError
from ._manifest import file_records, unpack
from ._versions import MANIFEST_PATH

if TYPE_CHECKING:
    from ._registry import ModelRegistry

__all__ = ["verify", "gc", "reachable_manifests"]


def verify(reg: "ModelRegistry", name: str | None = None) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    models = [name] if name is not None else reg.index.models()
    if name is not None:
        reg._require_model(name)
    for model in models:
        for version, sha in sorted(reg.index.versions(model).items()):
            try:
                _, m = reg.index.manifest(model, version, sha)
            except IntegrityError as exc:
                problems.append({"model": model, "version": version, "file": None, "chunk": None, "problem": str(exc)})
                continue
            for rel, rec, _mode in file_records(m):
                for c in rec.chunks:
                    try:
                        reg.store.read_chunk(c)
                    except UniflowError as exc:
                        problems.append(
                            {
                                "model": model,
                                "version": version,
                                "file": rel,
                                "chunk": c.digest,
                                "problem": "missing" if "missing" in str(exc) else "corrupted",
                            }
                        )
    return problems


def reachable_manifests(reg: "ModelRegistry") -> list[dict[str, Any]]:
    """Manifests of every version any ref reaches (tags, remote-tracking refs, others)."""
    out = []
    for commit in reg.git.version_candidates():
        data = reg.git.read_path(commit, MANIFEST_PATH)
        if data is not None:
            try:
                out.append(unpack(data))
            except IntegrityError:
                continue
    return out


def gc(reg: "ModelRegistry", *, dry_run: bool = True, grace_seconds: float = 3600.0) -> dict[str, Any]:
    live: set[str] = set()
    live_files: set[str] = set()
    live_versions: set[str] = set()
    for m in reachable_manifests(reg):
        live_versions.add(m["content_digest"])
        for _rel, rec, _mode in file_records(m):
            live_files.add(rec.digest)
            live.update(c.digest for c in rec.chunks)
    cutoff = time.time() - grace_seconds
    unreachable = deleted = spared = 0
    freed = 0
    for digest, path in list(reg.store.iter_objects()):
        if digest in live:
            continue
        unreachable += 1
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime > cutoff:
            spared += 1
            continue
        freed += st.st_size
        if not dry_run:
            reg.store.delete_object(digest)
            deleted += 1
    tmp_removed = 0 if dry_run else reg.store.clean_tmp(grace_seconds)
    cache_removed = 0 if dry_run else reg.store.clean_cache(live_files, live_versions, grace_seconds)
    return {
        "dry_run": dry_run,
        "live_chunks": len(live),
        "unreachable_chunks": unreachable,
        "spared_young": spared,
        "deleted_chunks": deleted,
        "bytes_freed" if not dry_run else "bytes_to_free": freed,
        "tmp_removed": tmp_removed,
        "cache_removed": cache_removed,
        "grace_seconds": grace_seconds,
    }
