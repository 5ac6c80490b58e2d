"""uniflow: a Git-native model registry on content-addressed storage.

``import uniflow`` is cheap: heavy modules (dulwich, torch, sklearn, fsspec, rich) load
only when the names that need them are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import *  # noqa: F401,F403  (the error tree is small and import-free)
from ._errors import __all__ as _error_names
from ._stages import ModelStage, StageLike
from ._version import __version__

_LAZY = {
    "ModelRegistry": "._registry",
    "ModelVersion": "._types",
    "HistoryEvent": "._types",
    "ModelSummary": "._types",
    "FileInfo": "._types",
    "Comparison": "._ops.compare",
    "VerifyReport": "._reports",
    "VerifyProblem": "._reports",
    "GcReport": "._reports",
    "PushReport": "._reports",
    "PullReport": "._reports",
    "ChunkStats": "._reports",
    "PromoteReport": "._reports",
    "PromoteResult": "._reports",
    "VersionDiff": "._ops.diff",
    "step": ".pipelines",
    "pipeline": ".pipelines",
    "Model": ".pipelines",
}

__all__ = [
    "__version__",
    "ModelRegistry",
    "ModelStage",
    "StageLike",
    "ModelVersion",
    "HistoryEvent",
    "ModelSummary",
    "FileInfo",
    "Comparison",
    "VerifyReport",
    "VerifyProblem",
    "GcReport",
    "PushReport",
    "PullReport",
    "ChunkStats",
    "PromoteReport",
    "PromoteResult",
    "VersionDiff",
    "step",
    "pipeline",
    "Model",
    *_error_names,
]

if TYPE_CHECKING:  # pragma: no cover
    from ._ops.compare import Comparison
    from ._ops.diff import VersionDiff
    from ._registry import ModelRegistry
    from ._reports import (
        ChunkStats,
        GcReport,
        PromoteReport,
        PromoteResult,
        PullReport,
        PushReport,
        VerifyProblem,
        VerifyReport,
    )
    from ._types import FileInfo, HistoryEvent, ModelSummary, ModelVersion
    from .pipelines import Model, pipeline, step


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'uniflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
