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
(the path, for ``oras pull``) and :data:`ANN_FILE_BLAKE3` (BLAKE3 of the layer's bytes, what
``b3sum`` prints). A file of a format-3 version (whose registered digest is the Merkle
identity of its chunks, ``_storage.merkle``) also carries :data:`ANN_FILE_DIGEST` (that
identity) and :data:`ANN_FILE_CHUNKS` (its chunk sizes, comma-separated decimal, in file
order), and the artifact is of layout :data:`FORMAT_MERKLE`: a pull hashes each chunk's
range of the bytes as they stream (:class:`LayerHashes`) and refuses a layer whose identity
differs, so the content digest, computed over the identities, is tied to the bytes.

The chunk sizes take about 8 bytes per chunk. A version whose layout-2 manifest would be
larger than :data:`MAX_INLINE_MANIFEST_BYTES` is written in layout :data:`FORMAT_CHUNK_LIST`
instead: its layers carry the identity alone, and the chunk sizes of every identity move into
one content-addressed blob, the **chunk list** (:data:`CHUNK_LIST_MEDIA_TYPE`, binary, see
:func:`encode_chunk_list`), referenced as the manifest's last layer (no ModelPack media type,
no file path or title annotation: tools that unpack ModelPack artifacts do not take it for a
model file, and the OCI image spec tells them to ignore a layer media type they do not know).
So the manifest stays small for a version of any size. A pull bounds the chunk list's declared
size by its layers' sizes (:func:`parse_manifest`), reads it, checks its sha256, and decodes
it against the layers (:func:`attach_chunk_list`) before any file is written.

Manifest annotations (:data:`ANN_PREFIX`): the model's name, version, stage when pushed,
metrics (JSON), framework, serializer, code commit, content digest (the version's identity:
BLAKE3 over the sorted ``(path, mode, file digest)``, the file digest being the identity where a
layer has one, its BLAKE3 otherwise), the signer where the version is signed, and
:data:`ANN_FORMAT` (this layout's version); plus ``org.opencontainers.image.{title,version,
revision,created}`` for tools that show those.

Everything read from a registry is untrusted: :func:`parse_manifest` and :func:`check_config`
refuse, with one line, anything that is not such an artifact (:class:`UsageError`: another
artifact type, a layer kind uniflow does not write) or is malformed or inconsistent
(:class:`IntegrityError`).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import blake3

from .._bounded import load_json
from .._errors import IntegrityError, UniflowError, UsageError
from .._naming import validate_model_name, validate_relpath, validate_version
from .._records.manifest import MAX_CHUNK_BYTES, MIN_NONFINAL_CHUNK, content_digest
from .._storage.merkle import MerkleBuilder

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
    "ANN_FILE_DIGEST",
    "ANN_FILE_CHUNKS",
    "FORMAT",
    "FORMAT_MERKLE",
    "FORMAT_CHUNK_LIST",
    "CHUNK_LIST_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
    "MAX_INLINE_MANIFEST_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_CHUNK_LIST_BYTES",
    "LayerFile",
    "BlobRef",
    "LayerHashes",
    "VersionInfo",
    "Artifact",
    "layer_media_type",
    "canonical_json",
    "build_config",
    "build_manifest",
    "encode_chunk_list",
    "plan_chunk_list",
    "parse_manifest",
    "attach_chunk_list",
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
ANN_FILE_DIGEST = ANN_PREFIX + "file.digest"
ANN_FILE_CHUNKS = ANN_PREFIX + "file.chunks"
#: the version of the annotation layout above: ``1`` for a version of manifest format 1 or 2
#: (the file digest is the BLAKE3 of the bytes), ``2`` for format 3 (every layer also carries
#: the file's Merkle identity and chunk sizes), ``3`` for format 3 with the chunk sizes in the
#: chunk-list blob (every file layer carries its identity alone)
FORMAT = "1"
FORMAT_MERKLE = "2"
FORMAT_CHUNK_LIST = "3"
_LAYOUTS = (FORMAT, FORMAT_MERKLE, FORMAT_CHUNK_LIST)
#: the chunk list of a layout-3 artifact: not a ModelPack layer type, so that no ModelPack tool
#: takes it for a file of the model (see :func:`encode_chunk_list` for its bytes)
CHUNK_LIST_MEDIA_TYPE = "application/vnd.uniflow.file.chunks.v1"
_CHUNK_LIST_MAGIC = b"UFCHUNK1"
_ENTRY = struct.Struct("<32sI")  # an identity and its chunk count
#: the array type code of a 4-byte unsigned integer (a chunk size on the wire)
_U32 = next(code for code in "IL" if array(code).itemsize == 4)
#: the longest decimal chunk size (MAX_CHUNK_BYTES) and its comma
_CHARS_PER_CHUNK = len(str(MAX_CHUNK_BYTES)) + 1
_CHUNK_SIZE = re.compile(rf"[1-9][0-9]{{0,{_CHARS_PER_CHUNK - 2}}}")

#: the OCI distribution spec's advice: registries may refuse manifests above 4 MiB
MAX_MANIFEST_BYTES = 4 << 20
#: the largest manifest that carries its chunk sizes in layer annotations (layout 2); a
#: version whose layout-2 manifest would be larger is written in layout 3
MAX_INLINE_MANIFEST_BYTES = MAX_MANIFEST_BYTES
MAX_CONFIG_BYTES = 4 << 20
#: the largest chunk list written or read: 4 bytes per chunk, so some 4 million chunks (a
#: TiB of files in chunks of the chunker's 256 KiB minimum, 4 TiB at its 1 MiB average)
MAX_CHUNK_LIST_BYTES = 16 << 20
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
    ``blake3`` the BLAKE3 of its bytes (hex, what ``b3sum`` prints); for a file of a format-3
    version, ``identity`` is its registered digest (the Merkle identity of its chunks) and
    ``chunks`` its chunk sizes in order (both None otherwise)."""

    path: str
    size: int
    mode: int
    blake3: str
    digest: str
    media_type: str
    identity: str | None = None
    chunks: tuple[int, ...] | None = None

    @property
    def file_digest(self) -> str:
        """The registered file digest: the identity where there is one, else the BLAKE3."""
        return self.identity if self.identity is not None else self.blake3


class LayerHashes:
    """The digests of a layer's bytes, fed in order as they stream: its sha256 (the layer
    digest), its BLAKE3 and, given its chunk sizes, the Merkle identity of the chunks those
    sizes cut the bytes into (each chunk's range hashed as it completes, the names fed to
    ``_storage.merkle.MerkleBuilder``). ``threads``: hash the whole-file BLAKE3 on several
    threads (for large reads)."""

    def __init__(self, chunks: Sequence[int] | None = None, *, threads: bool = False) -> None:
        self._sha = hashlib.sha256()
        self._b3 = blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)
        self._sizes: Iterator[int] | None = iter(chunks) if chunks is not None else None
        self._tree = MerkleBuilder() if chunks is not None else None
        self._chunk = blake3.blake3()
        self._want = 0  # size of the chunk being hashed
        self._left = 0  # its bytes still to come
        self._over = False  # bytes beyond the last chunk
        self.size = 0

    def update(self, piece: bytes | memoryview) -> None:
        """Hash the next ``piece`` of the layer."""
        self._sha.update(piece)
        self._b3.update(piece)
        self.size += len(piece)
        if self._tree is not None:
            self._split(memoryview(piece))

    def _split(self, view: memoryview) -> None:
        assert self._tree is not None and self._sizes is not None
        while view and not self._over:  # bounded: each pass consumes bytes or ends
            if self._left == 0:
                nxt = next(self._sizes, None)
                if nxt is None or nxt <= 0:
                    self._over = True
                    return
                self._want = self._left = nxt
            take = min(self._left, len(view))
            self._chunk.update(view[:take])
            self._left -= take
            view = view[take:]
            if self._left == 0:
                self._tree.add(self._chunk.digest(), self._want)
                self._chunk = blake3.blake3()

    def sha256(self) -> str:
        """``sha256:<hex>`` of the bytes fed."""
        return "sha256:" + self._sha.hexdigest()

    def b3sum(self) -> str:
        """BLAKE3 (hex) of the bytes fed."""
        return self._b3.hexdigest()

    def identity(self) -> str | None:
        """The Merkle identity of the chunks (None without chunk sizes, or when the bytes fed
        do not end exactly where the last chunk does)."""
        if self._tree is None or self._sizes is None or self._over or self._left:
            return None
        if next(self._sizes, None) is not None:
            return None
        return self._tree.hexdigest()


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
class BlobRef:
    """A blob a manifest names: its ``sha256:...`` digest and declared size."""

    digest: str
    size: int


@dataclass(frozen=True)
class Artifact:
    """A pulled manifest that passed :func:`parse_manifest`. In layout
    :data:`FORMAT_CHUNK_LIST`, ``chunk_list`` names the chunk-list blob, and the layers have no
    chunk sizes until :func:`attach_chunk_list` gives them theirs."""

    info: VersionInfo
    layers: tuple[LayerFile, ...]
    config_digest: str
    config_size: int
    chunk_list: BlobRef | None = None


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


def _sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_config(info: VersionInfo, layers: Sequence[LayerFile], chunk_list: bytes | None = None) -> bytes:
    """The ``application/vnd.cncf.model.config.v1+json`` document of a version; ``chunk_list``
    (layout 3) is the last layer, so its digest ends ``modelfs.diffIds``."""
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
    diff_ids = [layer.digest for layer in layers]
    if chunk_list is not None:
        diff_ids.append(_sha256_of(chunk_list))
    modelfs = {"type": "layers", "diffIds": diff_ids}
    return canonical_json({"descriptor": descriptor, "config": config, "modelfs": modelfs})


def _layer_annotations(layer: LayerFile, mtime: str, inline: bool) -> dict[str, str]:
    meta = {
        "name": layer.path.rsplit("/", 1)[-1],
        "mode": layer.mode,
        "uid": 0,
        "gid": 0,
        "size": layer.size,
        "mtime": mtime,
        "typeflag": ord("0"),
    }
    ann = {
        ANN_FILEPATH: layer.path,
        ANN_FILE_METADATA: canonical_json(meta).decode(),
        ANN_UNTESTED: "true",
        OCI_TITLE: layer.path,
        ANN_FILE_BLAKE3: layer.blake3,
    }
    if layer.identity is not None:
        ann[ANN_FILE_DIGEST] = layer.identity
        if inline:
            ann[ANN_FILE_CHUNKS] = ",".join(map(str, layer.chunks or ()))
    return ann


def _manifest_annotations(info: VersionInfo, layout: str) -> dict[str, str]:
    ann = {
        ANN_FORMAT: layout,
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


def _manifest_body(
    info: VersionInfo,
    layers: Sequence[LayerFile],
    config: bytes,
    config_digest: str,
    chunk_list: bytes | None,
) -> bytes:
    """The manifest of :func:`build_manifest`, of any length."""
    if chunk_list is not None:
        layout = FORMAT_CHUNK_LIST
    else:
        layout = FORMAT_MERKLE if any(layer.identity is not None for layer in layers) else FORMAT
    mtime = info.created_at or "1970-01-01T00:00:00Z"
    descriptors: list[dict[str, Any]] = [
        {
            "mediaType": layer.media_type,
            "digest": layer.digest,
            "size": layer.size,
            "annotations": _layer_annotations(layer, mtime, chunk_list is None),
        }
        for layer in layers
    ]
    if chunk_list is not None:
        descriptors.append(
            {"mediaType": CHUNK_LIST_MEDIA_TYPE, "digest": _sha256_of(chunk_list), "size": len(chunk_list)}
        )
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": descriptors,
        "annotations": _manifest_annotations(info, layout),
    }
    return canonical_json(doc)


def build_manifest(
    info: VersionInfo,
    layers: Sequence[LayerFile],
    config: bytes,
    config_digest: str,
    chunk_list: bytes | None = None,
) -> bytes:
    """The OCI image manifest of a version: ModelPack's artifact type, its config, one layer
    per file (in path order), uniflow's annotations; with ``chunk_list`` (layout 3), that blob
    as the last layer and no chunk sizes in the file layers. A manifest above
    :data:`MAX_MANIFEST_BYTES` (what registries accept) is a :class:`UsageError`."""
    body = _manifest_body(info, layers, config, config_digest, chunk_list)
    if len(body) > MAX_MANIFEST_BYTES:
        chunks = sum(len(layer.chunks or ()) for layer in layers)
        raise UsageError(
            f"{info.name} {info.version} does not fit one OCI manifest: {len(body)} bytes for "
            f"{len(layers)} files of {chunks} chunks in all, above the {MAX_MANIFEST_BYTES >> 20} MiB "
            "registries accept"
        )
    return body


def encode_chunk_list(layers: Sequence[LayerFile]) -> bytes:
    """The chunk-list blob of layout 3: the magic ``UFCHUNK1``, the number of entries (uint32
    little-endian), then one entry per distinct identity of ``layers``, in ascending order of
    the identity's bytes: the identity (32 bytes), its chunk count (uint32 LE) and each chunk's
    size (uint32 LE), in file order. Deterministic: the same files give the same bytes."""
    table = {layer.identity: layer.chunks for layer in layers if layer.identity is not None}
    out = bytearray(_CHUNK_LIST_MAGIC)
    out += struct.pack("<I", len(table))
    for identity in sorted(table):
        sizes = array(_U32, table[identity] or ())
        if sys.byteorder == "big":  # pragma: no cover - little-endian on the wire
            sizes.byteswap()
        out += _ENTRY.pack(bytes.fromhex(identity), len(sizes))
        out += sizes.tobytes()
    return bytes(out)


def plan_chunk_list(info: VersionInfo, layers: Sequence[LayerFile]) -> bytes | None:
    """The chunk list a version's manifest needs (layout 3), or None when it needs none: a
    version without identities (layout 1), or one whose layout-2 manifest, chunk sizes in the
    layer annotations, is at most :data:`MAX_INLINE_MANIFEST_BYTES`. ``layers`` may carry
    placeholder digests of the real ones' length. A version whose manifest fits no layout is a
    :class:`UsageError`, raised before anything is uploaded."""
    placeholder = "sha256:" + "0" * 64
    config = build_config(info, layers)
    merkle = any(f.identity is not None for f in layers)
    # at least 2 characters per chunk size ("1,"): a version with more chunks cannot fit
    hopeless = merkle and 2 * sum(len(f.chunks or ()) for f in layers) > MAX_INLINE_MANIFEST_BYTES
    if not hopeless:
        inline = _manifest_body(info, layers, config, placeholder, None)
        if len(inline) <= MAX_INLINE_MANIFEST_BYTES or not merkle:
            build_manifest(info, layers, config, placeholder)  # refuses one above MAX_MANIFEST_BYTES
            return None
    blob = encode_chunk_list(layers)
    if len(blob) > MAX_CHUNK_LIST_BYTES:
        raise UsageError(
            f"{info.name} {info.version} has too many chunks for an OCI artifact: its chunk list "
            f"takes {len(blob)} bytes, above the {MAX_CHUNK_LIST_BYTES >> 20} MiB uniflow reads"
        )
    build_manifest(info, layers, build_config(info, layers, blob), placeholder, blob)
    return blob


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


def _layout(ann: dict[str, str], where: str) -> str:
    """The artifact's layout (:data:`ANN_FORMAT`): one this uniflow reads, or a UsageError
    naming a newer uniflow or another tool."""
    layout = ann.get(ANN_FORMAT, "")
    if layout in _LAYOUTS:
        return layout
    if layout.isdigit() and len(layout) < 6 and int(layout) > int(_LAYOUTS[-1]):
        raise UsageError(
            f"{where} was pushed by a newer uniflow ({ANN_FORMAT} {layout}; this one reads "
            f"{' and '.join(_LAYOUTS)}): upgrade uniflow"
        )
    raise UsageError(
        f"{where} is a ModelPack artifact that uniflow did not push (no {ANN_FORMAT} = {FORMAT} "
        "annotation): uniflow pulls the model versions it pushed"
    )


def _info(ann: dict[str, str], where: str) -> VersionInfo:
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


def _chunk_sizes(text: str, path: str, size: int, where: str) -> tuple[int, ...]:
    """The chunk sizes of :data:`ANN_FILE_CHUNKS`: bounded by the layer's size before the text
    is split (a file of S bytes has at most ``1 + (S - 1) // MIN_NONFINAL_CHUNK`` chunks, each
    of at most 8 digits), each 1 to MAX_CHUNK_BYTES, summing to the layer's size."""
    most = _chunk_bounds(size)[1]
    if len(text) > most * _CHARS_PER_CHUNK:
        raise _bad(
            where,
            f"layer {path!r}: {ANN_FILE_CHUNKS} is {len(text)} characters, more than {size} bytes "
            f"of chunks can take ({most * _CHARS_PER_CHUNK})",
        )
    parts = text.split(",") if text else []
    if not all(_CHUNK_SIZE.fullmatch(part) for part in parts):
        raise _bad(where, f"layer {path!r}: {ANN_FILE_CHUNKS} is not comma-separated chunk sizes")
    return _check_cut(tuple(map(int, parts)), path, size, where, ANN_FILE_CHUNKS)


def _chunk_bounds(size: int) -> tuple[int, int]:
    """The fewest and the most chunks a file of ``size`` bytes is cut into."""
    return -(-size // MAX_CHUNK_BYTES), (1 + (size - 1) // MIN_NONFINAL_CHUNK if size else 0)


def _check_cut(sizes: tuple[int, ...], path: str, size: int, where: str, what: str) -> tuple[int, ...]:
    """``sizes`` cut a layer of ``size`` bytes into chunks: as many as such a file can have,
    each 1 byte to MAX_CHUNK_BYTES, their sum the layer's size."""
    low, most = _chunk_bounds(size)
    if (
        not low <= len(sizes) <= most
        or any(not 1 <= n <= MAX_CHUNK_BYTES for n in sizes)
        or sum(sizes) != size
    ):
        raise _bad(where, f"layer {path!r}: {what} do not cut its {size} bytes into chunks")
    return sizes


def _merkle(
    ann: dict[str, str], path: str, size: int, layout: str, where: str
) -> tuple[str | None, tuple[int, ...] | None]:
    """A layer's identity and chunk sizes: both present in layout :data:`FORMAT_MERKLE`,
    both absent in :data:`FORMAT`; in :data:`FORMAT_CHUNK_LIST`, the identity alone (the
    sizes come from the chunk list, :func:`attach_chunk_list`)."""
    if layout == FORMAT:
        if ANN_FILE_DIGEST in ann or ANN_FILE_CHUNKS in ann:
            raise _bad(where, f"layer {path!r} has {ANN_FILE_DIGEST} in an artifact of {ANN_FORMAT} {FORMAT}")
        return None, None
    identity = ann.get(ANN_FILE_DIGEST, "")
    if not _HEX64.fullmatch(identity):
        raise _bad(where, f"layer {path!r} has no {ANN_FILE_DIGEST} annotation (64 hex digits)")
    if layout == FORMAT_CHUNK_LIST:
        if ANN_FILE_CHUNKS in ann:
            raise _bad(
                where,
                f"layer {path!r} has {ANN_FILE_CHUNKS} in an artifact of {ANN_FORMAT} {FORMAT_CHUNK_LIST} "
                "(its chunk sizes are in the chunk list)",
            )
        return identity, None
    if ANN_FILE_CHUNKS not in ann:
        raise _bad(where, f"layer {path!r} has no {ANN_FILE_CHUNKS} annotation")
    return identity, _chunk_sizes(ann[ANN_FILE_CHUNKS], path, size, where)


def _layer(raw: object, i: int, layout: str, where: str) -> LayerFile:
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
    identity, chunks = _merkle(ann, path, size, layout, where)
    try:
        meta = json.loads(ann.get(ANN_FILE_METADATA) or "null")
    except ValueError:
        meta = None
    mode = meta.get("mode") if isinstance(meta, dict) else None
    if mode not in _MODES or isinstance(mode, bool) or not isinstance(meta, dict) or meta.get("size") != size:
        raise _bad(where, f"layer {path!r}: {ANN_FILE_METADATA} must give its size and mode 420 or 493")
    assert isinstance(mode, int)
    digest = _sha256(raw.get("digest"), where, f"layer {path!r}")
    return LayerFile(path, size, mode, b3, digest, str(media), identity, chunks)


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
    files' paths, modes and file digests: identities in layout :data:`FORMAT_MERKLE`, BLAKE3
    digests in :data:`FORMAT`), or a one-line error."""
    doc = load_json(body, f"{where} manifest", limit=MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise _bad(where, "not an OCI image manifest (schemaVersion 2)")
    _kind(doc, where)
    ann = _str_map(doc.get("annotations"), where, "manifest annotations")
    layout = _layout(ann, where)
    info = _info(ann, where)
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raw_layers = []
    last = _chunk_list_layer(raw_layers, where) if layout == FORMAT_CHUNK_LIST else None
    if not raw_layers:
        raise _bad(where, "no layers")
    layers = tuple(_layer(raw, i, layout, where) for i, raw in enumerate(raw_layers))
    _check_paths(layers, where)
    rows = [{"path": f.path, "mode": f.mode, "digest": f.file_digest} for f in layers]
    if content_digest(rows) != info.content_digest:
        raise _bad(where, "the content digest annotation does not match the files' digests")
    chunk_list = _chunk_list_ref(last, layers, where) if last is not None else None
    config = doc["config"]
    config_size = _size(config.get("size"), where, "the config")
    if config_size > MAX_CONFIG_BYTES:
        raise _bad(where, f"the config is {config_size} bytes (at most {MAX_CONFIG_BYTES})")
    return Artifact(info, layers, _sha256(config.get("digest"), where, "the config"), config_size, chunk_list)


def _chunk_list_layer(raw_layers: list[Any], where: str) -> dict[str, Any]:
    """The last layer of a layout-3 manifest, taken off ``raw_layers``: its chunk list."""
    raw = raw_layers.pop() if raw_layers else None
    if not isinstance(raw, dict) or raw.get("mediaType") != CHUNK_LIST_MEDIA_TYPE:
        raise _bad(
            where,
            f"the last layer of an artifact of {ANN_FORMAT} {FORMAT_CHUNK_LIST} is not its chunk list "
            f"({CHUNK_LIST_MEDIA_TYPE})",
        )
    return raw


def _chunk_list_ref(raw: dict[str, Any], layers: Sequence[LayerFile], where: str) -> BlobRef:
    """The chunk-list descriptor of a layout-3 manifest, its declared size bounded by what its
    files can need: 12 bytes, and per distinct identity 36 bytes and 4 per chunk, as many
    chunks as a file of that size can have (and at most :data:`MAX_CHUNK_LIST_BYTES` in all),
    before a byte of it is read."""
    digest = _sha256(raw.get("digest"), where, "the chunk list")
    size = _size(raw.get("size"), where, "the chunk list")
    sizes = {f.identity: f.size for f in layers}
    bounds = [_chunk_bounds(n) for n in sizes.values()]
    low = len(_CHUNK_LIST_MAGIC) + 4 + sum(_ENTRY.size + 4 * lo for lo, _ in bounds)
    high = len(_CHUNK_LIST_MAGIC) + 4 + sum(_ENTRY.size + 4 * hi for _, hi in bounds)
    high = min(high, MAX_CHUNK_LIST_BYTES)
    if not low <= size <= high:
        raise _bad(
            where,
            f"the chunk list is declared {size} bytes; its files' sizes allow {low} to {high}",
        )
    return BlobRef(digest, size)


def _decode_chunk_list(blob: bytes, where: str) -> dict[str, tuple[int, ...]]:
    """Each identity's chunk sizes, from the bytes of :func:`encode_chunk_list`: entries in
    strictly ascending order of identity (an identity named twice is refused), each read
    only after its length is checked against what is left, nothing after the last."""
    head = len(_CHUNK_LIST_MAGIC) + 4
    if len(blob) < head or not blob.startswith(_CHUNK_LIST_MAGIC):
        raise _bad(where, f"the chunk list is not a uniflow chunk list ({_CHUNK_LIST_MAGIC.decode()})")
    (count,) = struct.unpack_from("<I", blob, len(_CHUNK_LIST_MAGIC))
    table: dict[str, tuple[int, ...]] = {}
    pos, prev = head, b""
    for _ in range(count):  # bounded: each entry consumes at least _ENTRY.size bytes or ends
        if pos + _ENTRY.size > len(blob):
            raise _bad(where, f"the chunk list ends inside an entry ({count} announced)")
        ident, n = _ENTRY.unpack_from(blob, pos)
        if ident <= prev:
            told = "names identity " + ident.hex() + " twice" if ident == prev else "is not in order"
            raise _bad(where, f"the chunk list {told}")
        prev, pos, end = ident, pos + _ENTRY.size, pos + _ENTRY.size + 4 * n
        if end > len(blob):
            raise _bad(where, f"the chunk list ends inside the sizes of identity {ident.hex()}")
        sizes = array(_U32)
        sizes.frombytes(blob[pos:end])
        if sys.byteorder == "big":  # pragma: no cover - little-endian on the wire
            sizes.byteswap()
        table[ident.hex()] = tuple(sizes)
        pos = end
    if pos != len(blob):
        raise _bad(where, f"the chunk list has {len(blob) - pos} bytes after its last entry")
    return table


def attach_chunk_list(art: Artifact, blob: bytes, where: str) -> Artifact:
    """``art`` (layout 3) with each layer's chunk sizes from ``blob``, the chunk list it names:
    ``blob`` must have the declared size and sha256, decode (:func:`_decode_chunk_list`), give
    every layer's identity sizes that cut its bytes into chunks, and list no other identity.
    The bytes are then checked against those sizes and the identity as in layout 2."""
    ref = art.chunk_list
    if ref is None:
        return art
    if len(blob) != ref.size or _sha256_of(blob) != ref.digest:
        raise _bad(where, f"the chunk list does not match its descriptor ({ref.size} bytes, {ref.digest})")
    table = _decode_chunk_list(blob, where)
    layers = []
    for layer in art.layers:
        sizes = table.get(layer.identity or "")
        if sizes is None:
            raise _bad(where, f"the chunk list has no chunk sizes for layer {layer.path!r}")
        layers.append(
            replace(layer, chunks=_check_cut(sizes, layer.path, layer.size, where, "the chunk list's sizes"))
        )
    extra = table.keys() - {f.identity for f in art.layers}
    if extra:
        raise _bad(where, f"the chunk list names identity {min(extra)}, which no layer has")
    return replace(art, layers=tuple(layers))


def check_config(body: bytes, art: Artifact, where: str) -> None:
    """The config blob agrees with the manifest: the model's name and version, and one
    ``diffIds`` entry per layer, in order, equal to the layers' digests (raw layers; in layout
    3, the chunk list's last)."""
    doc = load_json(body, f"{where} config", limit=MAX_CONFIG_BYTES)
    descriptor = doc.get("descriptor") if isinstance(doc, dict) else None
    modelfs = doc.get("modelfs") if isinstance(doc, dict) else None
    if not isinstance(descriptor, dict) or not isinstance(modelfs, dict):
        raise _bad(where, "the config has no descriptor or modelfs")
    if (descriptor.get("name"), descriptor.get("version")) != (art.info.name, art.info.version):
        raise _bad(where, "the config names another model or version than the annotations")
    layers = [f.digest for f in art.layers] + ([art.chunk_list.digest] if art.chunk_list else [])
    if modelfs.get("type") != "layers" or modelfs.get("diffIds") != layers:
        raise _bad(where, "the config's modelfs.diffIds do not match the layers")
