"""Typed results of the whole-repository operations: verify, gc, push, pull, promote on merge.

Frozen dataclasses; each ``to_dict()`` is the JSON document the CLI prints with ``--json``
(docs/cli.md). This module imports nothing from uniflow and sits at the bottom of the
layers, so the error classes can name the report they carry (``IntegrityError.result``,
``PolicyError.report``). The code producing each report re-exports it
(``uniflow._ops.maintenance``, ``uniflow.sharing.push``, ``uniflow.sharing.pull``,
``uniflow.sharing.ci``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "ChunkStats",
    "GcReport",
    "PromoteReport",
    "PromoteResult",
    "PromoteStatus",
    "PullOutcome",
    "PullReport",
    "PushReport",
    "VerifyProblem",
    "VerifyReport",
]


# ---------------------------------------------------------------------- verify
@dataclass(frozen=True)
class VerifyProblem:
    """One problem ``verify`` found.

    ``problem`` is ``"missing"`` or ``"corrupted"`` for a chunk (then ``file`` and ``chunk``
    name it), otherwise a one-line description; ``model``, ``version``, ``file`` and
    ``chunk`` are ``None`` where they do not apply (a ref with an invalid name names none).
    """

    model: str | None
    version: str | None
    file: str | None
    chunk: str | None
    problem: str

    def to_dict(self) -> dict[str, str | None]:
        return {
            "model": self.model,
            "version": self.version,
            "file": self.file,
            "chunk": self.chunk,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class VerifyReport:
    """What ``ModelRegistry.verify(name)`` found: ``name`` is the model checked (``None``:
    every model); ``problems`` in the order found (empty when everything verified)."""

    name: str | None
    problems: tuple[VerifyProblem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """``{"ok", "name", "problems": [{"model", "version", "file", "chunk", "problem"}, ...]}``."""
        return {"ok": self.ok, "name": self.name, "problems": [p.to_dict() for p in self.problems]}


# ---------------------------------------------------------------------- gc
@dataclass(frozen=True)
class GcReport:
    """What ``ModelRegistry.gc`` did, or with ``dry_run`` would do.

    ``bytes_freed`` is the size of the chunks deleted; in a dry run (nothing is deleted and
    ``deleted_chunks`` is 0) it is the size of the chunks a real run would delete now.
    ``tmp_removed``, ``cache_removed`` and ``restored_chunks`` are 0 in a dry run.
    """

    dry_run: bool
    live_chunks: int
    unreachable_chunks: int
    spared_young: int
    spared_in_flight: int
    deleted_chunks: int
    bytes_freed: int
    tmp_removed: int
    cache_removed: int
    restored_chunks: int
    grace_seconds: float
    #: packs removed (their live chunks rewritten into ``packs_written`` new packs first);
    #: in a dry run, the packs a real run would rewrite
    packs_removed: int = 0
    packs_written: int = 0
    #: chunk files moved into packs (``gc --repack``; in a dry run, those it would move)
    loose_packed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, by name (``bytes_freed`` in dry runs too)."""
        return asdict(self)


# ---------------------------------------------------------------------- push / pull
@dataclass(frozen=True)
class ChunkStats:
    """Chunks a transfer considered: ``wanted``, ``present`` (already at the destination),
    ``transferred``, and the ``bytes`` transferred."""

    wanted: int = 0
    present: int = 0
    transferred: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "wanted": self.wanted,
            "present": self.present,
            "transferred": self.transferred,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class PushReport:
    """What ``ModelRegistry.push`` sent.

    ``remote``: the Git remote; ``blob_remote``: the blob remote's name (``None`` when none
    was needed and none is configured); ``models``: the model names asked for (``None``:
    all); ``versions``: ``"<model>/<version>"`` tags pushed; ``lifecycle``: models whose
    lifecycle ref moved; ``behind``: models whose remote lifecycle is ahead (pull them);
    ``refs``: ref updates sent; ``up_to_date``: nothing was sent.
    """

    remote: str
    blob_remote: str | None
    models: tuple[str, ...] | None
    versions: tuple[str, ...]
    lifecycle: tuple[str, ...]
    behind: tuple[str, ...]
    refs: int
    chunks: ChunkStats
    up_to_date: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "blob_remote": self.blob_remote,
            "models": list(self.models) if self.models is not None else None,
            "versions": list(self.versions),
            "lifecycle": list(self.lifecycle),
            "behind": list(self.behind),
            "refs": self.refs,
            "chunks": self.chunks.to_dict(),
            "up_to_date": self.up_to_date,
        }


#: what pull did to one model's lifecycle
PullOutcome = Literal[
    "created", "fast-forward", "replayed", "reset", "ahead", "unchanged", "diverged", "rejected"
]


@dataclass(frozen=True)
class PullReport:
    """What ``ModelRegistry.pull`` integrated.

    ``models`` maps each model considered to its :data:`PullOutcome`; ``versions``: the
    ``"<model>/<version>"`` whose chunks were fetched; ``rejected`` maps a model whose
    remote lifecycle failed validation (left as it was), or a fetched ref whose name is no
    valid model or version (ignored), to the reason; ``refused`` maps a model whose incoming
    lifecycle breaks the policy in force to one line per refused commit (the commits before
    the first refused one were integrated: ``models`` says how, ``rejected`` when none).
    A pull that rejected something, or stopped on a lifecycle conflict, raises; the error's
    ``result`` is this report.
    """

    remote: str
    models: Mapping[str, PullOutcome]
    versions: tuple[str, ...]
    chunks: ChunkStats
    rejected: Mapping[str, str]
    refused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was rejected and no lifecycle diverged."""
        return not self.rejected and "diverged" not in self.models.values()

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "models": dict(self.models),
            "versions": list(self.versions),
            "chunks": self.chunks.to_dict(),
            "rejected": dict(self.rejected),
            # only when a policy refused a model: the document is as before otherwise
            **({"refused": {m: list(lines) for m, lines in self.refused.items()}} if self.refused else {}),
        }


# ---------------------------------------------------------------------- promote on merge
#: what promote on merge did with one rule
PromoteStatus = Literal["promoted", "would-promote", "already", "failed", "no-candidate", "unmatched"]


@dataclass(frozen=True)
class PromoteResult:
    """One ``[[promote]]`` rule applied: ``rule`` is its 1-based index in config.toml,
    ``version`` the candidate (``None`` when there was none), ``detail`` one line saying why."""

    rule: int
    describe: str
    model: str
    to: str
    version: str | None
    status: PromoteStatus
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "describe": self.describe,
            "model": self.model,
            "to": self.to,
            "version": self.version,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PromoteReport:
    """What ``promote_on_merge`` did for the commits ``base..head`` (``base`` is ``None``
    for a root commit): ``commits`` in the range, ``rules`` applied, one result per rule,
    ``promoted`` count, ``pushed`` (the :class:`PushReport`, when ``--push`` pushed) and the
    ``ci`` run recorded in the lifecycle events."""

    base: str | None
    head: str
    commits: int
    rules: int
    results: tuple[PromoteResult, ...]
    promoted: int
    pushed: PushReport | None
    ci: Mapping[str, str]

    @property
    def failures(self) -> tuple[PromoteResult, ...]:
        """The results whose candidate failed its rule."""
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def unmatched(self) -> tuple[PromoteResult, ...]:
        """The results whose rule's ``from`` stage holds a version the range did not match."""
        return tuple(r for r in self.results if r.status == "unmatched")

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "commits": self.commits,
            "rules": self.rules,
            "results": [r.to_dict() for r in self.results],
            "promoted": self.promoted,
            "pushed": self.pushed.to_dict() if self.pushed is not None else None,
            "ci": dict(self.ci),
        }
