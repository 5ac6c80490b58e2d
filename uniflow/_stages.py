"""Stages: the :class:`ModelStage` enum and custom stages declared in config.

A stage name becomes a Git ref component (``refs/uniflow/stages/<model>/<stage>``), so a
custom one is 1-64 of ``a-z 0-9 _ -`` starting with a letter, matched against the whole
string (``"canary\n"`` is not a stage name).
"""

from __future__ import annotations

import enum
import re

from ._errors import InvalidStageError

__all__ = [
    "StageLike",
    "ModelStage",
    "normalize_stage",
    "SINGLE_HOLDER_DEFAULT",
    "BUILTIN_STAGES",
    "SHARED_STAGES",
    "stage_sort_key",
    "valid_custom_stage_name",
    "valid_stage_name",
]

_STAGE_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")


class ModelStage(enum.StrEnum):
    """Built-in lifecycle stages. ``ModelStage("Production")`` and ``ModelStage("PRODUCTION")``
    both give ``ModelStage.PRODUCTION``."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"

    @classmethod
    def _missing_(cls, value: object) -> ModelStage | None:
        if isinstance(value, str):
            lowered = value.strip().lower()
            for member in cls:
                if member.value == lowered:
                    return member
        return None

    def __str__(self) -> str:
        return self.value


#: what every ``stage=`` parameter accepts: a :class:`ModelStage` or a (case-insensitive) name,
#: built-in or declared in ``.uniflow/config.toml``
StageLike = ModelStage | str

#: the built-in stage names, in lifecycle order
BUILTIN_STAGES: tuple[str, ...] = tuple(m.value for m in ModelStage)

#: the built-in stages that hold many versions at once (never displaced, never rolled back)
SHARED_STAGES: frozenset[str] = frozenset({ModelStage.DEVELOPMENT.value, ModelStage.ARCHIVED.value})

# Whether each built-in stage holds a single version; a custom stage declares its own. The
# order is the one error messages list the stages in.
SINGLE_HOLDER_DEFAULT = {
    m.value: m.value not in SHARED_STAGES
    for m in (ModelStage.STAGING, ModelStage.PRODUCTION, ModelStage.DEVELOPMENT, ModelStage.ARCHIVED)
}


_DISPLAY_RANK = {
    ModelStage.PRODUCTION.value: 0,
    ModelStage.STAGING.value: 1,
    ModelStage.DEVELOPMENT.value: 8,
    ModelStage.ARCHIVED.value: 9,
}


def stage_sort_key(stage: str) -> tuple[int, str]:
    """Display order: production first, then staging, custom stages (by name), development,
    archived."""
    return (_DISPLAY_RANK.get(stage, 5), stage)


def normalize_stage(stage: object, custom: dict[str, bool] | None = None) -> str:
    """Turn a ``ModelStage`` or a case-insensitive name into the canonical lowercase name.

    ``custom`` maps custom stage names (declared in ``.uniflow/config.toml``) to whether they
    hold a single version.
    """
    if isinstance(stage, ModelStage):
        return stage.value
    if isinstance(stage, str):
        name = stage.strip().lower()
        if name in SINGLE_HOLDER_DEFAULT or (custom and name in custom):
            return name
    known = list(SINGLE_HOLDER_DEFAULT) + sorted(custom or {})
    raise InvalidStageError(f"unknown stage {stage!r}: expected one of {', '.join(known)}")


def valid_custom_stage_name(name: object) -> bool:
    """True for a name a custom stage may have (never one of the built-in stages)."""
    return isinstance(name, str) and bool(_STAGE_RE.fullmatch(name)) and name not in SINGLE_HOLDER_DEFAULT


def valid_stage_name(name: object) -> bool:
    """True for a built-in stage or a well-formed custom stage name (declared or not)."""
    return isinstance(name, str) and (name in SINGLE_HOLDER_DEFAULT or valid_custom_stage_name(name))
