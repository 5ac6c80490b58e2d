"""The kinds of blob remote, the protocol they share and how a client for one is opened.

Every blob remote holds the layout of the local store::

    <url>/uniflow-remote.json  the layout marker, {"format": 3} (``remotepacks``)
    <url>/packs/<name>.pack    packs and their indexes (``.idx``), written and read by
                               ``remotepacks`` through :class:`PackFiles`
    <url>/objects/ab/cdef…     one chunk, named by the BLAKE3-256 hex digest of its bytes
                               (pushed before packs on remotes, or with ``UNIFLOW_BLOB_LAYOUT=loose``)
    <url>/tmp/.uniflow-up-…    uploads in flight (directory and non-object-store remotes),
                               named ``.uniflow-up-<16 hex>.<32 hex>``; nothing else there is ours

:class:`LocalRemote` is a directory (local disk, NFS, SMB): each chunk is written to an
unnamed or temporary file, fsynced and linked into ``objects/`` (first writer wins), so
nothing partial is ever visible, and only abandoned uploads named like ours are ever
removed from its ``tmp``. :class:`FsspecRemote` is any fsspec filesystem: object stores
(S3, GCS, Azure) take the final key in one PUT, which they expose only once complete;
other filesystems upload to ``tmp/`` and rename. :class:`MemoryRemote` (``memory://NAME``)
keeps chunks in this process, for tests. Verification and retries are the callers'
(``blobs``). fsspec is imported only by :func:`open_remote` for any other URL.

The protocol (:class:`BlobRemote`) is three calls on whole chunks (list, put, get) plus two
optional capabilities, as an httpx transport is one call plus what a transport may offer:
:meth:`BlobRemote.pack_files` returns a :class:`PackFiles` (files listed, read by byte range,
packs written whole, index last) for a directory or fsspec remote, None for ``memory://``;
a :class:`PackFiles` may offer :meth:`PackFiles.pack_streams`, a :class:`PackStreams` (S3:
a pack sent as a stream, in one PUT or a multipart upload, ``packstream``);
:meth:`BlobRemote.local_files` returns a :class:`LocalFiles` when the chunks are regular
files on this machine (a directory remote), so a transfer can verify a chunk through its
descriptor and copy it in the kernel; None otherwise. Callers ask for the capability, never
for a class.

Every S3 call is bounded: botocore gets the remote's connect and read timeouts
(``connect_timeout``/``read_timeout`` in its ``[remotes.NAME]`` table, else
:data:`UNIFLOW_BLOB_CONNECT_TIMEOUT`/:data:`UNIFLOW_BLOB_READ_TIMEOUT` from the environment,
which override the file, else 10 s and 60 s), and neither botocore nor s3fs retries anything:
one request per attempt, so ``blobs`` alone decides what is retried and how often.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._errors import IntegrityError, RemoteError, UsageError
from .._naming import validate_digest
from .._records.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    RemoteSpec,
    env_seconds,
)
from .._storage.fsio import StagedFile, fsync_dir, stage_copy, write_immutable
from .._storage.ingest import read_full
from .._storage.packs import PackSet
from .._storage.safefs import NotRegularFile, first_link, open_regular

__all__ = [
    "CONNECT_TIMEOUT_ENV",
    "READ_TIMEOUT_ENV",
    "TMP_PREFIX",
    "BlobRemote",
    "FsspecRemote",
    "LocalFiles",
    "LocalRemote",
    "MARKER",
    "MAX_PACK_FILES",
    "PackFiles",
    "PackStreams",
    "RangeInto",
    "MEMORY_SCHEME",
    "MemoryRemote",
    "S3Streams",
    "Timeouts",
    "describe",
    "is_local",
    "open_remote",
    "timeouts_of",
]

#: environment overrides of every blob remote's timeouts, in seconds (e.g. for CI)
CONNECT_TIMEOUT_ENV = "UNIFLOW_BLOB_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "UNIFLOW_BLOB_READ_TIMEOUT"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: uploads in flight: ``<url>/tmp/.uniflow-up-<first 16 hex of the chunk name>.<uuid4 hex>``
TMP_PREFIX = ".uniflow-up-"
#: the remote's layout marker (``remotepacks``), at its root
MARKER = "uniflow-remote.json"
#: names in ``packs/`` listed before a listing is refused as unbounded
MAX_PACK_FILES = 1 << 17
_TMP_NAME = re.compile(r"\.uniflow-up-[0-9a-f]{16}\.[0-9a-f]{32}")
# Object stores expose an object only once its single PUT completes: no temporary name needed.
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}


class LocalFiles(Protocol):
    """The optional capability of a blob remote whose chunks are regular files on this
    machine (:meth:`BlobRemote.local_files`): each chunk is read and verified through its
    own descriptor and copied in the kernel (``copy_file_range``), not through memory."""

    root: Path

    def open_chunk(self, digest: str) -> int | None:
        """A read-only descriptor of chunk ``digest``'s file; None if the remote lacks it;
        :class:`IntegrityError` for a name that is no regular file (never followed or read)."""
        ...

    def put_copy(self, digest: str, data: bytes | memoryview, src: tuple[int, int]) -> bool:
        """Store chunk ``digest`` (``data``, verified by the caller) unless it is here, copied
        in the kernel from ``src`` (``(fd, offset)`` holding the same bytes). True if this
        call created it."""
        ...

    def discard(self, digest: str) -> None:
        """Remove chunk ``digest``, which this process just created (:meth:`put_copy` said so)."""
        ...

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove uploads abandoned by a killed push more than ``older_than`` seconds ago."""
        ...

    def stage_pack(self, name: str, src: int, size: int, verify: Callable[[int], None]) -> StagedFile:
        """Pack ``name`` copied in the kernel from the descriptor ``src`` (``size`` bytes),
        ``verify(fd)`` run on the copy, fsynced: not visible until published, then
        :meth:`put_index`; :meth:`sync_packs` once all are."""
        ...

    def put_index(self, name: str, index: bytes) -> None:
        """Store the index of pack ``name`` (published first): the pack becomes visible."""
        ...

    def sync_packs(self) -> None:
        """Make the names of the packs and indexes stored durable (fsync ``packs/``)."""
        ...


class BlobRemote(Protocol):
    """What the sharing layer needs from a remote holding chunks: whole chunks listed, put
    and got by digest (the caller verifies every byte), and the optional capability
    :meth:`local_files`."""

    name: str
    url: str

    def list_digests(self) -> set[str]: ...

    def put(self, digest: str, data: bytes) -> object: ...

    def get(self, digest: str) -> bytes | None: ...

    def local_files(self) -> LocalFiles | None:
        """The chunks as files on this machine (:class:`LocalFiles`), or None: whole chunks only."""
        ...

    def pack_files(self) -> PackFiles | None:
        """The remote's ``packs/`` and layout marker (:class:`PackFiles`), or None: loose chunks only."""
        ...


class PackFiles(Protocol):
    """The optional capability of a blob remote that holds packs (``remotepacks``): files
    under its root named by a relative path (``packs/<name>.pack``, ``packs/<name>.idx``,
    :data:`MARKER`), listed, read by byte range and written whole. Nothing here is verified:
    ``remotepacks`` validates every index and hashes every chunk."""

    def pack_listing(self) -> dict[str, int]:
        """Every file name in ``packs/`` with its size (at most ``limit`` names: more is a
        :class:`RemoteError`); empty when there is no ``packs/``."""
        ...

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file ``rel`` (fewer if it is shorter);
        ``FileNotFoundError`` if it is absent."""
        ...

    def read_small(self, rel: str, limit: int) -> bytes | None:
        """The whole file ``rel``, None if absent; at most ``limit + 1`` bytes are read."""
        ...

    def put_pack(self, name: str, data: bytes | bytearray | memoryview, index: bytes) -> None:
        """Store pack ``name`` (``data``, complete) then its index: nothing partial is ever
        visible, and the index, which makes the pack visible, comes last."""
        ...

    def put_marker(self, data: bytes) -> None:
        """Write the layout marker (:data:`MARKER`) unless one is there."""
        ...

    def pack_streams(self) -> PackStreams | None:
        """The remote's streamed uploads (:class:`PackStreams`: an object store with multipart
        uploads), or None: packs are written whole (:meth:`put_pack`)."""
        ...


class PackStreams(Protocol):
    """The optional capability of a blob remote that takes a pack as a stream
    (``packstream``): a body (a seekable binary file, which the client may read more than
    once) sent in one PUT, or as the parts of a multipart upload, which is visible only once
    completed and leaves nothing once aborted. ``rel`` is a path below the remote's root.
    Nothing here is retried or verified: ``packstream`` and its bodies do both."""

    def put_stream(self, rel: str, body: io.IOBase) -> None:
        """``body`` as the object ``rel`` (one PUT: visible only once complete)."""
        ...

    def start_upload(self, rel: str) -> str:
        """Start a multipart upload of the object ``rel``; its upload id."""
        ...

    def put_part(self, rel: str, upload: str, number: int, body: io.IOBase) -> str:
        """Upload part ``number`` (from 1) of ``upload``; its ETag."""
        ...

    def complete_upload(self, rel: str, upload: str, etags: list[str]) -> None:
        """Complete ``upload`` of the parts whose ETags are ``etags`` (part 1 first): ``rel``
        appears."""
        ...

    def abort_upload(self, rel: str, upload: str) -> None:
        """Abort ``upload``: its parts are discarded, no object appears."""
        ...

    def stale_uploads(self, prefix: str, older_than: float) -> list[tuple[str, str]]:
        """``(rel, upload id)`` of the uploads under ``prefix`` started more than
        ``older_than`` seconds ago and neither completed nor aborted (one listing page)."""
        ...


@runtime_checkable
class RangeInto(Protocol):
    """The optional capability of a :class:`PackFiles` on this machine: a byte range read
    into the caller's buffer (no fresh allocation, no copy of what was read)."""

    def read_range_into(self, rel: str, start: int, view: memoryview) -> int:
        """Read the file ``rel`` from ``start`` into ``view`` until it is full or the file
        ends; how many bytes were read. ``FileNotFoundError`` if it is absent."""
        ...


@dataclass(frozen=True)
class Timeouts:
    """Seconds a blob remote's connection may take to open, and any read of its answer."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT


def timeouts_of(spec: RemoteSpec) -> Timeouts:
    """The timeouts of ``spec``'s calls: the environment's, else its config's, else the defaults."""
    connect = env_seconds(CONNECT_TIMEOUT_ENV) or spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    read = env_seconds(READ_TIMEOUT_ENV) or spec.read_timeout or DEFAULT_READ_TIMEOUT
    return Timeouts(connect, read)


def describe(remote: BlobRemote) -> str:
    """``blob remote 'NAME' (URL)``, with ``at ENDPOINT`` when one was given (S3-compatible)."""
    endpoint = getattr(remote, "endpoint", None)
    at = f" at {endpoint}" if endpoint else ""
    return f"blob remote {remote.name!r} ({remote.url}{at})"


def _tmp_name(digest: str) -> str:
    """The temporary name of an upload of chunk ``digest`` (see :data:`TMP_PREFIX`)."""
    return f"{TMP_PREFIX}{digest[:16]}.{uuid.uuid4().hex}"


def is_local(url: str) -> bool:
    """True for a directory URL (a path, or ``file://``), not a scheme or a chained fsspec URL."""
    return url.startswith("file://") or "://" not in url and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*::", url)


class LocalRemote:
    """A blob remote in a directory (local disk, NFS, SMB mount): plain os calls, fsynced."""

    def __init__(self, name: str, url: str, root: Path) -> None:
        self.name = name
        self.url = url
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"  # shared with anybody: only .uniflow-up-* names are ours
        self._checked: set[Path] = set()  # directories seen to be real, with none but real above
        self._packs: PackSet | None = None  # read on first need: a uniflow store's packs/

    def _real_dir(self, d: Path) -> None:
        """Create the directory ``d`` below the root if need be, and refuse it if it or one
        between it and the root is a symlink or no directory: files are only ever created in
        the remote's own directories (its root may be reached through links: the user chose
        it)."""
        if d in self._checked:
            return
        base = self.root.resolve()
        real = base / d.relative_to(self.root)
        for again in (False, True):  # before creating anything, and once it exists
            bad = first_link(base, real)
            if bad is not None:
                what = "a symlink" if bad.is_symlink() else "not a directory"
                raise RemoteError(
                    f"{bad} in blob remote {self.name!r} ({self.url}) is {what}: uniflow never "
                    "writes through links in a blob remote; remove it"
                )
            if not again:
                real.mkdir(parents=True, exist_ok=True)
        self._checked.add(d)

    def _path(self, digest: str) -> Path:
        validate_digest(digest, "chunk digest")
        return self.objects / digest[:2] / digest[2:]

    def list_digests(self) -> set[str]:
        out: set[str] = set()
        if not self.objects.is_dir():
            return out
        for sub in os.scandir(self.objects):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                digest = sub.name + entry.name
                if _HEX64.match(digest):
                    out.add(digest)
        return out

    def local_files(self) -> LocalRemote:
        """This remote: its chunks are files on this machine."""
        return self

    def pack_files(self) -> LocalRemote:
        """This remote: it holds packs (:class:`PackFiles`)."""
        return self

    def pack_listing(self) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            entries = os.scandir(self.root / "packs")
        except (FileNotFoundError, NotADirectoryError):
            return out
        with entries:
            for entry in entries:
                if len(out) >= MAX_PACK_FILES:
                    raise RemoteError(
                        f"{describe(self)} holds more than {MAX_PACK_FILES} files in packs/: refused"
                    )
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(st.st_mode):  # refused as it would be when read
                        os.close(self._open_file(f"packs/{entry.name}"))
                    out[entry.name] = st.st_size
        return out

    def _open_file(self, rel: str) -> int:
        """``rel`` below the root opened read-only: a regular file, never through a link at
        its last component (:class:`IntegrityError` otherwise), ``FileNotFoundError`` if absent."""
        try:
            fd = open_regular(self.root / rel)
        except NotRegularFile as exc:
            raise IntegrityError(
                f"{rel} on {describe(self)} is a {exc.what}, not a regular file; nothing was read from it"
            ) from None
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(self.root / rel))
        return fd

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        fd = self._open_file(rel)
        try:
            # no larger than the file: a small index read with a large bound allocates little
            want = max(0, min(end, os.fstat(fd).st_size) - start)
            parts: list[bytes] = []
            got = 0
            while got < want:  # bounded: each pread makes progress or ends the loop
                part = os.pread(fd, want - got, start + got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            os.close(fd)

    def read_range_into(self, rel: str, start: int, view: memoryview) -> int:
        fd = self._open_file(rel)
        try:
            return read_full(fd, view, start)
        finally:
            os.close(fd)

    def read_small(self, rel: str, limit: int) -> bytes | None:
        try:
            return self.read_range(rel, 0, limit + 1)
        except FileNotFoundError:
            return None

    def put_pack(self, name: str, data: bytes | bytearray | memoryview, index: bytes) -> None:
        packs = self.root / "packs"
        self._real_dir(packs)
        self._real_dir(self.tmp)
        write_immutable(packs / f"{name}.pack", self.tmp, memoryview(data), _tmp_name(name))
        write_immutable(packs / f"{name}.idx", self.tmp, index, _tmp_name(name))
        fsync_dir(packs)

    def stage_pack(self, name: str, src: int, size: int, verify: Callable[[int], None]) -> StagedFile:
        packs = self.root / "packs"
        self._real_dir(packs)
        self._real_dir(self.tmp)
        return stage_copy(packs / f"{name}.pack", self.tmp, src, size, verify, _tmp_name(name))

    def put_index(self, name: str, index: bytes) -> None:
        write_immutable(self.root / "packs" / f"{name}.idx", self.tmp, index, _tmp_name(name))

    def sync_packs(self) -> None:
        fsync_dir(self.root / "packs")

    def pack_streams(self) -> None:
        """None: a directory takes packs whole, copied in the kernel (:meth:`stage_pack`)."""
        return

    def put_marker(self, data: bytes) -> None:
        self._real_dir(self.tmp)
        root = self.root.resolve()  # the root may be reached through links (the user chose it)
        if write_immutable(root / MARKER, self.tmp, data, _tmp_name("0" * 16)):
            fsync_dir(root)

    def put(self, digest: str, data: bytes | memoryview, src: tuple[int, int] | None = None) -> bool:
        """Store chunk ``digest`` (``data``, verified by the caller) unless it is here; with
        ``src`` (``(fd, offset)`` holding the same bytes) they are copied in the kernel.
        True if this call created it."""
        final = self._path(digest)
        if final.exists():
            return False
        self._real_dir(final.parent)
        self._real_dir(self.tmp)
        created = write_immutable(final, self.tmp, data, _tmp_name(digest), src=src)
        fsync_dir(final.parent)
        return created

    def put_copy(self, digest: str, data: bytes | memoryview, src: tuple[int, int]) -> bool:
        """:meth:`put` with ``src``: the bytes copied in the kernel from that descriptor."""
        return self.put(digest, data, src)

    def discard(self, digest: str) -> None:
        """Remove chunk ``digest``, which this process just created (:meth:`put` said so)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(digest).unlink()

    def open_chunk(self, digest: str) -> int | None:
        """A read-only descriptor of chunk ``digest``'s file; None if the remote lacks it. The
        directory is not ours: a name holding a symlink, FIFO or device is refused (never
        followed, waited on or read) with :class:`IntegrityError`."""
        try:
            return open_regular(self._path(digest))
        except NotRegularFile as exc:
            raise IntegrityError(
                f"chunk {digest[:16]} on blob remote {self.name!r} ({self.url}) is a {exc.what}, "
                "not a regular file; it was not stored"
            ) from None

    def get(self, digest: str) -> bytes | None:
        fd = self.open_chunk(digest)
        if fd is None:
            return self.packed_chunk(digest)
        with open(fd, "rb", buffering=0) as f:  # a regular file: its read ends
            return f.read()

    def packed_chunk(self, digest: str) -> bytes | None:
        """Chunk ``digest`` from the directory's ``packs/`` (the directory is a uniflow chunk
        store of format 3, e.g. a clone's ``.git/uniflow``): every index validated before it is
        used, the bytes checked against the name (``_storage.packs``); None if no pack has it."""
        validate_digest(digest, "chunk digest")
        if self._packs is None:
            self._packs = PackSet(self.root)
        if self._packs.locate(digest) is None:
            return None
        return self._packs.read_chunk(digest)

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove uploads abandoned by a killed push more than ``older_than`` seconds ago:
        regular files in ``<url>/tmp`` named ``.uniflow-up-<16 hex>.<32 hex>``, nothing
        else; a symlink is never followed (a symlinked ``tmp`` is left alone entirely)."""
        try:
            fd = os.open(self.tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return 0  # absent, or not a real directory: nothing of ours is there
        removed = 0
        cutoff = time.time() - older_than
        try:
            for entry in os.scandir(fd):
                if not _TMP_NAME.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        os.unlink(entry.name, dir_fd=fd)
                        removed += 1
                except OSError:
                    continue
        finally:
            os.close(fd)
        return removed


class FsspecRemote:
    """A blob remote behind any fsspec filesystem (S3 through s3fs, GCS, Azure, SFTP ...)."""

    def __init__(
        self,
        name: str,
        url: str,
        fs: Any,
        root: str,
        endpoint: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.endpoint = endpoint  # of an S3-compatible store, named in errors
        self.timeouts = timeouts or Timeouts()  # those the client was built with (S3), named in errors
        self.fs = fs
        self.root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.atomic_put = protocol in _ATOMIC_PUT
        self.s3 = protocol in ("s3", "s3a")
        # s3fs asks for an object's size (a HEAD) before every GET unless told to fetch it in
        # one piece; a chunk (4 MiB at most) always is: one request per chunk, not two.
        self._get_kwargs: dict[str, Any] = {"max_concurrency": 1} if protocol in ("s3", "s3a") else {}

    def _path(self, digest: str) -> str:
        validate_digest(digest, "chunk digest")
        return f"{self.root}/objects/{digest[:2]}/{digest[2:]}"

    def list_digests(self) -> set[str]:
        base = f"{self.root}/objects"
        self.fs.invalidate_cache()
        try:
            paths = self.fs.find(base)
        except FileNotFoundError:
            return set()
        out: set[str] = set()
        for p in paths:
            parts = str(p).rstrip("/").rsplit("/", 2)
            if len(parts) == 3 and _HEX64.match(parts[1] + parts[2]) and len(parts[1]) == 2:
                out.add(parts[1] + parts[2])
        return out

    def put(self, digest: str, data: bytes) -> None:
        final = self._path(digest)
        if self.atomic_put:
            self.fs.pipe_file(final, data)
            return
        tmp = f"{self.root}/tmp/{_tmp_name(digest)}"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, final)

    def get(self, digest: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(digest), **self._get_kwargs))
        except FileNotFoundError:
            return None

    def local_files(self) -> None:
        """None: an fsspec filesystem moves whole chunks only."""
        return

    def pack_files(self) -> FsspecRemote:
        """This remote: it holds packs (:class:`PackFiles`), read by ranged GETs."""
        return self

    def pack_listing(self) -> dict[str, int]:
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(f"{self.root}/packs", detail=True)
        except FileNotFoundError:
            return {}
        if len(entries) > MAX_PACK_FILES:
            raise RemoteError(f"{describe(self)} holds more than {MAX_PACK_FILES} files in packs/: refused")
        out: dict[str, int] = {}
        for e in entries:
            if isinstance(e, dict) and e.get("type") == "file":
                out[str(e.get("name", "")).rstrip("/").rsplit("/", 1)[-1]] = int(e.get("size") or 0)
        return out

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        # one ranged GET (s3fs: ``Range: bytes=start-(end-1)``), no HEAD before it
        return bytes(self.fs.cat_file(f"{self.root}/{rel}", start=start, end=end, **self._get_kwargs))

    def read_small(self, rel: str, limit: int) -> bytes | None:
        try:
            return self.read_range(rel, 0, limit + 1)
        except FileNotFoundError:
            return None

    def _put_whole(self, path: str, data: bytes, key: str) -> None:
        """``data`` as the object ``path``: one PUT on an object store (s3fs sends a multipart
        upload above twice its 50 MiB part size), else a temporary name and a rename."""
        if self.atomic_put:
            self.fs.pipe_file(path, data)
            return
        tmp = f"{self.root}/tmp/{_tmp_name(key)}"  # key: hex, named in the temporary name
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def put_pack(self, name: str, data: bytes | bytearray | memoryview, index: bytes) -> None:
        self._put_whole(f"{self.root}/packs/{name}.pack", bytes(data), name)
        self._put_whole(f"{self.root}/packs/{name}.idx", index, name)

    def put_marker(self, data: bytes) -> None:
        if self.read_small(MARKER, 0) is None:
            self._put_whole(f"{self.root}/{MARKER}", data, "0" * 16)

    def pack_streams(self) -> S3Streams | None:
        """The streamed uploads of an S3 remote (:class:`S3Streams`); None for another
        filesystem (packs are written whole)."""
        return S3Streams(self.fs, self.root) if self.s3 else None


class S3Streams:
    """:class:`PackStreams` of an S3 remote: s3fs's client calls (one request each, as every
    S3 call of uniflow: no retry of botocore's or s3fs's own)."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root

    def _where(self, rel: str) -> dict[str, str]:
        bucket, key, _ = self.fs.split_path(f"{self.root}/{rel}")
        return {"Bucket": bucket, "Key": key}

    def put_stream(self, rel: str, body: io.IOBase) -> None:
        self.fs.call_s3("put_object", Body=body, **self._where(rel))

    def start_upload(self, rel: str) -> str:
        return str(self.fs.call_s3("create_multipart_upload", **self._where(rel))["UploadId"])

    def put_part(self, rel: str, upload: str, number: int, body: io.IOBase) -> str:
        out = self.fs.call_s3(
            "upload_part", UploadId=upload, PartNumber=number, Body=body, **self._where(rel)
        )
        return str(out["ETag"])

    def complete_upload(self, rel: str, upload: str, etags: list[str]) -> None:
        parts = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
        self.fs.call_s3(
            "complete_multipart_upload", UploadId=upload, MultipartUpload={"Parts": parts}, **self._where(rel)
        )

    def abort_upload(self, rel: str, upload: str) -> None:
        self.fs.call_s3("abort_multipart_upload", UploadId=upload, **self._where(rel))

    def stale_uploads(self, prefix: str, older_than: float) -> list[tuple[str, str]]:
        where = self._where(prefix)
        out = self.fs.call_s3("list_multipart_uploads", Bucket=where["Bucket"], Prefix=where["Key"])
        base = where["Key"][: len(where["Key"]) - len(prefix)]
        cutoff = time.time() - older_than
        stale = []
        for u in out.get("Uploads") or []:
            started = u.get("Initiated")
            key = str(u.get("Key", ""))
            if key.startswith(base) and started is not None and started.timestamp() <= cutoff:
                stale.append((key[len(base) :], str(u["UploadId"])))
        return stale


#: the URL scheme of :class:`MemoryRemote`: ``memory://NAME``
MEMORY_SCHEME = "memory"


class MemoryRemote:
    """A blob remote in this process's memory, ``memory://NAME``: every client opened on the
    same name shares one dict of chunks (as dulwich's ``MemoryObjectStore`` or httpx's
    ``MockTransport`` stand in for the real thing), so a test pushes from one repository and
    pulls into another without a disk or a network. :attr:`chunks` is that dict: a test may
    damage or remove a chunk in it. Nothing is verified here (the callers verify)."""

    _stores: ClassVar[dict[str, dict[str, bytes]]] = {}  # name -> chunks, shared by every client
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        key = url.removeprefix(f"{MEMORY_SCHEME}://").strip("/")
        if not key:
            raise UsageError(f"blob remote {name!r} ({url}): name the memory store: memory://NAME")
        with MemoryRemote._lock:
            self.chunks: dict[str, bytes] = MemoryRemote._stores.setdefault(key, {})

    @classmethod
    def forget(cls, url: str) -> None:
        """Drop the chunks of ``memory://NAME`` (the next client opened on it starts empty)."""
        with cls._lock:
            cls._stores.pop(url.removeprefix(f"{MEMORY_SCHEME}://").strip("/"), None)

    def list_digests(self) -> set[str]:
        with MemoryRemote._lock:
            return set(self.chunks)

    def put(self, digest: str, data: bytes | memoryview) -> bool:
        validate_digest(digest, "chunk digest")
        with MemoryRemote._lock:
            if digest in self.chunks:
                return False
            self.chunks[digest] = bytes(data)
            return True

    def get(self, digest: str) -> bytes | None:
        validate_digest(digest, "chunk digest")
        with MemoryRemote._lock:
            return self.chunks.get(digest)

    def local_files(self) -> None:
        """None: whole chunks only."""
        return

    def pack_files(self) -> None:
        """None: loose chunks only."""
        return


def open_remote(spec: RemoteSpec, base_dir: Path) -> BlobRemote:
    """A client for ``spec``; relative directory URLs are relative to ``base_dir`` (the repo root)."""
    url = spec.url
    if url.lower().startswith(f"{MEMORY_SCHEME}://"):
        return MemoryRemote(spec.name, url)
    if is_local(url):
        path = Path(url.removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        return LocalRemote(spec.name, url, path)
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RemoteError(
            f"blob remote {spec.name!r} ({url}) needs fsspec: pip install 'uniflow-registry[s3]'"
        ) from exc
    options: dict[str, Any] = dict(spec.options)
    protocol = url.split("://", 1)[0].lower()
    timeouts = timeouts_of(spec)
    s3 = protocol in ("s3", "s3a")
    if s3:
        endpoint = (
            spec.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            options.setdefault("endpoint_url", endpoint)
        options["config_kwargs"] = _bounded_botocore(options.get("config_kwargs"), timeouts)
    elif spec.endpoint_url:
        options.setdefault("endpoint_url", spec.endpoint_url)
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise RemoteError(f"blob remote {spec.name!r} ({url}) needs a filesystem package: {exc}") from exc
    except (ValueError, TypeError, OSError) as exc:
        raise RemoteError(f"cannot open blob remote {spec.name!r} ({url}): {exc}") from exc
    if s3:
        fs.retries = 1  # s3fs's own retry loop (5 attempts, even of errors nothing can fix): off
    endpoint_url = options.get("endpoint_url")
    return FsspecRemote(
        spec.name, url, fs, root, endpoint_url if isinstance(endpoint_url, str) else None, timeouts
    )


def _bounded_botocore(given: object, timeouts: Timeouts) -> dict[str, Any]:
    """botocore's client settings for an S3 remote: ``given`` (``options.config_kwargs``) with
    the remote's timeouts and no retries of botocore's own (one attempt per request)."""
    kwargs: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    kwargs["connect_timeout"] = timeouts.connect
    kwargs["read_timeout"] = timeouts.read
    kwargs["retries"] = {"total_max_attempts": 1, "mode": "standard"}
    return kwargs
