"""uniflow: a Git-native model registry on content-addressed storage.

The public API is the names in ``__all__`` (pinned by ``tests/test_public_api.py``, which
also checks that every type a public signature names is one of them): the registry
classes, the values and reports they return, the stages, the errors and the pipeline
decorators. Everything under a ``_``-prefixed module is private.

``import uniflow`` is cheap: heavy modules (dulwich, torch, sklearn, fsspec, rich) load
only when the names that need them are first used (module ``__getattr__`` below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (  # the error tree is small and import-free
    ConcurrencyError,
    ConfigError,
    CorruptChunkError,
    IntegrityError,
    InvalidNameError,
    InvalidPathError,
    InvalidStageError,
    InvalidVersionError,
    LfsPointerError,
    LfsPointerWarning,
    LifecycleConflictError,
    MissingChunkError,
    ModelNotFoundError,
    NotFoundError,
    PolicyError,
    PushRejectedError,
    ReadOnlyRegistryError,
    RemoteError,
    RepositoryError,
    SerializationError,
    SignatureError,
    SigningError,
    StageEmptyError,
    UniflowError,
    UniflowWarning,
    UnsafeLoadError,
    UsageError,
    VersionExistsError,
    VersionNotFoundError,
)
from ._stages import ModelStage, StageLike
from ._version import __version__

#: public name -> the module defining it, imported on first use
_LAZY = {
    "ModelRegistry": "._registry",
    "RegistryReader": "._registry",
    "RemoteRegistry": "._registry",
    "ModelVersion": "._types",
    "HistoryEvent": "._types",
    "ModelSummary": "._types",
    "FileInfo": "._types",
    "Provenance": "._types",
    "VersionRow": "._types",
    "Comparison": "._ops.compare",
    "VersionDiff": "._ops.diff",
    "FileDelta": "._ops.diff",
    "TensorDelta": "._ops.diff",
    "TensorInfo": "._records.tensors",
    "Config": "._records.config",
    "Condition": "._records.config",
    "Limits": "._records.config",
    "PromoteRule": "._records.config",
    "RemoteSpec": "._records.config",
    "VerifyReport": "._reports",
    "VerifyProblem": "._reports",
    "GcReport": "._reports",
    "PushReport": "._reports",
    "PullReport": "._reports",
    "ChunkStats": "._reports",
    "PromoteReport": "._reports",
    "PromoteResult": "._reports",
    "ImportReport": ".importers",
    "VersionResult": ".importers",
    "EventResult": ".importers",
    "EmptiedStage": ".importers",
    "step": ".pipelines",
    "pipeline": ".pipelines",
    "Model": ".pipelines",
    "LifecycleEvent": "._records.lifecycle",
    "EventRecord": "._records.eventtags",
    "ApprovalRule": "._authority.policy",
    "StageRule": "._authority.policy",
    "Admins": "._authority.policy",
    "Policy": "._authority.policy",
    "TrustRoot": "._authority.rotation",
    "RevisionVerdict": "._authority.rotation",
    "InForce": "._authority.rotation",
    "PolicyInit": "._ops.policy",
    "PolicySignature": "._ops.policy",
    "PolicyChain": "._authority.rotation",
}

__all__ = [
    "Admins",
    "ApprovalRule",
    "ChunkStats",
    "Comparison",
    "ConcurrencyError",
    "Condition",
    "Config",
    "ConfigError",
    "CorruptChunkError",
    "EmptiedStage",
    "EventRecord",
    "EventResult",
    "FileDelta",
    "FileInfo",
    "GcReport",
    "HistoryEvent",
    "ImportReport",
    "InForce",
    "IntegrityError",
    "InvalidNameError",
    "InvalidPathError",
    "InvalidStageError",
    "InvalidVersionError",
    "LfsPointerError",
    "LfsPointerWarning",
    "LifecycleConflictError",
    "LifecycleEvent",
    "Limits",
    "MissingChunkError",
    "Model",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelStage",
    "ModelSummary",
    "ModelVersion",
    "NotFoundError",
    "Policy",
    "PolicyChain",
    "PolicyError",
    "PolicyInit",
    "PolicySignature",
    "PromoteReport",
    "PromoteResult",
    "PromoteRule",
    "Provenance",
    "PullReport",
    "PushRejectedError",
    "PushReport",
    "ReadOnlyRegistryError",
    "RegistryReader",
    "RemoteError",
    "RemoteRegistry",
    "RemoteSpec",
    "RepositoryError",
    "RevisionVerdict",
    "SerializationError",
    "SignatureError",
    "SigningError",
    "StageEmptyError",
    "StageLike",
    "StageRule",
    "TensorDelta",
    "TensorInfo",
    "TrustRoot",
    "UniflowError",
    "UniflowWarning",
    "UnsafeLoadError",
    "UsageError",
    "VerifyProblem",
    "VerifyReport",
    "VersionDiff",
    "VersionExistsError",
    "VersionNotFoundError",
    "VersionResult",
    "VersionRow",
    "__version__",
    "pipeline",
    "step",
]

if TYPE_CHECKING:  # pragma: no cover
    from ._authority.policy import Admins, ApprovalRule, Policy, StageRule
    from ._authority.rotation import InForce, PolicyChain, RevisionVerdict, TrustRoot
    from ._ops.compare import Comparison
    from ._ops.diff import FileDelta, TensorDelta, VersionDiff
    from ._ops.policy import PolicyInit, PolicySignature
    from ._records.config import Condition, Config, Limits, PromoteRule, RemoteSpec
    from ._records.eventtags import EventRecord
    from ._records.lifecycle import LifecycleEvent
    from ._records.tensors import TensorInfo
    from ._registry import ModelRegistry, RegistryReader, RemoteRegistry
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
    from ._types import FileInfo, HistoryEvent, ModelSummary, ModelVersion, Provenance, VersionRow
    from .importers import EmptiedStage, EventResult, ImportReport, VersionResult
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
