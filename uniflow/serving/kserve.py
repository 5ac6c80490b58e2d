"""The KServe storage initializer: ``uniflow storage-initializer SRC_URI DEST_DIR``.

KServe runs the image of a ``ClusterStorageContainer`` as the init container of a predictor
whose ``storageUri`` matches one of its ``supportedUriFormats``, with two arguments: the URI
and the directory the predictor reads (``/mnt/models``). The URI names a registry by Git URL,
a model and a stage or version (docs/deploy.md, "The uniflow:// URI")::

    uniflow-uri = "uniflow://" git-url "#" model "@" selector
    selector    = version / stage

* ``git-url``: any Git URL ``uniflow get`` reads (``https://``, ``http://``, ``ssh://``,
  ``git+ssh://``, ``git://``, ``file://``, ``[user@]host:path``), written exactly as git reads
  it. The URI is split at its **last** ``#``: a model name and a selector never contain
  ``#`` or ``@``, so a ``#`` or ``@`` inside the Git URL needs no escaping, and
  percent-escapes in it reach git unchanged (git decodes them where its URL syntax does).
* ``model``: a model name (``_naming.validate_model_name``).
* ``selector``: a version when it parses as a semantic version (``v1.2.0``, ``1.2.0-rc.1``:
  always with dots), else a stage (``production``, a custom stage: never a dot). Always
  given: a deployment names what it serves; the newest version is not a selector.

The files written are those ``uniflow get`` writes: each chunk verified against its BLAKE3
name, each file against the manifest's digest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidPathError, UsageError
from .._naming import parse_version, validate_model_name
from .._stages import valid_stage_name
from .._types import ModelVersion, ProgressFn
from ..sharing.giturl import parse_git_url, redact

__all__ = ["SCHEME", "ServingUri", "parse_uniflow_uri", "storage_initialize"]

#: the scheme of the URIs this initializer reads (the ``supportedUriFormats`` prefix)
SCHEME = "uniflow"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_MAX_URI = 8192
_GRAMMAR = "uniflow://<git-url>#<model>@<stage-or-version>"


@dataclass(frozen=True)
class ServingUri:
    """A parsed ``uniflow://`` URI: the Git URL (as git reads it), the model, and exactly one
    of ``version`` and ``stage``."""

    git_url: str
    model: str
    version: str | None
    stage: str | None

    @property
    def selector(self) -> str:
        """The version or the stage, as written after ``@``."""
        return self.version if self.version is not None else str(self.stage)

    def __str__(self) -> str:
        return f"{SCHEME}://{self.git_url}#{self.model}@{self.selector}"

    @property
    def display(self) -> str:
        """The URI without the secrets of its Git URL (a password, an HTTP token)."""
        return f"{SCHEME}://{redact(self.git_url)}#{self.model}@{self.selector}"


def _shown(text: str) -> str:
    """``text`` for an error message: its Git URL part redacted, control characters escaped."""
    scheme, sep, rest = text.partition("://")
    return repr(f"{scheme}{sep}{redact(rest)}" if sep else text)


def _malformed(text: str, why: str) -> UsageError:
    return UsageError(f"malformed URI {_shown(text)}: {why} (expected {_GRAMMAR})")


def _selector(text: str, selector: str) -> tuple[str | None, str | None]:
    """``(version, stage)`` from the text after ``@``: a version has dots, a stage has none."""
    if not selector:
        raise _malformed(text, "nothing after '@': name a stage (production) or a version (v1.2.0)")
    if "." in selector or selector[:1].isdigit():
        try:
            parse_version(selector)
        except UsageError:
            raise _malformed(text, f"{selector!r} is not a semantic version like v1.2.0") from None
        return selector, None
    if not valid_stage_name(selector):
        raise _malformed(text, f"{selector!r} is neither a stage name nor a version")
    return None, selector


def parse_uniflow_uri(text: object) -> ServingUri:
    """The :class:`ServingUri` that ``text`` names; a :class:`UsageError` (one line, the Git
    URL's secrets redacted) for another scheme or a malformed URI."""
    if not isinstance(text, str) or not text:
        raise UsageError(f"expected a URI like {_GRAMMAR}, got {text!r}")
    if len(text) > _MAX_URI:
        raise UsageError(f"URI too long ({len(text)} characters; at most {_MAX_URI})")
    m = _SCHEME_RE.match(text)
    if not m:
        raise _malformed(text, "no scheme")
    if m.group(1).lower() != SCHEME:
        raise UsageError(
            f"unsupported URI scheme {m.group(1)!r} in {_shown(text)}: "
            f"this storage initializer reads {_GRAMMAR}"
        )
    if any(ord(c) < 33 or c == "\x7f" for c in text):
        raise _malformed(text, "spaces or control characters")
    rest = text[len(m.group(0)) :]
    if not rest.startswith("//"):
        raise _malformed(text, f"{SCHEME}: must be followed by //")
    git_url, sep, fragment = rest[2:].rpartition("#")
    if not sep:
        raise _malformed(text, "no '#<model>@<stage-or-version>' after the Git URL")
    if not git_url:
        raise _malformed(text, "no Git URL before '#'")
    model, at, selector = fragment.partition("@")
    if not at:
        raise _malformed(text, f"no '@<stage-or-version>' after the model name {model!r}")
    if "@" in selector:
        raise _malformed(text, "more than one '@' after '#'")
    validate_model_name(model)
    version, stage = _selector(text, selector)
    if parse_git_url(git_url) is None:  # a malformed Git URL raises its own one line
        raise _malformed(text, f"{redact(git_url)!r} is not a Git URL or a bare repository")
    return ServingUri(git_url, model, version, stage)


def _check_dest(dest: Path) -> None:
    """``DEST_DIR`` may exist (KServe mounts an empty volume there) but must be a directory."""
    if os.path.lexists(dest) and not dest.is_dir():
        raise InvalidPathError(f"{dest} exists and is not a directory")
    if not os.path.lexists(dest) and not dest.parent.is_dir():
        raise InvalidPathError(f"{dest.parent} is not a directory")


def storage_initialize(
    uri: str | ServingUri,
    dest: str | os.PathLike[str],
    *,
    blob: str | None = None,
    progress: ProgressFn | None = None,
) -> ModelVersion:
    """Write the verified files of the version ``uri`` names into the directory ``dest``
    (created if absent; files already there with a model file's path are replaced, others
    are left alone) and return that version.

    ``blob`` is the blob remote to read chunks from (else the ones the repository's config
    names). Git and the blob remote take their credentials from the environment, as
    ``uniflow get`` does. Errors: :class:`UsageError` (scheme, syntax), :class:`RemoteError`
    (unreachable), :class:`NotFoundError` (model, version, empty stage), each one line.
    """
    from .._registry import ModelRegistry  # not at import: `uniflow --help` stays light

    parsed = uri if isinstance(uri, ServingUri) else parse_uniflow_uri(uri)
    out = Path(dest).absolute()
    _check_dest(out)
    with ModelRegistry(parsed.git_url, blob=blob) as registry:
        mv = registry.get(parsed.model, version=parsed.version, stage=parsed.stage)
        registry.export(parsed.model, out, version=mv.version, progress=progress)
    return mv
