"""The CNCF ModelPack format, as uniflow writes and reads it: media types, annotations, the
model config and the image manifest of one version, and the gate a pulled manifest passes.

Pinned to ModelPack **v0.0.7** (modelpack/model-spec, ``docs/spec.md``, ``docs/config.md``,
``docs/annotations.md``; the media types of ``specs-go/v1/mediatype.go``). A version is one
OCI image manifest (``mediaType`` :data:`MANIFEST_MEDIA_TYPE`, ``artifactType``
:data:`ARTIFACT_TYPE`) whose config is a :data:`CONFIG_MEDIA_TYPE` JSON document and whose
layers are the version's files, **one unarchived layer per file** (the ``.raw`` media types):
a layer's bytes are the file's bytes, so its digest is the file's sha256 and a file shared by
two versions is one blob in the registry, uploaded once.

Layer annotations: ``org.cncf.model.filepath`` (the path in the version),
``org.cncf.model.file.metadata+json`` (name, mode, uid 0, gid 0, size, the version's
registration time, typeflag ``'0'``), ``org.cncf.model.file.mediatype.untested`` = ``"true"``
(weight, config, doc or code is told from the file name), ``org.opencontainers.image.title``
(the path, for ``oras pull``) and :data:`ANN_FILE_BLAKE3` (the registered BLAKE3 file digest).

Manifest annotations (:data:`ANN_PREFIX`): the model's name, version, stage when pushed,
metrics (JSON), framework, serializer, code commit, content digest (the version's identity:
BLAKE3 over the sorted ``(path, mode, file digest)``), the signer where the version is signed,
and :data:`ANN_FORMAT` (this layout's version); plus ``org.opencontainers.image.{title,version,
revision,created}`` for tools that show those.

Everything read from a registry is untrusted: :func:`parse_manifest` and :func:`check_config`
refuse, with one line, anything that is not such an artifact (:class:`UsageError`: another
artifact type, a layer kind uniflow does not write) or is malformed or inconsistent
(:class:`IntegrityError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._bounded import load_json
from .._errors import IntegrityError, UniflowError, UsageError
from .._naming import validate_model_name, validate_relpath, validate_version
from .._records.manifest import content_digest

__all__ = [
    "SPEC_VERSION",
    "MANIFEST_MEDIA_TYPE",
    "INDEX_MEDIA_TYPE",
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "WEIGHT_RAW",
    "WEIGHT_CONFIG_RAW",
    "DOC_RAW",
    "CODE_RAW",
    "DATASET_RAW",
    "RAW_LAYER_TYPES",
    "ANN_PREFIX",
    "ANN_FORMAT",
    "ANN_FILE_BLAKE3",
    "MAX_MANIFEST_BYTES",
    "MAX_CONFIG_BYTES",
    "LayerFile",
    "VersionInfo",
    "Artifact",
    "layer_media_type",
    "canonical_json",
    "build_config",
    "build_manifest",
    "parse_manifest",
    "check_config",
]

#: the ModelPack release this module follows
SPEC_VERSION = "v0.0.7"

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"
CODE_RAW = "application/vnd.cncf.model.code.v1.raw"
DATASET_RAW = "application/vnd.cncf.model.dataset.v1.raw"
RAW_LAYER_TYPES = frozenset({WEIGHT_RAW, WEIGHT_CONFIG_RAW, DOC_RAW, CODE_RAW, DATASET_RAW})

# ModelPack's layer annotations
ANN_FILEPATH = "org.cncf.model.filepath"
ANN_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANN_UNTESTED = "org.cncf.model.file.mediatype.untested"
# the OCI image spec's pre-defined annotations
OCI_TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_CREATED = "org.opencontainers.image.created"
# uniflow's own
ANN_PREFIX = "org.uniflow."
ANN_FORMAT = ANN_PREFIX + "oci.format"
ANN_NAME = ANN_PREFIX + "name"
ANN_VERSION = ANN_PREFIX + "version"
ANN_STAGE = ANN_PREFIX + "stage"
ANN_METRICS = ANN_PREFIX + "metrics"
ANN_FRAMEWORK = ANN_PREFIX + "framework"
ANN_SERIALIZER = ANN_PREFIX + "serializer"
ANN_CODE_COMMIT = ANN_PREFIX + "code-commit"
ANN_CONTENT_DIGEST = ANN_PREFIX + "content-digest"
ANN_SIGNER = ANN_PREFIX + "signer"
ANN_FILE_BLAKE3 = ANN_PREFIX + "file.blake3"
#: the version of the annotation layout above
FORMAT = "1"

#: the OCI distribution spec's advice: registries may refuse manifests above 4 MiB
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 4 << 20
_MODES = (0o644, 0o755)
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

#: ModelPack ``config.format`` of each serializer's files
_FORMATS = {"torch": "safetensors", "sklearn": "skops", "numpy": "npy", "onnx": "onnx", "pickle": "pickle"}
_DOC_NAMES = ("readme", "license", "licence", "notice", "copying", "model_card", "modelcard")
_DOC_SUFFIXES = (".md", ".rst", ".pdf", ".html")
_CODE_SUFFIXES = (".py", ".sh", ".ipynb", ".js", ".ts", ".r", ".jl", ".c", ".cc", ".cpp", ".h")
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml", ".txt", ".pbtxt", ".cfg", ".ini", ".jinja", ".model")


@dataclass(frozen=True)
class LayerFile:
    """One file of a version, as one layer: ``digest`` is its sha256 (``sha256:...``),
    ``blake3`` the registered BLAKE3 file digest (hex)."""

    path: str
    size: int
    mode: int
    blake3: str
    digest: str
    media_type: str


@dataclass(frozen=True)
class VersionInfo:
    """What an artifact says about the version it holds."""

    name: str
    version: str
    content_digest: str
    created_at: str = ""
    stage: str = ""
    framework: str = ""
    serializer: str = ""
    code_commit: str = ""
    author: str = ""
    description: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    signer: str | None = None


@dataclass(frozen=True)
class Artifact:
    """A pulled manifest that passed :func:`parse_manifest`."""

    info: VersionInfo
    layers: tuple[LayerFile, ...]
    config_digest: str
    config_size: int


def layer_media_type(path: str) -> str:
    """The raw ModelPack layer media type of a file, told from its name: documentation,
    code, configuration of the weights, else weights."""
    base = path.rsplit("/", 1)[-1].lower()
    stem = base.split(".", 1)[0]
    if stem in _DOC_NAMES or base.endswith(_DOC_SUFFIXES):
        return DOC_RAW
    if base.endswith(_CODE_SUFFIXES):
        return CODE_RAW
    if base.endswith(_CONFIG_SUFFIXES):
        return WEIGHT_CONFIG_RAW
    return WEIGHT_RAW


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same record always gives the same bytes (and digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build_config(info: VersionInfo, layers: Sequence[LayerFile]) -> bytes:
    """The ``application/vnd.cncf.model.config.v1+json`` document of a version."""
    descriptor: dict[str, Any] = {"name": info.name, "version": info.version}
    if info.created_at:
        descriptor["createdAt"] = info.created_at
    if info.author:
        descriptor["authors"] = [info.author]
    if info.description:
        descriptor["description"] = info.description
    if info.code_commit:
        descriptor["revision"] = info.code_commit
    config: dict[str, Any] = {}
    fmt = _FORMATS.get(info.serializer)
    if fmt:
        config["format"] = fmt
    modelfs = {"type": "layers", "diffIds": [layer.digest for layer in layers]}
    return canonical_json({"descriptor": descriptor, "config": config, "modelfs": modelfs})


def _layer_annotations(layer: LayerFile, mtime: str) -> dict[str, str]:
    meta = {
        "name": layer.path.rsplit("/", 1)[-1],
        "mode": layer.mode,
        "uid": 0,
        "gid": 0,
        "size": layer.size,
        "mtime": mtime,
        "typeflag": ord("0"),
    }
    return {
        ANN_FILEPATH: layer.path,
        ANN_FILE_METADATA: canonical_json(meta).decode(),
        ANN_UNTESTED: "true",
        OCI_TITLE: layer.path,
        ANN_FILE_BLAKE3: layer.blake3,
    }


def _manifest_annotations(info: VersionInfo) -> dict[str, str]:
    ann = {
        ANN_FORMAT: FORMAT,
        ANN_NAME: info.name,
        ANN_VERSION: info.version,
        ANN_STAGE: info.stage,
        ANN_METRICS: canonical_json(dict(info.metrics)).decode(),
        ANN_FRAMEWORK: info.framework,
        ANN_SERIALIZER: info.serializer,
        ANN_CODE_COMMIT: info.code_commit,
        ANN_CONTENT_DIGEST: f"blake3:{info.content_digest}",
        OCI_TITLE: info.name,
        OCI_VERSION: info.version,
    }
    if info.code_commit:
        ann[OCI_REVISION] = info.code_commit
    if info.created_at:
        ann[OCI_CREATED] = info.created_at
    if info.signer:
        ann[ANN_SIGNER] = info.signer
    return ann


def build_manifest(
    info: VersionInfo, layers: Sequence[LayerFile], config: bytes, config_digest: str
) -> bytes:
    """The OCI image manifest of a version: ModelPack's artifact type, its config, one layer
    per file (in path order), uniflow's annotations."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [
            {
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.size,
                "annotations": _layer_annotations(layer, info.created_at or "1970-01-01T00:00:00Z"),
            }
            for layer in layers
        ],
        "annotations": _manifest_annotations(info),
    }
    return canonical_json(doc)


# ---------------------------------------------------------------------- the gate
def _bad(where: str, what: str) -> IntegrityError:
    return IntegrityError(f"{where}: invalid model artifact: {what}")


def _str_map(value: object, where: str, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(where, f"{what} are not a map of strings")
    return value


def _size(value: object, where: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(where, f"{what} has no valid size")
    return value


def _sha256(value: object, where: str, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise _bad(where, f"{what} has no sha256 digest (uniflow writes sha256:<64 hex>)")
    return value


def _kind(doc: dict[str, Any], where: str) -> None:
    """Refuse, as a :class:`UsageError`, a manifest that is not a ModelPack model artifact."""
    media = doc.get("mediaType")
    if media == INDEX_MEDIA_TYPE or "manifests" in doc:
        raise UsageError(f"{where} is an image index (several platforms?), not a ModelPack model artifact")
    if media not in (None, MANIFEST_MEDIA_TYPE):
        raise UsageError(f"{where} is a {media} manifest, not a ModelPack model artifact")
    config = doc.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    artifact = doc.get("artifactType")
    if config_type != CONFIG_MEDIA_TYPE or artifact not in (None, ARTIFACT_TYPE):
        shown = artifact or config_type or "unknown"
        raise UsageError(
            f"{where} is not a ModelPack model artifact: its artifact type is {shown} "
            f"(expected {ARTIFACT_TYPE})"
        )


def _info(ann: dict[str, str], where: str) -> VersionInfo:
    if ann.get(ANN_FORMAT) != FORMAT:
        raise UsageError(
            f"{where} is a ModelPack artifact that uniflow did not push (no {ANN_FORMAT} = {FORMAT} "
            "annotation): uniflow pulls the model versions it pushed"
        )
    try:
        name = validate_model_name(ann.get(ANN_NAME))
        version = validate_version(ann.get(ANN_VERSION))
    except UniflowError as exc:
        raise _bad(where, str(exc)) from exc
    digest = ann.get(ANN_CONTENT_DIGEST, "")
    if not digest.startswith("blake3:") or not _HEX64.match(digest[7:]):
        raise _bad(where, f"annotation {ANN_CONTENT_DIGEST} is not blake3:<64 hex>")
    try:
        metrics = json.loads(ann.get(ANN_METRICS) or "{}")
    except ValueError:
        metrics = None
    if not isinstance(metrics, dict):
        raise _bad(where, f"annotation {ANN_METRICS} is not a JSON object")
    return VersionInfo(
        name=name,
        version=version,
        content_digest=digest[7:],
        created_at=ann.get(OCI_CREATED, ""),
        stage=ann.get(ANN_STAGE, ""),
        framework=ann.get(ANN_FRAMEWORK, ""),
        serializer=ann.get(ANN_SERIALIZER, ""),
        code_commit=ann.get(ANN_CODE_COMMIT, ""),
        metrics=metrics,
        signer=ann.get(ANN_SIGNER),
    )


def _layer(raw: object, i: int, where: str) -> LayerFile:
    if not isinstance(raw, dict):
        raise _bad(where, f"layer {i} is not an object")
    media = raw.get("mediaType")
    if media not in RAW_LAYER_TYPES:
        raise UsageError(
            f"{where}: layer {i} has media type {media!r}; uniflow pulls unarchived ModelPack layers "
            "(application/vnd.cncf.model.*.v1.raw), one per file"
        )
    ann = _str_map(raw.get("annotations"), where, f"layer {i}'s annotations")
    path = ann.get(ANN_FILEPATH)
    try:
        validate_relpath(path)
    except UniflowError as exc:
        raise _bad(where, f"layer {i}: {exc}") from exc
    assert isinstance(path, str)
    size = _size(raw.get("size"), where, f"layer {path!r}")
    b3 = ann.get(ANN_FILE_BLAKE3, "")
    if not _HEX64.match(b3):
        raise _bad(where, f"layer {path!r} has no {ANN_FILE_BLAKE3} annotation (64 hex digits)")
    try:
        meta = json.loads(ann.get(ANN_FILE_METADATA) or "null")
    except ValueError:
        meta = None
    mode = meta.get("mode") if isinstance(meta, dict) else None
    if mode not in _MODES or isinstance(mode, bool) or not isinstance(meta, dict) or meta.get("size") != size:
        raise _bad(where, f"layer {path!r}: {ANN_FILE_METADATA} must give its size and mode 420 or 493")
    assert isinstance(mode, int)
    digest = _sha256(raw.get("digest"), where, f"layer {path!r}")
    return LayerFile(path, size, mode, b3, digest, str(media))


def _check_paths(layers: Sequence[LayerFile], where: str) -> None:
    files: set[str] = set()
    dirs: set[str] = set()
    for layer in layers:
        if layer.path in files:
            raise _bad(where, f"file path {layer.path!r} appears twice")
        files.add(layer.path)
        parts = layer.path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = files & dirs
    if clash:
        raise _bad(where, f"file path {min(clash)!r} is also a directory")


def parse_manifest(body: bytes, where: str) -> Artifact:
    """The gate of a pulled manifest's bytes (``where`` names it in errors): a ModelPack model
    artifact uniflow pushed, self-consistent (the content digest annotation matches the
    files' paths, modes and BLAKE3 digests), or a one-line error."""
    doc = load_json(body, f"{where} manifest", limit=MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise _bad(where, "not an OCI image manifest (schemaVersion 2)")
    _kind(doc, where)
    info = _info(_str_map(doc.get("annotations"), where, "manifest annotations"), where)
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise _bad(where, "no layers")
    layers = tuple(_layer(raw, i, where) for i, raw in enumerate(raw_layers))
    _check_paths(layers, where)
    rows = [{"path": f.path, "mode": f.mode, "digest": f.blake3} for f in layers]
    if content_digest(rows) != info.content_digest:
        raise _bad(where, "the content digest annotation does not match the files' digests")
    config = doc["config"]
    config_size = _size(config.get("size"), where, "the config")
    if config_size > MAX_CONFIG_BYTES:
        raise _bad(where, f"the config is {config_size} bytes (at most {MAX_CONFIG_BYTES})")
    return Artifact(info, layers, _sha256(config.get("digest"), where, "the config"), config_size)


def check_config(body: bytes, art: Artifact, where: str) -> None:
    """The config blob agrees with the manifest: the model's name and version, and one
    ``diffIds`` entry per layer, in order, equal to the layers' digests (raw layers)."""
    doc = load_json(body, f"{where} config", limit=MAX_CONFIG_BYTES)
    descriptor = doc.get("descriptor") if isinstance(doc, dict) else None
    modelfs = doc.get("modelfs") if isinstance(doc, dict) else None
    if not isinstance(descriptor, dict) or not isinstance(modelfs, dict):
        raise _bad(where, "the config has no descriptor or modelfs")
    if (descriptor.get("name"), descriptor.get("version")) != (art.info.name, art.info.version):
        raise _bad(where, "the config names another model or version than the annotations")
    if modelfs.get("type") != "layers" or modelfs.get("diffIds") != [f.digest for f in art.layers]:
        raise _bad(where, "the config's modelfs.diffIds do not match the layers")
