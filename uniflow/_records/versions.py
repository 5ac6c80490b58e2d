"""Version records: writing a version (manifest, card, commit, tag) and reading it back.

Write order (DESIGN invariant 1): the chunks are already durable when :func:`write_version`
runs; it writes the manifest blob, the card, the version commit and the annotated tag,
and only then creates the tag ref with ``add_if_new``. Nothing is visible before the ref.

Reading goes through the one gate, :func:`uniflow._records.manifest.unpack`, whether the bytes come
from Git or from the derived cache. Tag refs whose names are not a valid model name and
version (a hostile remote can send ``refs/tags/models/Evil/x``) are not versions: every
listing here skips them, so they never become paths or ref names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import (
    IntegrityError,
    InvalidNameError,
    RepositoryError,
    UsageError,
    VersionExistsError,
    VersionNotFoundError,
)
from .._naming import validate_model_name, validate_version
from .._types import CommitId, TagId
from .config import Limits
from .git import GitRepo, Identity
from .manifest import MERKLE_FORMAT, Manifest, check, pack, render_card, unpack
from .objcache import DerivedCache
from .refs import LIFECYCLE_PREFIX, TAGS_PREFIX, lifecycle_ref, tag_name, tag_ref, tags_prefix

if TYPE_CHECKING:
    from .._authority.signing import Signer

__all__ = ["VersionIndex", "CARD_DIR", "MANIFEST_PATH", "is_model_name", "is_version", "commit_message"]

CARD_DIR = (".uniflow", "card")
MANIFEST_PATH = ".uniflow/card/manifest.msgpack"


def is_model_name(name: str) -> bool:
    """True when ``name`` is a valid model name (for filtering ref names)."""
    try:
        validate_model_name(name)
    except InvalidNameError:
        return False
    return True


def is_version(version: str) -> bool:
    """True when ``version`` is a valid version string (for filtering ref names)."""
    try:
        validate_version(version)
    except UsageError:
        return False
    return True


def commit_message(name: str, version: str, metrics: Mapping[str, Any]) -> str:
    """The version commit's message: a subject, then one line per metric, key and value
    JSON-encoded, so no key or value can start a line of its own. The heading is no trailer
    token and the lines start with a quote, so Git finds no trailers here at all."""
    lines = [f"Register model {name} {version}", ""]
    if metrics:
        lines.append("Metrics (JSON):")
        lines += [
            f"  {json.dumps(str(k), ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False, default=str)}"
            for k, v in sorted(metrics.items(), key=lambda kv: str(kv[0]))
        ]
    return "\n".join(lines) + "\n"


class VersionIndex:
    """Version tags of one repository, with decoded manifests cached (tags are immutable).

    ``limits`` returns the :class:`Limits` every manifest read is checked against (read from
    ``[limits]`` in config.toml by the registry; defaults when omitted).
    """

    def __init__(
        self, git: GitRepo, cache: DerivedCache | None = None, *, limits: Callable[[], Limits] | None = None
    ) -> None:
        self.git = git
        self.derived = cache
        self.limits = limits or Limits
        self._cache: dict[str, tuple[CommitId, Manifest]] = {}  # tag sha -> (commit, manifest)

    def models(self) -> list[str]:
        return sorted(self.all_version_names())

    def all_version_names(self) -> dict[str, list[str]]:
        """``{model: [version, ...]}`` for every model with a tag or a lifecycle, in one scan."""
        out: dict[str, list[str]] = {}
        valid: dict[str, bool] = {}
        for ref in self.git.ref_names(TAGS_PREFIX):
            model, sep, version = ref.partition("/")
            if (
                sep
                and version
                and "/" not in version
                and is_version(version)
                and valid.setdefault(model, is_model_name(model))
            ):
                out.setdefault(model, []).append(version)
        for model in self.git.ref_names(LIFECYCLE_PREFIX):
            if "/" not in model and is_model_name(model):
                out.setdefault(model, [])
        return out

    def invalid_ref_names(self) -> list[str]:
        """Refs under ``refs/tags/models`` and ``refs/uniflow/models`` that name no valid
        model or version: ignored by every read, reported by pull (and verify)."""
        bad = [
            f"{TAGS_PREFIX}/{ref}"
            for ref in self.git.ref_names(TAGS_PREFIX)
            if not (
                ref.count("/") == 1
                and is_model_name(ref.partition("/")[0])
                and is_version(ref.partition("/")[2])
            )
        ]
        bad += [lifecycle_ref(m) for m in self.git.ref_names(LIFECYCLE_PREFIX) if not is_model_name(m)]
        return bad

    def versions(self, model: str) -> dict[str, TagId]:
        """``{version: tag sha}`` of ``model`` (valid version names only)."""
        if not is_model_name(model):
            return {}
        return {
            k: TagId(v)
            for k, v in self.git.refs(tags_prefix(model)).items()
            if "/" not in k and is_version(k)
        }

    def version_names(self, model: str) -> list[str]:
        """The versions of ``model`` (valid version names only)."""
        if not is_model_name(model):
            return []
        return [n for n in self.git.ref_names(tags_prefix(model)) if "/" not in n and is_version(n)]

    def tag_sha(self, model: str, version: str) -> TagId | None:
        sha = self.git.ref(tag_ref(model, version))
        return None if sha is None else TagId(sha)

    def manifest(
        self,
        model: str,
        version: str,
        tag_sha: str | None = None,
        *,
        from_git: bool = False,
        memo: bool = True,
    ) -> tuple[CommitId, Manifest]:
        """``(version commit, manifest)`` for a version whose tag exists, validated.

        ``from_git=True`` reads the Git objects themselves, bypassing both caches (verify).
        ``memo=False`` does not keep the decoded manifest in this object (the listing index
        reads every manifest of a model once: 100,000 of them would stay in memory).
        A version without a tag (never registered, or deleted meanwhile) is a
        :class:`VersionNotFoundError`.
        """
        sha = tag_sha or self.tag_sha(model, version)
        if sha is None:
            raise VersionNotFoundError(model, version)
        if not from_git:
            hit = self._cache.get(sha)
            if hit is not None:
                return hit
        context = f"model {model!r} version {version!r} (tag {sha[:12]})"
        cached = self.derived.get("manifest", sha) if self.derived and not from_git else None
        data: bytes | None
        if cached is not None:
            commit, data = CommitId(cached[:40].decode("ascii", "replace")), cached[40:]
        else:
            commit, data = self._read_git(sha, context)
        m = unpack(data, context, limits=self.limits(), name=model, version=version)
        if cached is None and self.derived and not from_git:
            self.derived.put("manifest", sha, commit.encode() + data)
        if not from_git and memo:
            self._cache[sha] = (commit, m)
        return commit, m

    def _read_git(self, sha: str, context: str) -> tuple[CommitId, bytes]:
        """``(version commit, manifest bytes)`` read through Git from the tag object ``sha``.
        Anything else under a version's name (a lightweight tag, a tag on a blob or tree, a
        commit without a manifest) is an :class:`IntegrityError` saying which it is."""
        try:
            tag = self.git.read_tag(sha)
        except KeyError as exc:
            raise IntegrityError(f"{context}: git objects of the version are missing") from exc
        except RepositoryError as exc:
            raise IntegrityError(f"{context}: a lightweight tag, not a version's annotated tag") from exc
        kind, target = tag.object
        kind_name = getattr(kind, "type_name", b"?").decode("ascii", "replace")
        if kind_name != "commit":
            raise IntegrityError(f"{context}: the tag points at a {kind_name}, not at a version commit")
        commit = CommitId(target.decode("ascii", "replace"))
        try:
            data = self.git.read_path(
                commit, MANIFEST_PATH, self.limits().max_manifest_bytes, "max_manifest_bytes"
            )
        except KeyError as exc:
            raise IntegrityError(f"{context}: git objects of the version are missing") from exc
        except RepositoryError as exc:
            raise IntegrityError(f"{context}: not a version ({exc})") from exc
        if data is None:
            raise IntegrityError(f"{context}: the tagged commit has no {MANIFEST_PATH}: not a version")
        return commit, data

    def write_version(
        self, manifest: Manifest, code_commit: str | None, actor: Identity, *, signer: Signer | None = None
    ) -> tuple[bool, TagId]:
        """Create the version; ``(True, tag sha)`` if this call created it, else
        ``(False, existing tag sha)`` when the same content was already registered.
        Raises VersionExistsError when the version exists with different content, and
        UsageError (before writing anything) for a manifest the read gate would refuse.
        ``signer`` signs the tag as ``git tag -s`` does."""
        name, version = manifest.name, manifest.version
        try:  # never write a version that the read gate would refuse
            check(manifest.to_dict(), f"model {name!r} version {version!r}", limits=self.limits())
        except IntegrityError as exc:
            raise UsageError(f"cannot register: {exc}") from exc
        existing = self.tag_sha(name, version)
        if existing is not None:  # fast path; the add_if_new below stays the real check
            return False, self._same_or_raise(manifest, existing)
        card = render_card(manifest)
        try:  # the version commit's tree is the code commit's tree plus the card
            base_tree = self.git.read_commit(code_commit).tree.decode() if code_commit else None
            tree = self.git.tree_with_files(
                base_tree, CARD_DIR, {"README.md": card.encode(), "manifest.msgpack": pack(manifest)}
            )
        except KeyError as exc:
            raise IntegrityError(
                f"git objects of the code commit {str(code_commit)[:12]} (HEAD) are missing; run 'git fsck'"
            ) from exc
        message = commit_message(name, version, manifest.metrics)
        commit = self.git.write_commit(tree, [code_commit] if code_commit else [], message, actor)
        tag = self.git.write_tag(tag_name(name, version), commit, card, actor, signer=signer)
        if self.git.create_ref(tag_ref(name, version), tag, message=f"uniflow: register {name} {version}"):
            return True, TagId(tag)
        existing = self.tag_sha(name, version)
        if existing is None:  # deleted between our attempt and this read: report, do not loop
            raise VersionExistsError(name, version, "(it was being changed concurrently)")
        return False, self._same_or_raise(manifest, existing)

    def _same_or_raise(self, manifest: Manifest, existing: TagId) -> TagId:
        name, version = manifest.name, manifest.version
        _, other = self.manifest(name, version, existing)
        if (other.format >= MERKLE_FORMAT) != (manifest.format >= MERKLE_FORMAT):
            # digests of two kinds (BLAKE3 of the bytes, Merkle identity): compare the chunks
            if _files_by_chunks(other) != _files_by_chunks(manifest):
                raise VersionExistsError(name, version)
        elif other.content_digest != manifest.content_digest:
            raise VersionExistsError(name, version)
        return existing


def _files_by_chunks(m: Manifest) -> set[tuple[str, int, tuple[tuple[bytes, int], ...]]]:
    """A version's files as (path, mode, chunk list): equal sets mean equal bytes."""
    return {(f.path, f.mode, f.chunks) for f in m.files}
