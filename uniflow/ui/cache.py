"""What the server has read, kept while the registry's refs say nothing changed.

Reading a model's versions and lifecycle means reading Git objects (a cost that grows with
its versions and events), so a page over 100 models cannot read everything on every
request. :class:`CachedRegistry` keeps ``list_models()``, ``list_versions(name)``,
``version_rows(name)`` and ``history(name)`` in memory, keyed by a fingerprint of exactly
what they are derived from: the version tags ``refs/tags/models/<name>/*``, the lifecycle ref
``refs/uniflow/models/<name>`` (both documented in docs/design.md) and the bytes of
``.uniflow/config.toml``. The fingerprint is read with ``git for-each-ref`` at the start of
each request; any register, promotion, pull or config edit changes it, so a page is never
stale. Tags and manifests are immutable, so nothing else can change what these calls return.

``git for-each-ref`` starts a process and reads every loose ref file, so a request first compares the
``stat()`` of the places those refs live (``packed-refs``, the ``refs/tags/models/<name>/``
directories, the loose ``refs/uniflow/models/<name>`` files and their directories, and
config.toml) with what they were at the last check: a ref is only ever written by creating
a file and renaming it into place (a new directory entry, a new inode) or by rewriting
``packed-refs``, so equal stats mean equal refs (``_records.refscan.refs_stamp``, the ref-change
detector the listing index uses too). As Git does for its index, stats younger than two
seconds are not trusted (a coarse clock could hide a second write), nor is a repository
with the reftable backend: then ``git for-each-ref`` decides.

Without a ``git`` executable every call goes straight to the registry (no cache).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._records.refs import LIFECYCLE_PREFIX, TAGS_PREFIX, lifecycle_ref, tags_prefix
from .._records.refscan import RACY_NS, refs_stamp

if TYPE_CHECKING:  # pragma: no cover
    from .. import Comparison, HistoryEvent, ModelSummary, ModelVersion, RegistryReader
    from .._types import VersionRow

__all__ = ["CachedRegistry"]

_TAGS = f"{TAGS_PREFIX}/"
_LIFECYCLE = f"{LIFECYCLE_PREFIX}/"
#: stats younger than this are re-checked with git (coarse file-system clocks)
_RACY_NS = RACY_NS


class CachedRegistry:
    """The read methods of a registry (``RegistryReader``) the UI uses, cached by ref fingerprint.

    Call :meth:`refresh` at the start of a request (with the model's name when the page is
    about one model: that reads only its refs). Not thread-safe by itself: the server runs
    one request at a time through it.
    """

    def __init__(self, registry: RegistryReader) -> None:
        self.registry = registry
        self.root = registry.root
        self._fp: dict[str, str] = {}  # model -> fingerprint of its refs (+ config)
        self._all_fp: str | None = None
        self._summaries: tuple[str, list[ModelSummary]] | None = None
        self._models: dict[tuple[str, str], tuple[str, Any]] = {}  # (what, model) -> (fingerprint, value)
        self._stages: tuple[str, dict[str, bool]] | None = None
        self._git_ok = True
        self._tokens: dict[str | None, tuple[Any, ...]] = {}  # refresh scope -> stats at the last git check
        self._git_dir: Path | None | bool = False  # False: not looked up yet
        self._config_digest: str | None = None

    # ------------------------------------------------------------------ fingerprints
    def _config_bytes(self) -> bytes:
        try:
            return (self.registry.uniflow_dir / "config.toml").read_bytes()
        except OSError:
            return b""

    def _for_each_ref(self, patterns: list[str]) -> list[str] | None:
        return self._git_lines(["for-each-ref", "--format=%(objectname) %(refname)", *patterns])

    def _git_lines(self, args: list[str]) -> list[str] | None:
        """``git -C ROOT ARGS``: its output lines, or None when git fails or is missing."""
        if not self._git_ok:
            return None
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.root), *args],
                capture_output=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            self._git_ok = False
            return None
        if proc.returncode != 0:
            return None
        return proc.stdout.decode("utf-8", "replace").splitlines()

    def _common_dir(self) -> Path | None:
        """The repository's common Git directory (where refs live), or None."""
        if self._git_dir is False:
            lines = self._git_lines(["rev-parse", "--git-common-dir"])
            found = (self.root / lines[0]).resolve() if lines else None
            self._git_dir = found if found is not None and (found / "refs").is_dir() else None
        return self._git_dir if isinstance(self._git_dir, Path) else None

    def _stat_token(self, name: str | None) -> tuple[Any, ...] | None:
        """The stats of everywhere the refs in scope live (``refscan.refs_stamp``), or None
        when they prove nothing."""
        git_dir = self._common_dir()
        if git_dir is None:
            return None
        prefixes = [_TAGS, _LIFECYCLE]
        if name is not None:
            prefixes += [tags_prefix(name), lifecycle_ref(name)]
        config = self.registry.uniflow_dir / "config.toml"
        return refs_stamp(git_dir, prefixes, entries=name is None, extra=[config], racy_ns=_RACY_NS)

    def refresh(self, name: str | None = None) -> None:
        """Re-read the fingerprints: of every model, or only of ``name``'s refs."""
        token = self._stat_token(name)
        if token is not None and self._tokens.get(name) == token:
            return  # nothing where the refs live has changed since git last read them
        self._tokens.pop(name, None)
        config = self._config_bytes()
        self._config_changed(config)
        if name is None:
            lines = self._for_each_ref([_TAGS, _LIFECYCLE])
        else:
            lines = self._for_each_ref([f"{_TAGS}{name}/", f"{_LIFECYCLE}{name}"])
        if lines is None:
            self._fp.clear()
            self._all_fp = None
            self._tokens.clear()
            return
        groups: dict[str, list[str]] = {}
        for line in lines:
            _sha, _, ref = line.partition(" ")
            if ref.startswith(_TAGS):
                model = ref[len(_TAGS) :].rpartition("/")[0]
            elif ref.startswith(_LIFECYCLE):
                model = ref[len(_LIFECYCLE) :]
            else:
                continue
            groups.setdefault(model, []).append(line)
        fps = {m: _digest([config, *[ln.encode() for ln in sorted(g)]]) for m, g in groups.items()}
        if name is None:
            self._fp = fps
            self._all_fp = _digest([config, *[f"{m} {fp}".encode() for m, fp in sorted(fps.items())]])
        else:
            self._fp.pop(name, None)
            if name in fps:
                self._fp[name] = fps[name]
        if token is not None:
            self._tokens[name] = token

    # ------------------------------------------------------------------ the registry's read API
    def _config_changed(self, config: bytes) -> None:
        """The registry reads config.toml once; make it read an edited one again."""
        digest = _digest([config])
        if self._config_digest is not None and digest != self._config_digest:
            self.registry.reload_config()
        self._config_digest = digest

    def stages(self) -> dict[str, bool]:
        config = self._config_bytes()
        self._config_changed(config)
        key = _digest([config])
        if self._stages is None or self._stages[0] != key:
            self._stages = (key, self.registry.stages())
        return dict(self._stages[1])

    def list_models(self) -> list[ModelSummary]:
        key = self._all_fp
        if key is not None and self._summaries is not None and self._summaries[0] == key:
            return list(self._summaries[1])
        summaries = self.registry.list_models()
        if key is not None:
            self._summaries = (key, summaries)
        return list(summaries)

    def _fresh(self, what: str, name: str) -> Any | None:
        """What is kept under ``(what, name)`` for the model's current fingerprint, or None."""
        fp = self._fp.get(name)
        cached = self._models.get((what, name))
        return cached[1] if fp is not None and cached is not None and cached[0] == fp else None

    def _cached(self, what: str, name: str, read: Callable[[], Any]) -> Any:
        """``read()``, kept under ``(what, name)`` while the model's fingerprint is unchanged."""
        value = self._fresh(what, name)
        if value is not None:
            return value
        value = read()
        fp = self._fp.get(name)
        if fp is not None:
            self._models[(what, name)] = (fp, value)
        else:
            self._models.pop((what, name), None)
        return value

    def list_versions(self, name: str, stage: Any = None) -> list[ModelVersion]:
        if stage is not None:
            return self.registry.list_versions(name, stage=stage)
        return list(self._cached("versions", name, lambda: self.registry.list_versions(name)))

    def version_rows(self, name: str, stage: Any = None) -> list[VersionRow]:
        """The model's :class:`~uniflow.VersionRow` summaries (its listing index: no manifest
        is opened once the index holds them)."""
        if stage is not None:
            return self.registry.version_rows(name, stage=stage)
        return list(self._cached("rows", name, lambda: self.registry.version_rows(name)))

    def skipped_notice(self, name: str) -> str | None:
        """The one-line notice of the refs under the model's tags that are no readable version
        (``1 unreadable record skipped: models/clf/v9.9.9 (...)``), or None. Read from the
        model's listing index (checked against the refs, so always current)."""
        from .._records.listing import skipped_notice

        return skipped_notice(self.registry.repository.listings.listing(name))

    def history(self, name: str, *, last: int | None = None) -> list[HistoryEvent]:
        """Every event, or the newest ``last`` ones (oldest first): read alone when the whole
        history is not in memory (the overview needs only each model's last event)."""
        events = self._fresh("history", name)
        if events is None and last is not None:
            return list(self._cached(f"last{last}", name, lambda: self.registry.history(name, last=last)))
        if events is None:
            events = self._cached("history", name, lambda: self.registry.history(name))
        return list(events if last is None else events[max(len(events) - last, 0) :])

    def get(self, name: str, version: str | None = None, stage: Any = None) -> ModelVersion:
        versions: list[ModelVersion] | None = self._fresh("versions", name)
        if version is not None and stage is None and versions is not None:
            for mv in versions:
                if mv.version == version:
                    return mv
        return self.registry.get(name, version, stage)

    def compare_versions(self, name: str, versions: list[str]) -> Comparison:
        return self.registry.compare_versions(name, versions)


def _digest(parts: list[bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()
