"""``uniflow oci pull oci://HOST/REPO:TAG DEST``: a version pushed by ``uniflow oci push``,
verified, into a new directory.

Verification, in order: the manifest passes the gate (``modelpack.parse_manifest``: a
ModelPack model artifact uniflow pushed, whose content digest annotation matches its files'
paths, modes and file digest annotations) and, when the reference is a digest, hashes to it;
the config blob hashes to its descriptor and agrees with the manifest; in layout 3, the chunk
list (its size bounded by the gate) is read, hashed and decoded against the layers
(``modelpack.attach_chunk_list``), all before DEST is created; each layer is streamed
into its file while its sha256 (the registry's digest), its BLAKE3 and, for a file of a
format-3 version, the Merkle identity of its chunk ranges (the registered file digest; each
range hashed as it arrives, ``modelpack.LayerHashes``) are computed, and a layer that is
longer than its descriptor says is cut off at once. Only when every file matches all its
digests is the pull complete; then the version's content digest, computed from the files'
registered digests so checked, is the one the artifact announces (and the one the caller
expects, when given).

Files are written below ``dest``, a directory this call creates (it must not exist), each
opened ``O_CREAT|O_EXCL|O_NOFOLLOW`` relative to a directory descriptor opened without
following symlinks (``_storage.safefs.DirTree``), modes 0644/0755 only, fsynced; on any
failure ``dest`` is removed again. The command line pulls into a staging directory beside
DEST and renames it into place, so DEST never holds a partial pull.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import IntegrityError, InvalidPathError, RepositoryError, UsageError
from .._records.manifest import content_digest as compute_content_digest
from .._storage.fsio import fsync_dir, os_reason
from .._storage.safefs import DirTree, open_root
from .client import OciClient
from .modelpack import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Artifact,
    BlobRef,
    LayerFile,
    LayerHashes,
    attach_chunk_list,
    check_config,
    parse_manifest,
)
from .ref import OciRef

if TYPE_CHECKING:  # pragma: no cover
    from .._types import ProgressFn

__all__ = ["OciPullReport", "PulledFile", "pull_artifact"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class PulledFile:
    """A file written by a pull: ``digest`` is its registered file digest (its BLAKE3 in
    manifest formats 1 and 2, the Merkle identity of its chunks in format 3), ``sha256`` its
    layer's digest, ``b3sum`` the BLAKE3 of its bytes."""

    path: str
    size: int
    mode: int
    digest: str
    sha256: str
    b3sum: str


@dataclass(frozen=True)
class OciPullReport:
    """What a pull wrote, and what the artifact says of the version it holds."""

    ref: str
    manifest_digest: str
    name: str
    version: str
    stage: str
    content_digest: str
    framework: str
    serializer: str
    code_commit: str
    metrics: dict[str, Any]
    signer: str | None
    size: int
    path: str
    files: tuple[PulledFile, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [asdict(f) for f in self.files]
        return d


def _expect(art: Artifact, where: str, name: str | None, version: str | None, digest: str | None) -> None:
    """Refuse an artifact of another model, version or content than the caller expects."""
    info = art.info
    if name is not None and info.name != name:
        raise UsageError(f"{where} holds model {info.name!r}, not {name!r}")
    if version is not None and info.version.lstrip("v") != version.lstrip("v"):
        raise UsageError(f"{where} holds {info.name} {info.version}, not version {version!r}")
    if digest is not None and info.content_digest != digest.removeprefix("blake3:"):
        raise IntegrityError(f"{where} holds content blake3:{info.content_digest}, not the expected {digest}")


def _read_chunk_list(client: OciClient, ref: BlobRef, where: str) -> bytes:
    """The chunk list's bytes, at most its declared size (checked by the gate against what
    its files can need): more bytes stop the read at once."""
    out = bytearray()
    with client.open_blob(ref.digest) as resp:
        for piece in client.chunks(resp, "read the chunk list from"):
            if len(out) + len(piece) > ref.size:
                raise IntegrityError(
                    f"{where}: the registry sent more than the chunk list's {ref.size} bytes"
                )
            out += piece
    return bytes(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # bounded: each write makes progress or raises
        view = view[os.write(fd, view) :]


def _fetch_layer(client: OciClient, layer: LayerFile, fd: int, where: str) -> None:
    """Stream ``layer`` into ``fd``, checking its length, sha256, BLAKE3 and (format 3) the
    Merkle identity of its chunk ranges."""
    hashes = LayerHashes(layer.chunks)
    with client.open_blob(layer.digest) as resp:
        for piece in client.chunks(resp, f"read {layer.path!r} from"):
            if hashes.size + len(piece) > layer.size:
                raise IntegrityError(f"{where}: the registry sent more than the layer's {layer.size} bytes")
            hashes.update(piece)
            _write_all(fd, piece)
    if hashes.size != layer.size or hashes.sha256() != layer.digest:
        raise IntegrityError(
            f"{where}: the bytes the registry sent do not match the layer digest {layer.digest}"
        )
    if hashes.b3sum() != layer.blake3:
        told = "registered BLAKE3 digest" if layer.identity is None else "BLAKE3 digest annotation"
        raise IntegrityError(f"{where}: the file does not match its {told} {layer.blake3}")
    if layer.identity is not None and hashes.identity() != layer.identity:
        raise IntegrityError(
            f"{where}: the file does not match its registered digest {layer.identity} "
            "(the Merkle identity of its chunks, cut at the sizes the artifact gives)"
        )
    os.fsync(fd)


def _download(client: OciClient, art: Artifact, dest: Path, progress: ProgressFn | None) -> None:
    def refuse(display: str, mode: int) -> None:  # noqa: ARG001 (DirTree's refusal callback signature)
        raise InvalidPathError(f"{display} appeared while pulling into {dest}; refusing to write through it")

    total = sum(layer.size for layer in art.layers)
    done = 0
    with DirTree(open_root(dest), str(dest), refuse) as tree:
        for layer in art.layers:
            *dirs, leaf = layer.path.split("/")
            mode = 0o755 if layer.mode & 0o111 else 0o644
            fd = os.open(leaf, _FLAGS, mode, dir_fd=tree.open(tuple(dirs)))
            try:
                _fetch_layer(client, layer, fd, f"{client.ref} file {layer.path!r}")
            finally:
                os.close(fd)
            done += layer.size
            if progress is not None:
                progress(done, total)
        for dfd in tree.fds():
            os.fsync(dfd)


def pull_artifact(
    source: OciRef,
    dest: Path,
    *,
    plain_http: bool = False,
    name: str | None = None,
    version: str | None = None,
    content_digest: str | None = None,
    progress: ProgressFn | None = None,
) -> OciPullReport:
    """Pull the version at ``source`` into the new directory ``dest``, verified (see the module
    docstring); ``name``, ``version`` and ``content_digest`` (BLAKE3 hex, as ``uniflow models
    show`` prints it) are checked against the artifact when given."""
    where = str(source)
    if source.reference is None:
        raise UsageError(f"{where}: give a tag (:TAG) or a digest (@sha256:...) to pull")
    client = OciClient(source, plain_http=plain_http)
    try:
        body = client.get_manifest(source.reference, MAX_MANIFEST_BYTES)
        manifest_digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if source.digest is not None and manifest_digest != source.digest:
            raise IntegrityError(f"{where}: the manifest the registry sent has digest {manifest_digest}")
        art = parse_manifest(body, where)
        _expect(art, where, name, version, content_digest)
        check_config(client.read_blob(art.config_digest, MAX_CONFIG_BYTES), art, where)
        if art.chunk_list is not None:
            art = attach_chunk_list(art, _read_chunk_list(client, art.chunk_list, where), where)
        try:
            os.mkdir(dest, 0o755)
        except FileExistsError:
            raise InvalidPathError(f"{dest} already exists") from None
        except OSError as exc:
            raise InvalidPathError(f"cannot create {dest}: {os_reason(exc)}") from exc
        try:
            _download(client, art, dest, progress)
        except OSError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise RepositoryError(f"cannot write {where} to {dest}: {os_reason(exc)}") from exc
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    finally:
        client.close()
    fsync_dir(dest.parent)
    files = tuple(PulledFile(f.path, f.size, f.mode, f.file_digest, f.digest, f.blake3) for f in art.layers)
    rows = [{"path": f.path, "mode": f.mode, "digest": f.digest} for f in files]
    if compute_content_digest(rows) != art.info.content_digest:  # the gate checked it: defence in depth
        shutil.rmtree(dest, ignore_errors=True)
        raise IntegrityError(f"{where}: the pulled files do not give the announced content digest")
    info = art.info
    return OciPullReport(
        ref=where,
        manifest_digest=manifest_digest,
        name=info.name,
        version=info.version,
        stage=info.stage,
        content_digest=info.content_digest,
        framework=info.framework,
        serializer=info.serializer,
        code_commit=info.code_commit,
        metrics=dict(info.metrics),
        signer=info.signer,
        size=sum(f.size for f in files),
        path=os.fspath(dest),
        files=files,
    )
