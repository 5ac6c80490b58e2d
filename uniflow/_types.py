"""Plain value types returned by the registry: versions, files, history events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, NewType

__all__ = [
    "ProgressFn",
    "CommitId",
    "TagId",
    "ChunkDigest",
    "Provenance",
    "FileInfo",
    "ModelVersion",
    "HistoryEvent",
    "ModelSummary",
    "VersionRow",
    "VersionList",
    "HistoryList",
]

#: a Git commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits
CommitId = NewType("CommitId", str)
#: the id of a Git annotated tag object (a version's tag), same form as a commit id
TagId = NewType("TagId", str)
#: a chunk's BLAKE3-256 digest: 64 lowercase hex digits (the chunk's file name in the store)
ChunkDigest = NewType("ChunkDigest", str)


#: told ``(bytes done, bytes in all)`` as a long operation (register, load, push, pull) advances
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Provenance:
    """Where a version brought in by an importer came from (``register(provenance=...)``).

    ``author`` (name, email) and ``created_at`` (time-zone aware) replace the local Git
    identity and the current time in the manifest and on the register event (Git commit and
    tag times stay the write time). ``code_commit`` is the version commit's first parent
    (default: ``HEAD``); given, the recorded branch is none and the version is not dirty.
    ``event_extra`` is stored as the register event's ``extra`` (e.g. ``imported_from``).
    """

    author: tuple[str, str]
    created_at: datetime
    code_commit: str | None = None
    event_extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileInfo:
    """One file of a version: its path inside the version, size in bytes, digest (its identity:
    the Merkle identity of its chunks in manifest format 3, BLAKE3 of the bytes in 1 and 2)."""

    path: str
    size: int
    digest: str
    chunks: int = 0
    mode: int = 0o644


@dataclass(frozen=True)
class ModelVersion:
    """An immutable registered version of a model, as read back from Git."""

    name: str
    version: str
    stage: str
    framework: str
    serializer: str
    metrics: dict[str, Any]
    tags: dict[str, str]
    params: dict[str, Any]
    description: str
    created_at: datetime
    author: str
    code_commit: str | None
    branch: str | None
    dirty: bool
    size: int
    digest: str
    files: tuple[FileInfo, ...]
    lineage: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    tag_ref: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the shape ``uniflow models show --json`` prints)."""
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["files"] = [asdict(f) for f in self.files]
        return d

    def _repr_html_(self) -> str:
        """The card as HTML, for notebooks (escaped; see uniflow/_views/notebook.py)."""
        from ._views.notebook import version_html

        return version_html(self)


@dataclass(frozen=True)
class HistoryEvent:
    """One lifecycle transition, read from a commit on ``refs/uniflow/models/<name>``."""

    seq: int
    action: str  # register | promote | archive | rollback
    name: str
    version: str
    from_stage: str | None
    to_stage: str | None
    actor: str
    at: datetime
    commit: str
    message: str = ""
    displaced: str | None = None  # version moved to archived by this event
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        return d


class VersionList(list[ModelVersion]):
    """What ``list_versions`` returns: a plain list, drawn as a table and charts in notebooks."""

    def _repr_html_(self) -> str:
        from ._views.notebook import versions_html

        return versions_html(self)


class HistoryList(list[HistoryEvent]):
    """What ``history`` returns: a plain list, drawn as a table in notebooks."""

    def _repr_html_(self) -> str:
        from ._views.notebook import history_html

        return history_html(self)


@dataclass(frozen=True)
class ModelSummary:
    """One row of ``list_models()``."""

    name: str
    latest: str | None
    versions: int
    stages: dict[str, str]  # single-holder stage -> version
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        return d


class VersionRow(NamedTuple):
    """One line of ``uniflow models list NAME`` (``ModelRegistry.version_rows``): what a
    listing shows of a version, read from the model's listing index without opening its
    manifest. ``ModelRegistry.list_versions`` gives the whole :class:`ModelVersion`."""

    version: str
    stage: str
    framework: str
    size: int  # bytes, all files
    metrics: dict[str, Any]
    created: str  # ``created_at`` as the manifest records it (ISO-8601)

    @property
    def created_at(self) -> datetime:
        """``created`` as a time-zone aware datetime (UTC when the manifest names no zone)."""
        when = datetime.fromisoformat(self.created)
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def version_events(version: str, events: list[HistoryEvent]) -> list[HistoryEvent]:
    """The events of ``version`` and those that displaced it from a stage (what ``models show`` lists)."""
    return [e for e in events if version in (e.version, e.displaced)]


def show_payload(mv: ModelVersion, events: list[HistoryEvent]) -> dict[str, Any]:
    """The JSON of ``uniflow models show --json`` and the UI's version API: ``to_dict()``
    plus the version's own history (``events``: the model's whole history)."""
    data = mv.to_dict()
    data["history"] = [e.to_dict() for e in version_events(mv.version, events)]
    return data
