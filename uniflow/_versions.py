"""Version records: writing a version (manifest, card, commit, tag) and reading it back.

Write order (DESIGN invariant 1): the chunks are already durable when :func:`write_version`
runs; it writes the manifest blob, the card, the version commit and the annotated tag,
and only then creates the tag ref with ``add_if_new``. Nothing is visible before the ref.
"""

from __future__ import annotations

from typing import Any

from ._errors import IntegrityError, VersionExistsError
from ._git import GitRepo, Identity
from ._lifecycle import tag_ref
from ._manifest import pack, render_card, unpack
from ._objcache import DerivedCache

__all__ = ["VersionIndex", "CARD_DIR"]

CARD_DIR = (".uniflow", "card")
MANIFEST_PATH = ".uniflow/card/manifest.msgpack"


class VersionIndex:
    """Version tags of one repository, with decoded manifests cached (tags are immutable)."""

    def __init__(self, git: GitRepo, cache: DerivedCache | None = None) -> None:
        self.git = git
        self.derived = cache
        self._cache: dict[str, tuple[str, dict[str, Any]]] = {}  # tag sha -> (commit, manifest)

    def models(self) -> list[str]:
        return sorted(self.all_version_names())

    def all_version_names(self) -> dict[str, list[str]]:
        """``{model: [version, ...]}`` for every model with a tag or a lifecycle, in one scan."""
        out: dict[str, list[str]] = {}
        for ref in self.git.ref_names("refs/tags/models"):
            model, sep, version = ref.partition("/")
            if sep and version and "/" not in version:
                out.setdefault(model, []).append(version)
        for model in self.git.ref_names("refs/uniflow/models"):
            if "/" not in model:
                out.setdefault(model, [])
        return out

    def versions(self, model: str) -> dict[str, str]:
        """``{version: tag sha}`` of ``model``."""
        return {k: v for k, v in self.git.refs(f"refs/tags/models/{model}").items() if "/" not in k}

    def version_names(self, model: str) -> list[str]:
        return [n for n in self.git.ref_names(f"refs/tags/models/{model}") if "/" not in n]

    def tag_sha(self, model: str, version: str) -> str | None:
        return self.git.ref(tag_ref(model, version))

    def manifest(self, model: str, version: str, tag_sha: str | None = None) -> tuple[str, dict[str, Any]]:
        """``(version commit, manifest)`` for a version whose tag exists."""
        sha = tag_sha or self.tag_sha(model, version)
        if sha is None:
            raise KeyError(version)
        hit = self._cache.get(sha)
        if hit is not None:
            return hit
        context = f"model {model!r} version {version!r}"
        cached = self.derived.get("manifest", sha) if self.derived else None
        data: bytes | None
        if cached is not None:
            commit, data = cached[:40].decode(), cached[40:]
        else:
            try:
                tag = self.git.read_tag(sha)
                commit = tag.object[1].decode()
                data = self.git.read_path(commit, MANIFEST_PATH)
            except KeyError as exc:
                raise IntegrityError(f"{context}: git objects of the version are missing") from exc
            if data is None:
                raise IntegrityError(f"{context}: the version commit has no {MANIFEST_PATH}")
            if self.derived:
                self.derived.put("manifest", sha, commit.encode() + data)
        m = unpack(data, context)
        if m["name"] != model or m["version"] != version:
            raise IntegrityError(f"{context}: the tag points at the manifest of {m['name']} {m['version']}")
        self._cache[sha] = (commit, m)
        return commit, m

    def write_version(self, manifest: dict[str, Any], code_commit: str | None, actor: Identity) -> tuple[bool, str]:
        """Create the version; ``(True, tag sha)`` if this call created it, else
        ``(False, existing tag sha)`` when the same content was already registered.
        Raises VersionExistsError when the version exists with different content."""
        name, version = manifest["name"], manifest["version"]
        existing = self.tag_sha(name, version)
        if existing is not None:  # fast path; the add_if_new below stays the real check
            return False, self._same_or_raise(manifest, existing)
        card = render_card(manifest)
        base_tree = self.git.read_commit(code_commit).tree.decode() if code_commit else None
        tree = self.git.tree_with_files(
            base_tree, CARD_DIR, {"README.md": card.encode(), "manifest.msgpack": pack(manifest)}
        )
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(manifest.get("metrics", {}).items()))
        message = f"Register model {name} {version}\n\n" + (f"Metrics: {metrics}\n" if metrics else "")
        commit = self.git.write_commit(tree, [code_commit] if code_commit else [], message, actor)
        tag = self.git.write_tag(f"models/{name}/{version}", commit, card, actor)
        if self.git.create_ref(tag_ref(name, version), tag, message=f"uniflow: register {name} {version}"):
            return True, tag
        existing = self.tag_sha(name, version)
        if existing is None:  # deleted between our attempt and this read: report, do not loop
            raise VersionExistsError(name, version, "(it was being changed concurrently)")
        return False, self._same_or_raise(manifest, existing)

    def _same_or_raise(self, manifest: dict[str, Any], existing: str) -> str:
        name, version = manifest["name"], manifest["version"]
        _, other = self.manifest(name, version, existing)
        if other["content_digest"] != manifest["content_digest"]:
            raise VersionExistsError(name, version)
        return existing
