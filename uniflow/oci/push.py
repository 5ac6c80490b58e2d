"""``uniflow oci push NAME VERSION oci://HOST/REPO:TAG``: a registered version as a ModelPack
model artifact (``modelpack``), one layer per file.

The files come from the store verified (``ObjectStore.materialize``: every chunk checked, or a
cached copy checked by its stamp or against its chunks), and are read once more here to
compute each file's sha256 (its layer digest) and BLAKE3 (``b3sum``) in one pass
(``modelpack.LayerHashes``), which must again give the registered file digest: the BLAKE3
itself in manifest formats 1 and 2, the Merkle identity of the file's chunk ranges in format 3.
So the digest the registry checks the upload against names exactly the registered bytes.
A blob the repository already holds (a HEAD request) is not uploaded again: a file shared by
two versions, or pushed twice, crosses the network once. The sha256 and BLAKE3 are kept in the
derived cache (kind ``sha``, keyed by the registered file digest, MAC-ed like every entry),
so a file whose blob the registry already holds is not read at all on a later push. The
manifest's layout is chosen before any upload: the chunk sizes of a format-3 version ride in
its layer annotations while the manifest stays within ``modelpack.MAX_INLINE_MANIFEST_BYTES``,
else they go into one chunk-list blob the manifest references (layout 3), so a version of
any size fits (one of too many files or chunks even so is refused before any upload). The
chunk list goes before the config, and the manifest last, so a tag never names an artifact
whose blobs are not all there.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._errors import IntegrityError, RepositoryError, UsageError
from .._records.manifest import MERKLE_FORMAT, Manifest, file_records
from .._storage.chunking import FileRecord
from .._storage.fsio import os_reason
from .client import OciClient
from .modelpack import (
    LayerFile,
    LayerHashes,
    VersionInfo,
    build_config,
    build_manifest,
    layer_media_type,
    plan_chunk_list,
)
from .ref import OciRef

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository
    from .._types import ProgressFn

__all__ = ["OciPushReport", "push_version"]

_WINDOW = 8 << 20
#: derived-cache kind of a file's sha256 and BLAKE3 (32 bytes each), keyed by its file digest
SHA_KIND = "sha"
#: a placeholder of a sha256 or BLAKE3 digest not computed yet (same length as a real one)
_UNKNOWN = "0" * 64
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class OciPushReport:
    """What a push did: ``uploaded`` blobs (files and the config) crossed the network,
    ``reused`` were already in the repository."""

    ref: str
    name: str
    version: str
    stage: str
    manifest_digest: str
    content_digest: str
    files: int
    size: int
    uploaded: int
    reused: int
    bytes_uploaded: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _target(ref: OciRef, version: str) -> OciRef:
    if ref.digest is not None:
        raise UsageError(f"{ref}: a push names a tag, not a digest (the digest is the manifest's)")
    if ref.tag is not None:
        return ref
    if not _TAG.match(version):
        raise UsageError(f"{ref}: give a tag (:TAG); version {version!r} is not a valid OCI tag")
    return ref.with_tag(version)


def _hash_file(path: Path, rec: FileRecord, merkle: bool, where: str) -> tuple[str, str]:
    """The sha256 (``sha256:...``) and BLAKE3 of the file at ``path``, after checking it holds
    ``rec``'s bytes: its BLAKE3 is ``rec.digest``, or (``merkle``, manifest format 3) the
    Merkle identity of its ranges cut at ``rec``'s chunk sizes is."""
    hashes = LayerHashes([c.size for c in rec.chunks] if merkle else None, threads=True)
    try:
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(_WINDOW):
                hashes.update(piece)
    except OSError as exc:
        raise RepositoryError(f"cannot read {where}: {os_reason(exc)}") from exc
    got = hashes.identity() if merkle else hashes.b3sum()
    if hashes.size != rec.size or got != rec.digest:
        raise IntegrityError(f"{where}: the store's copy does not match its registered digest")
    return hashes.sha256(), hashes.b3sum()


@dataclass
class _Sender:
    """Blobs sent to one repository, counted: a blob the registry holds is not sent again."""

    client: OciClient
    uploaded: int = 0
    reused: int = 0
    sent: int = 0

    def has(self, digest: str) -> bool:
        """Whether the repository holds ``digest`` (then it counts as reused)."""
        if self.client.blob_exists(digest):
            self.reused += 1
            return True
        return False

    def send(self, digest: str, size: int, open_data: Callable[[], IO[bytes]]) -> None:
        """Upload a blob unless the repository holds it."""
        if self.has(digest):
            return
        with open_data() as data:
            self.client.upload(digest, size, data)
        self.uploaded += 1
        self.sent += size


def _known_hashes(repo: Repository, file_digest: str, merkle: bool) -> tuple[str, str] | None:
    """The sha256 and BLAKE3 an earlier push computed for the file of digest ``file_digest``,
    from the derived cache (MAC-ed under the user's key, so a clone cannot plant one). An
    entry of 32 bytes (a sha256 alone, as pushes before manifest format 3 wrote it) serves a
    file of format 1 or 2, whose digest is its BLAKE3."""
    derived = repo.index.derived
    raw = derived.get(SHA_KIND, file_digest) if derived is not None else None
    if raw is not None and len(raw) == 64:
        return "sha256:" + raw[:32].hex(), raw[32:].hex()
    if raw is not None and len(raw) == 32 and not merkle:
        return "sha256:" + raw.hex(), file_digest
    return None


def _open_file(path: Path, where: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        try:
            return open(path, "rb")
        except OSError as exc:
            raise RepositoryError(f"cannot read {where}: {os_reason(exc)}") from exc

    return opener


def _planned(m: Manifest) -> list[tuple[LayerFile, FileRecord]]:
    """Each file of ``m`` as its layer will be, in path order, its sha256 and BLAKE3 not known
    yet (placeholders of their length); with its store record."""
    merkle = m.format >= MERKLE_FORMAT
    out = []
    for rel, rec, mode in sorted(file_records(m), key=lambda r: r[0]):
        sizes = tuple(c.size for c in rec.chunks) if merkle else None
        identity = rec.digest if merkle else None
        layer = LayerFile(
            rel, rec.size, mode, _UNKNOWN, "sha256:" + _UNKNOWN, layer_media_type(rel), identity, sizes
        )
        out.append((layer, rec))
    return out


def _chunk_list(info: VersionInfo, m: Manifest) -> bytes | None:
    """The chunk list the version's manifest needs (``modelpack.plan_chunk_list``: None when
    the chunk sizes fit the layer annotations), decided before any upload from the layers with
    placeholder digests, which have the real ones' length; a version that fits no manifest is
    refused here."""
    return plan_chunk_list(info, [layer for layer, _ in _planned(m)])


def _send_files(
    repo: Repository, name: str, version: str, m: Manifest, sender: _Sender, progress: ProgressFn | None
) -> list[LayerFile]:
    """Each file of the version as a layer: read verified from the store, hashed, sent
    unless the registry holds it already."""
    context = f"model {name!r} version {version!r}"
    merkle = m.format >= MERKLE_FORMAT
    planned = _planned(m)
    total = sum(rec.size for _, rec in planned)
    done = 0
    layers = []
    for layer, rec in planned:
        where = f"{context} file {layer.path!r}"
        known = _known_hashes(repo, rec.digest, merkle)
        if known is None or not sender.has(known[0]):
            src = repo.store.materialize(rec, where)
            known = _hash_file(src, rec, merkle, where)
            if repo.index.derived is not None:
                payload = bytes.fromhex(known[0].removeprefix("sha256:") + known[1])
                repo.index.derived.put(SHA_KIND, rec.digest, payload)
            sender.send(known[0], rec.size, _open_file(src, where))
        layers.append(replace(layer, digest=known[0], blake3=known[1]))
        done += rec.size
        if progress is not None:
            progress(done, total)
    return layers


def _info(m: Manifest, stage: str, signer: str | None) -> VersionInfo:
    return VersionInfo(
        name=m.name,
        version=m.version,
        content_digest=m.content_digest,
        created_at=m.created_at,
        stage=stage,
        framework=m.framework,
        serializer=m.serializer,
        code_commit=str(m.lineage.get("code_commit") or ""),
        author=m.author,
        description=m.description,
        metrics=dict(m.metrics),
        signer=signer,
    )


def push_version(
    repo: Repository,
    name: str,
    version: str,
    target: OciRef,
    *,
    plain_http: bool = False,
    progress: ProgressFn | None = None,
    signer: str | None = None,
) -> OciPushReport:
    """Push version ``version`` of ``name`` to ``target`` (a tag; without one, the version is
    the tag) as a ModelPack artifact; blobs the repository holds are not uploaded again.
    ``signer``: the principal the version tag's signature verified for (the caller verifies
    it; never an unverified claim), written as the ``org.uniflow.signer`` annotation."""
    version, state = repo.resolve(name, version, None)
    ref = _target(target, version)
    m = repo.manifest(name, version)
    stage = state.stage(version)
    info = _info(m, stage, signer)
    chunk_list = _chunk_list(info, m)
    sender = _Sender(OciClient(ref, plain_http=plain_http))
    try:
        layers = _send_files(repo, name, version, m, sender, progress)
        if chunk_list is not None:
            blob = chunk_list
            sender.send(_sha256(blob), len(blob), lambda: io.BytesIO(blob))
        config = build_config(info, layers, chunk_list)
        config_digest = _sha256(config)
        sender.send(config_digest, len(config), lambda: io.BytesIO(config))
        body = build_manifest(info, layers, config, config_digest, chunk_list)
        # last: the tag never names an artifact with a blob missing
        manifest_digest = sender.client.put_manifest(body, str(ref.tag))
    finally:
        sender.client.close()
    return OciPushReport(
        ref=str(ref),
        name=name,
        version=version,
        stage=stage,
        manifest_digest=manifest_digest,
        content_digest=m.content_digest,
        files=len(layers),
        size=sum(layer.size for layer in layers),
        uploaded=sender.uploaded,
        reused=sender.reused,
        bytes_uploaded=sender.sent,
    )
