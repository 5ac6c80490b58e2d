"""The one home of the registry's Git ref names: building them and parsing them back.

::

    refs/tags/models/<model>/<version>                  a version (annotated tag)
    refs/uniflow/models/<model>                         a model's lifecycle (chain of event commits)
    refs/uniflow/stages/<model>/<stage>                 a stage pointer (derived from the lifecycle)
    refs/uniflow/remotes/<remote>/models/<model>        a Git remote's lifecycle as last fetched
    refs/tags/uniflow/<model>/<stage>/<seq>             an event tag ([events] tags = true): no version

Other modules build ref names through these functions and parse them with
:func:`parse_ref`, so a name read from a remote is checked here once. A few still spell a
prefix themselves to sort or filter names they already hold: ``ui.cache`` (the tag and
lifecycle prefixes it watches), ``sharing.push`` (``refs/tags/``, ``refs/uniflow/``),
``sharing.hooks`` (``refs/tags/models/``, ``refs/uniflow/stages/``) and ``sharing.pull``
(``refs/tags/``, ``refs/``). Imports nothing but the standard library (shell completion
uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TAGS_PREFIX",
    "UNIFLOW_PREFIX",
    "LIFECYCLE_PREFIX",
    "STAGES_PREFIX",
    "REMOTES_PREFIX",
    "REGISTRY_PATTERNS",
    "ParsedRef",
    "tag_ref",
    "tag_name",
    "lifecycle_ref",
    "stage_ref",
    "stages_prefix",
    "tags_prefix",
    "tracking_ref",
    "tracking_prefix",
    "parse_ref",
    "parse_tag_name",
    "EVENT_TAGS_PREFIX",
    "event_tag_ref",
    "parse_event_tag_ref",
]

#: where Git keeps tags: a tag's short name is its ref below this
_GIT_TAGS = "refs/tags"
TAGS_PREFIX = f"{_GIT_TAGS}/models"
#: every registry ref but the version tags is below it
UNIFLOW_PREFIX = "refs/uniflow"
LIFECYCLE_PREFIX = f"{UNIFLOW_PREFIX}/models"
STAGES_PREFIX = f"{UNIFLOW_PREFIX}/stages"
REMOTES_PREFIX = f"{UNIFLOW_PREFIX}/remotes"
#: what ``git ls-remote`` / ``git fetch`` ask a remote for
REGISTRY_PATTERNS = (f"{TAGS_PREFIX}/*", f"{LIFECYCLE_PREFIX}/*", f"{STAGES_PREFIX}/*")

#: event tags (``[events] tags = true``): one annotated tag per stage move, for CI triggers;
#: outside ``refs/tags/models``, so no listing ever takes one for a version
EVENT_TAGS_PREFIX = f"{_GIT_TAGS}/uniflow"

RefKind = Literal["version", "lifecycle", "stage", "tracking"]


def tag_name(model: str, version: str) -> str:
    """The tag's short name (what ``git tag`` lists): ``models/<model>/<version>``."""
    return f"models/{model}/{version}"


def parse_tag_name(name: str) -> tuple[str, str] | None:
    """``(model, version)`` of a tag's short name ``models/<model>/<version>`` (what an
    annotated tag object records), or None; only the shape is checked, as :func:`parse_ref`."""
    parsed = parse_ref(f"{_GIT_TAGS}/{name}")
    return (parsed.model, parsed.version or "") if parsed is not None and parsed.kind == "version" else None


def tag_ref(model: str, version: str) -> str:
    return f"{TAGS_PREFIX}/{model}/{version}"


def tags_prefix(model: str) -> str:
    return f"{TAGS_PREFIX}/{model}"


def lifecycle_ref(model: str) -> str:
    return f"{LIFECYCLE_PREFIX}/{model}"


def stage_ref(model: str, stage: str) -> str:
    return f"{STAGES_PREFIX}/{model}/{stage}"


def stages_prefix(model: str) -> str:
    return f"{STAGES_PREFIX}/{model}"


def tracking_prefix(remote: str) -> str:
    return f"{REMOTES_PREFIX}/{remote}/models"


def tracking_ref(remote: str, model: str) -> str:
    """Where a Git remote's lifecycle of ``model`` is kept locally (read by gc, compared by push)."""
    return f"{tracking_prefix(remote)}/{model}"


@dataclass(frozen=True)
class ParsedRef:
    """A registry ref taken apart: ``kind`` plus the parts that kind has."""

    kind: RefKind
    model: str
    version: str | None = None
    stage: str | None = None
    remote: str | None = None


def parse_ref(ref: str) -> ParsedRef | None:
    """Take a registry ref apart, or None when it is not one of ours or is malformed.

    Only the shape is checked here; the parts are validated by the caller's gate
    (model names, versions, stages), because what is valid depends on the repository.
    """
    parts = ref.split("/")
    if any(not p for p in parts):
        return None
    if ref.startswith(TAGS_PREFIX + "/") and len(parts) == 5:
        return ParsedRef("version", parts[3], version=parts[4])
    if ref.startswith(LIFECYCLE_PREFIX + "/") and len(parts) == 4:
        return ParsedRef("lifecycle", parts[3])
    if ref.startswith(STAGES_PREFIX + "/") and len(parts) == 5:
        return ParsedRef("stage", parts[3], stage=parts[4])
    if ref.startswith(REMOTES_PREFIX + "/") and len(parts) == 6 and parts[4] == "models":
        return ParsedRef("tracking", parts[5], remote=parts[3])
    return None


def event_tag_ref(model: str, stage: str, seq: int) -> str:
    """``refs/tags/uniflow/<model>/<stage>/<seq>``: the event tag of lifecycle event ``seq``."""
    return f"{EVENT_TAGS_PREFIX}/{model}/{stage}/{seq}"


def parse_event_tag_ref(ref: str) -> tuple[str, str, int] | None:
    """``(model, stage, seq)`` of ``refs/tags/uniflow/<model>/<stage>/<seq>``, or None. Only
    the shape is checked (``seq`` decimal digits, no leading zero); the caller validates the
    model and stage names."""
    parts = ref.split("/")
    if len(parts) != 6 or not ref.startswith(EVENT_TAGS_PREFIX + "/") or any(not p for p in parts):
        return None
    seq = parts[5]
    if not (seq.isascii() and seq.isdigit()) or (len(seq) > 1 and seq[0] == "0") or len(seq) > 18:
        return None
    return parts[3], parts[4], int(seq)
