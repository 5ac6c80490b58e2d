"""The one exception tree of uniflow.

Every error the library raises on purpose is a :class:`UniflowError`; third-party
errors (dulwich, msgpack, OSError, fsspec, skops ...) are translated at the module
boundary with ``raise SomeUniflowError(...) from exc``. Each class carries the exit
code the command line uses, so the CLI has exactly one error handler::

    UniflowError                      exit 1
    ├── UsageError                    exit 2   bad input from the caller
    │   ├── SigningError                       cannot sign: no key configured, or the signer failed
    │   ├── InvalidNameError                   model name not allowed
    │   ├── InvalidVersionError                not a semantic version
    │   ├── InvalidStageError                  unknown stage
    │   └── InvalidPathError                   path missing / outside the tree
    │       └── LfsPointerError                register strict: a file is a Git LFS pointer
    ├── NotFoundError                 exit 3
    │   ├── ModelNotFoundError
    │   ├── VersionNotFoundError
    │   └── StageEmptyError                    no version holds that stage
    ├── VersionExistsError            exit 4   same version, different bytes
    ├── IntegrityError                exit 5   a digest did not match, or data from Git is invalid
    │   ├── MissingChunkError                  a chunk is in neither the store nor a blob remote
    │   ├── CorruptChunkError                  a chunk's bytes do not match its digest
    │   └── SignatureError                     a signature is malformed, unsupported or does not verify
    ├── ConcurrencyError              exit 6   lock held too long / CAS lost too often
    ├── SerializationError            exit 7   cannot save / rebuild an object
    │   └── UnsafeLoadError                    pickle or untrusted types without trust
    ├── RepositoryError               exit 8   no repository, read-only store, full disk
    │   ├── ConfigError                        .uniflow/config.toml is invalid (names file and key)
    │   └── ReadOnlyRegistryError              a write on a registry opened by Git URL: clone it
    ├── RemoteError                   exit 9   a remote failed or refused
    │   ├── PushRejectedError                  non-fast-forward: pull first
    │   └── LifecycleConflictError             pull: both sides changed a version or stage
    └── PolicyError                   exit 10  a promotion rule did not hold

Warnings (the ``warnings`` module; the CLI prints them as ``warning: ...`` on stderr)::

    UniflowWarning(UserWarning)
    └── LfsPointerWarning                      register: a file is a Git LFS pointer, not content
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the reports are plain dataclasses in the layer below (no import at run time)
    from ._reports import PromoteReport, PullReport

__all__ = [
    "UniflowError",
    "UsageError",
    "InvalidNameError",
    "InvalidVersionError",
    "InvalidStageError",
    "InvalidPathError",
    "LfsPointerError",
    "SigningError",
    "NotFoundError",
    "ModelNotFoundError",
    "VersionNotFoundError",
    "StageEmptyError",
    "VersionExistsError",
    "IntegrityError",
    "MissingChunkError",
    "CorruptChunkError",
    "SignatureError",
    "ConcurrencyError",
    "SerializationError",
    "UnsafeLoadError",
    "RepositoryError",
    "ConfigError",
    "ReadOnlyRegistryError",
    "RemoteError",
    "PushRejectedError",
    "LifecycleConflictError",
    "PolicyError",
    "UniflowWarning",
    "LfsPointerWarning",
]


class UniflowError(Exception):
    """Root of every error uniflow raises on purpose.

    ``str(error)`` is one line meant for a human; ``exit_code`` is what the CLI exits with.
    """

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # Keep messages on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(UniflowError):
    exit_code = 2


class InvalidNameError(UsageError):
    pass


class InvalidVersionError(UsageError):
    pass


class InvalidStageError(UsageError):
    pass


class InvalidPathError(UsageError):
    pass


class LfsPointerError(InvalidPathError):
    """``register(..., strict=True)``: a file of the model is a Git LFS pointer, not its content."""


class SigningError(UsageError):
    """Cannot sign: Git's signing settings name no usable SSH key, or the signing program failed."""


class NotFoundError(UniflowError):
    exit_code = 3


class ModelNotFoundError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} not found in this registry")
        self.name = name


class VersionNotFoundError(NotFoundError):
    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"model {name!r} has no version {version!r}")
        self.name = name
        self.version = version


class StageEmptyError(NotFoundError):
    def __init__(self, name: str, stage: str, hint: str | None = None) -> None:
        # hint: what to do about it, e.g. a clone without the model's lifecycle: `uniflow pull`
        super().__init__(f"model {name!r} has no version in stage {stage!r}" + (f"; {hint}" if hint else ""))
        self.name = name
        self.stage = stage


class VersionExistsError(UniflowError):
    exit_code = 4

    def __init__(self, name: str, version: str, detail: str = "with different content") -> None:
        super().__init__(
            f"model {name!r} version {version!r} already exists {detail}; "
            "versions are immutable, register a new version"
        )
        self.name = name
        self.version = version


class IntegrityError(UniflowError):
    """A digest did not match, or data read from Git is invalid.

    ``result`` is the :class:`~uniflow.PullReport` of a pull that integrated the models it
    could and rejected others (``None`` when the error did not come from such a pull).
    """

    exit_code = 5

    def __init__(self, message: str, *, result: PullReport | None = None) -> None:
        super().__init__(message)
        self.result: PullReport | None = result


class _ChunkError(IntegrityError):
    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class MissingChunkError(_ChunkError):
    """A chunk a version needs is in neither the local store nor a reachable blob remote."""


class CorruptChunkError(_ChunkError):
    """A chunk's bytes (or length) do not match its digest."""


class SignatureError(IntegrityError):
    """An SSH signature (SSHSIG) or an allowed-signers file is malformed, oversize, uses an
    unsupported algorithm, or a signature does not verify."""


class ConcurrencyError(UniflowError):
    exit_code = 6


class SerializationError(UniflowError):
    exit_code = 7


class UnsafeLoadError(SerializationError):
    pass


class RepositoryError(UniflowError):
    exit_code = 8


class ConfigError(RepositoryError):
    """``.uniflow/config.toml`` is unreadable or invalid; the message names the key."""


class ReadOnlyRegistryError(RepositoryError):
    """A write (register, promote, push ...) on a registry opened by Git URL, which is read-only."""

    def __init__(self, url: str, action: str) -> None:
        super().__init__(
            f"cannot {action}: the registry at {url} is read-only (opened by Git URL); "
            f"clone it to write (git clone {url})"
        )
        self.url = url
        self.action = action


class RemoteError(UniflowError):
    """A remote failed or refused.

    ``result`` is the :class:`~uniflow.PullReport` of a pull that stopped after integrating
    what it could (a :class:`LifecycleConflictError`); ``None`` otherwise.
    """

    exit_code = 9

    def __init__(self, message: str, *, result: PullReport | None = None) -> None:
        super().__init__(message)
        self.result: PullReport | None = result


class PushRejectedError(RemoteError):
    pass


class LifecycleConflictError(RemoteError):
    """Pull found local and remote lifecycle events that change the same version or stage."""

    def __init__(self, message: str, models: list[str], *, result: PullReport | None = None) -> None:
        super().__init__(message, result=result)
        self.models = models


class PolicyError(UniflowError):
    """A promotion rule did not hold; ``report`` is the :class:`~uniflow.PromoteReport` of the
    promote-on-merge run (the other rules were applied), when there is one."""

    exit_code = 10

    def __init__(self, message: str, report: PromoteReport | None = None) -> None:
        super().__init__(message)
        self.report: PromoteReport | None = report


class UniflowWarning(UserWarning):
    """Something a caller should know about an operation that succeeded."""


class LfsPointerWarning(UniflowWarning):
    """A registered file is a Git LFS pointer file (the content was never fetched)."""
