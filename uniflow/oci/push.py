"""``uniflow oci push NAME VERSION oci://HOST/REPO:TAG``: a registered version as a ModelPack
model artifact (``modelpack``), one layer per file.

The files come from the store verified (``ObjectStore.materialize``: every chunk checked, or a
cached copy hashed whole), and are read once more here to compute each file's sha256 (its
layer digest) together with its BLAKE3, which must again be the registered file digest: so
the digest the registry checks the upload against names exactly the registered bytes. A blob
the repository already holds (a HEAD request) is not uploaded again: a file shared by two
versions, or pushed twice, crosses the network once. The sha256 is kept in the derived cache
(kind ``sha``, keyed by the BLAKE3 file digest, MAC-ed like every entry), so a file whose
blob the registry already holds is not read at all on a later push. The manifest goes last, so a tag never
names an artifact whose blobs are not all there.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import blake3

from .._errors import IntegrityError, RepositoryError, UsageError
from .._records.manifest import Manifest, file_records
from .._storage.fsio import os_reason
from .client import OciClient
from .modelpack import LayerFile, VersionInfo, build_config, build_manifest, layer_media_type
from .ref import OciRef

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository
    from .._types import ProgressFn

__all__ = ["OciPushReport", "push_version"]

_WINDOW = 8 << 20
#: derived-cache kind of a file's sha256, keyed by its BLAKE3 file digest
SHA_KIND = "sha"
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


def _target(ref: OciRef, version: str) -> OciRef:
    if ref.digest is not None:
        raise UsageError(f"{ref}: a push names a tag, not a digest (the digest is the manifest's)")
    if ref.tag is not None:
        return ref
    if not _TAG.match(version):
        raise UsageError(f"{ref}: give a tag (:TAG); version {version!r} is not a valid OCI tag")
    return ref.with_tag(version)


def _hash_file(path: Path, want_b3: str, size: int, where: str) -> str:
    """sha256 of the file at ``path`` (``sha256:...``), after checking its BLAKE3 is ``want_b3``."""
    sha = hashlib.sha256()
    b3 = blake3.blake3(max_threads=blake3.blake3.AUTO)
    seen = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(_WINDOW):
                sha.update(piece)
                b3.update(piece)
                seen += len(piece)
    except OSError as exc:
        raise RepositoryError(f"cannot read {where}: {os_reason(exc)}") from exc
    if seen != size or b3.hexdigest() != want_b3:
        raise IntegrityError(f"{where}: the store's copy does not match its registered digest")
    return "sha256:" + sha.hexdigest()


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


def _known_sha256(repo: Repository, blake3_digest: str) -> str | None:
    """The sha256 an earlier push computed for the file of BLAKE3 digest ``blake3_digest``,
    from the derived cache (MAC-ed under the user's key, so a clone cannot plant one)."""
    derived = repo.index.derived
    raw = derived.get(SHA_KIND, blake3_digest) if derived is not None else None
    return "sha256:" + raw.hex() if raw is not None and len(raw) == 32 else None


def _open_file(path: Path, where: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        try:
            return open(path, "rb")
        except OSError as exc:
            raise RepositoryError(f"cannot read {where}: {os_reason(exc)}") from exc

    return opener


def _send_files(
    repo: Repository, name: str, version: str, m: Manifest, sender: _Sender, progress: ProgressFn | None
) -> list[LayerFile]:
    """Each file of the version as a layer: read verified from the store, hashed, sent
    unless the registry holds it already."""
    context = f"model {name!r} version {version!r}"
    records = sorted(file_records(m), key=lambda r: r[0])
    total = sum(rec.size for _, rec, _ in records)
    done = 0
    layers = []
    for rel, rec, mode in records:
        where = f"{context} file {rel!r}"
        known = _known_sha256(repo, rec.digest)
        if known is None or not sender.has(known):
            src = repo.store.materialize(rec, where)
            known = _hash_file(src, rec.digest, rec.size, where)
            if repo.index.derived is not None:
                repo.index.derived.put(SHA_KIND, rec.digest, bytes.fromhex(known.removeprefix("sha256:")))
            sender.send(known, rec.size, _open_file(src, where))
        layers.append(LayerFile(rel, rec.size, mode, rec.digest, known, layer_media_type(rel)))
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
    sender = _Sender(OciClient(ref, plain_http=plain_http))
    try:
        layers = _send_files(repo, name, version, m, sender, progress)
        config = build_config(info, layers)
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        sender.send(config_digest, len(config), lambda: io.BytesIO(config))
        body = build_manifest(info, layers, config, config_digest)
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
