"""A registry read from a Git URL, without a clone: the :class:`Repository` behind
``ModelRegistry(url)``, ``uniflow --repo URL`` and ``uniflow get URL``.

* **Git side**: the per-user bare mirror of the URL (:mod:`uniflow.sharing.mirror`), read
  through :class:`~uniflow._records.git.GitRepo` behind the same gates as a clone (manifests through
  ``VersionIndex``/``_records.manifest.unpack``, lifecycles through ``Lifecycle``).
* **Configuration**: ``.uniflow/config.toml`` of the remote's default branch, bounded and
  validated with ``_records.config.parse_remote_config`` (stages, blob remotes; its limits can only
  tighten the built-in defaults, never raise them), never written.
* **Bytes**: one content-addressed chunk cache shared by every URL
  (``<cache>/store/.uniflow/objects``), filled from the blob remote, each chunk verified on
  arrival (``blobs.download_chunks``, ``_fetch_chunk``) and on every read
  (``_storage.store.read_verified``).

Which blob remote (docs/remote.md, SECURITY.md "Blob remotes named by a Git URL"): the one
given (``blob=`` / ``--blob``, trusted like any argument), else those the remote's config
declares, the default first. The remote's config is hostile data: it may name an object
store (``s3``, ``gs``/``gcs``, ``az``/``abfs``) without ``options`` (an ``endpoint_url`` only
for S3, whose signed requests never carry the secret key); it may name a directory only
when the Git URL itself is on this machine, and only one that resolves (symlinks followed)
inside the directory holding that repository. Anything else is refused with one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _testhooks
from .._errors import (
    ConfigError,
    CorruptChunkError,
    IntegrityError,
    InvalidPathError,
    ReadOnlyRegistryError,
    RemoteError,
    RepositoryError,
    UniflowError,
    UsageError,
)
from .._naming import validate_relpath
from .._records.config import Config, ConfigSource, RemoteSpec, parse_remote_config
from .._records.objcache import cache_home, load_key
from .._repo import Repository
from .._storage.chunking import ChunkRef, FileRecord, chunk_digest
from .._storage.fsio import WRITEBACK_STEP, copy_file, fsync_dir, os_reason, start_writeback
from .._storage.ingest import fd_stamp, read_full
from .._storage.parallel import ThreadBuffers, bounded_map
from .._storage.safefs import DirTree, NotRegularFile, open_regular, open_root
from .._storage.store import ObjectStore, read_verified
from .._types import ProgressFn
from .blobs import (
    JOBS,
    corrupt_download,
    download_chunks,
    get_chunk,
    get_remote_spec,
    list_remotes,
    retry_transient_on,
    store_file_chunk,
)
from .blobstore import is_local, open_remote
from .giturl import GitUrl, parse_git_url
from .mirror import CONFIG_PATH, Mirror, MirrorState, sync_state
from .remotepacks import RemotePacks, Span, open_packs

if TYPE_CHECKING:  # pragma: no cover
    from .blobstore import BlobRemote

__all__ = [
    "OBJECT_STORES",
    "RemoteSource",
    "UrlBlobFetcher",
    "blob_remote_for",
    "store_root",
    "stream_version",
]

#: blob-remote schemes a remote's config may name (object stores; no local or chained URLs)
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
_S3 = ("s3", "s3a")
MAX_CONFIG_BYTES = 1 << 20


def store_root(home: Path) -> Path:
    """The directory whose ``.uniflow/`` holds the chunk cache shared by every URL."""
    return home / "store"


class RemoteSource:
    """A Git URL to read a registry from; :meth:`open` syncs the mirror and builds the
    :class:`Repository` (nothing touches the network before that)."""

    def __init__(
        self, url: str, *, offline: bool = False, blob: str | None = None, history: bool | None = False
    ) -> None:
        parsed = parse_git_url(url)
        if parsed is None:
            raise UsageError(f"{url!r} is not a Git URL or a bare repository")
        if blob is not None and (not isinstance(blob, str) or not blob.strip()):
            raise UsageError(f"invalid blob remote URL {blob!r}")
        self.url: GitUrl = parsed
        self.offline = offline
        self.blob = blob.strip() if blob is not None else None
        # reads will verify signatures (True), or will once a policy exists (None): the sync
        # brings what that needs at once (Mirror.sync)
        self.history = history
        self._synced: tuple[Mirror, MirrorState] | None = None

    @property
    def display(self) -> str:
        return self.url.display

    def home(self) -> Path:
        home = cache_home()
        if home is None:
            raise RepositoryError("no cache directory for registries read by URL: set UNIFLOW_CACHE_DIR")
        return home

    def open(self) -> Repository:
        """Sync the mirror (or read it as it is, offline) and build the read-only Repository."""
        home = self.home()
        mirror = Mirror(self.url, home)
        # begun early by `uniflow get` (begin_sync)
        state = sync_state(mirror, offline=self.offline, history=self.history)
        self._synced = (mirror, state)
        git = mirror.git()
        config = _remote_config(git, state, self.display)
        root = store_root(home)
        uniflow_dir = root / ".uniflow"
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise RepositoryError(f"cannot create the chunk cache {root}: {exc.strerror}") from exc
        fetcher = UrlBlobFetcher(self.url, config, self.blob)
        # a cache: verified on use (a cached copy of a whole file by its recorded stamp)
        store = ObjectStore(uniflow_dir, fetcher=fetcher, durable=False, stamp_key=load_key)
        return Repository(
            git, root=root, config_source=_FixedConfig(uniflow_dir, config, self.display), store=store
        )

    def fetch_policy_history(self) -> None:
        """Bring the default branch's history and policy files into the mirror (online only;
        offline, whatever an earlier verified read fetched is used): what verifying
        signatures on a registry read by URL needs (``Mirror.fetch_history``)."""
        if self._synced is None or self.offline:
            return
        mirror, state = self._synced
        if state.head is not None:
            mirror.fetch_history(state.head)


class _FixedConfig(ConfigSource):
    """The remote's configuration, read once from its default branch; never written."""

    def __init__(self, uniflow_dir: Path, config: Config, url: str) -> None:
        super().__init__(uniflow_dir)
        self._fixed = config
        self._url = url

    def get(self) -> Config:
        return self._fixed

    def reload(self) -> None:
        pass  # the remote's config changes with the next sync, not on reload

    def init(self) -> bool:
        raise ReadOnlyRegistryError(self._url, "init")

    def save(self, raw: dict[str, Any]) -> None:  # noqa: ARG002 (the config source's signature)
        raise ReadOnlyRegistryError(self._url, "change the configuration")


def _remote_config(git: Any, state: MirrorState, url: str) -> Config:
    """``.uniflow/config.toml`` of the remote's default branch, validated (default: none)."""
    if state.head is None or state.config_blob is None:
        return Config()
    where = f"{CONFIG_PATH} of {url}"
    try:
        data = git.read_path(state.head, CONFIG_PATH, MAX_CONFIG_BYTES)
    except KeyError:
        raise RemoteError(f"{where} is missing from the mirror; run again without --offline") from None
    if data is None:
        return Config()
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is {len(data)} bytes, more than {MAX_CONFIG_BYTES}")
    return parse_remote_config(data, where)  # bounded; its [limits] only tighten the defaults


# ---------------------------------------------------------------------- blob remotes
def _scheme(url: str) -> str | None:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else None


def _checked_spec(url: GitUrl, spec: RemoteSpec) -> tuple[RemoteSpec | None, str]:
    """``(spec to use, "")`` if the remote's config may name this blob remote, else
    ``(None, why not)`` (see the module docstring)."""
    target = spec.url
    scheme = _scheme(target)
    if "::" in target:
        return None, "chained fsspec URLs are not allowed from a remote's config"
    if scheme is None or scheme == "file":
        if not url.is_local:
            return None, "a Git repository on another machine may not name a local directory"
        base = url.local_path  # the work tree, or the bare repository itself
        assert base is not None
        raw = Path(target.removeprefix("file://"))
        if str(raw).startswith("~"):
            return None, "'~' paths are not allowed from a remote's config"
        resolved = (raw if raw.is_absolute() else base / raw).resolve()
        fence = base.parent.resolve()
        if resolved != fence and fence not in resolved.parents:
            return None, f"it resolves to {resolved}, outside {fence} (the directory holding the repository)"
        return RemoteSpec(spec.name, str(resolved)), ""
    if scheme not in OBJECT_STORES:
        return None, f"scheme {scheme!r} is not an object store ({', '.join(OBJECT_STORES)})"
    endpoint = spec.endpoint_url if scheme in _S3 else None
    if spec.endpoint_url and scheme not in _S3:
        return None, "endpoint_url is honoured from a remote's config for S3 only"
    return RemoteSpec(spec.name, target, endpoint, {}, *spec.capped_timeouts()), ""


def blob_remote_for(url: GitUrl, config: Config, blob: str | None) -> list[RemoteSpec]:
    """The blob remotes to read chunks from, in order; a one-line :class:`RemoteError` when
    none is known or every declared one is refused."""
    if blob is not None:
        return [RemoteSpec("--blob", blob)]
    default = get_remote_spec(config, None)
    specs = ([default] if default else []) + [
        s for s in list_remotes(config) if default is None or s.name != default.name
    ]
    if not specs:
        raise RemoteError(
            f"no blob remote known for {url.display}: its default branch has no [remotes] in {CONFIG_PATH}; "
            "pass --blob URL (blob= in Python)"
        )
    allowed: list[RemoteSpec] = []
    refusals: list[str] = []
    for spec in specs:
        ok, why = _checked_spec(url, spec)
        if ok is not None:
            allowed.append(ok)
        else:
            refusals.append(f"blob remote {spec.name!r} ({spec.url}) refused: {why}")
    if not allowed:
        raise RemoteError(f"{refusals[0]}; pass --blob URL (blob= in Python) to choose one yourself")
    return allowed


class UrlBlobFetcher:
    """The chunk cache's fetcher for a registry read by URL: missing chunks come from the
    blob remote(s) :func:`blob_remote_for` names, verified before they are stored."""

    def __init__(self, url: GitUrl, config: Config, blob: str | None) -> None:
        self.url = url
        self.config = config
        self.blob = blob
        self._remotes: list[BlobRemote] | None = None
        self._packs: dict[int, RemotePacks | None] = {}  # by id() of a remote in _remotes
        self._lock = threading.Lock()

    def remotes(self) -> list[BlobRemote]:
        """The blob remotes to read from, opened once (by whichever thread needs them first)."""
        with self._lock:
            return self._open_remotes()

    def _open_remotes(self) -> list[BlobRemote]:
        if self._remotes is None:
            out: list[BlobRemote] = []
            for spec in blob_remote_for(self.url, self.config, self.blob):
                remote = open_remote(spec, Path.cwd())
                files = remote.local_files()
                if files is not None and not files.root.is_dir():
                    raise RemoteError(
                        f"blob remote {spec.name!r} ({spec.url}) is unreachable: no such directory"
                    )
                out.append(remote)
            self._remotes = out
        return self._remotes

    def packs_of(self, store: ObjectStore, remote: BlobRemote) -> RemotePacks | None:
        """``remote``'s packs (``remotepacks``), their indexes read once per process."""
        with self._lock:
            key = id(remote)
            if key not in self._packs:
                self._packs[key] = open_packs(remote, store, retry_transient_on(remote))
            return self._packs[key]

    def __call__(self, store: ObjectStore, digests: list[str]) -> None:
        missing = store.missing(digests)
        remotes = self.remotes()
        for remote in remotes:
            if not missing:
                return
            download_chunks(store, remote, missing, skip_missing=True)
            missing = store.missing(missing)
        if missing:
            first = remotes[0]
            raise RemoteError(
                f"blob remote {first.name!r} ({first.url}) lacks {len(missing)} chunk(s) "
                f"(first: {missing[0][:16]}) needed from {self.url.display}; push them from a clone that "
                "has them (`uniflow push --all`)"
            )


# ---------------------------------------------------------------------- writing a version
def stream_version(
    repo: Repository, name: str, version: str, dest: Path, progress: ProgressFn | None = None
) -> None:
    """Write the verified files of ``version`` into the new directory ``dest``, straight from
    the chunk cache and the blob remote (no materialized copy in between).

    Each chunk is verified once where it comes from (``_storage.store.read_verified`` or
    ``chunk_digest``): a cached chunk on read, a downloaded one on arrival, before it is
    kept in the cache (a directory remote's file hard-linked when it can be). A written file
    is not read back: it holds what its verified chunks held, each written whole (its size
    and the bytes written are checked before it is fsynced). Writeback starts as it is
    written (``fsio.start_writeback``), so the closing fsync has little left. A file of
    :data:`WHOLE_COPY_MIN` bytes or more is then kept as the cache's copy of it
    (``ObjectStore.keep_copy``, with its stamp), and a later get of the same file copies that
    copy in the kernel (a reflink where the file system has them) while its stamp is
    unchanged: nothing fetched, nothing hashed. ``dest`` must not exist; it is
    created here and every path below it is re-checked and opened without following
    symlinks (``O_EXCL|O_NOFOLLOW``), modes 0644/0755 only, each file and directory
    fsynced. On failure ``dest`` (created here) is removed again.
    """
    from .._records.manifest import file_records

    context = f"model {name!r} version {version!r}"
    m = repo.manifest(name, version)
    records = file_records(m)
    for rel, _rec, _mode in records:
        validate_relpath(rel)  # the gate checked it; checked again where it becomes a path
    try:
        os.mkdir(dest, 0o755)
    except FileExistsError:
        raise InvalidPathError(f"{dest} already exists") from None
    except OSError as exc:
        raise InvalidPathError(f"cannot create {dest}: {os_reason(exc)}") from exc

    try:
        _write_files(repo.store, records, dest, context, progress, lambda: _other_files(repo, name, version))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # created above: nothing partial stays
        raise
    fsync_dir(dest.parent)


#: files open at once while a version is written (each is closed once its chunks are in)
MAX_OPEN_FILES = 32
#: directory descriptors kept open while a version is written (then fsynced and closed)
MAX_OPEN_DIRS = 64
#: files at least this large are kept whole in the cache once written, and copied from it
#: (a smaller file is a chunk or two: served from the chunk cache as it is)
WHOLE_COPY_MIN = 8 << 20


@dataclass
class _OpenFile:
    """A file of the version being written: its descriptor until it is finished."""

    fd: int
    rel: str
    rec: FileRecord
    left: int  # chunks not yet written
    absent: bool = False  # a chunk no blob remote has: not verified, reported at the end
    written: int = 0  # bytes written, counted in file order
    flushed: int = 0  # bytes whose writeback has been started
    copied: bool = False  # copied whole from the cache's verified copy


@dataclass(frozen=True)
class _ChunkTask:
    """One chunk to write: where in which file, and what to call it in an error."""

    file: _OpenFile
    offset: int
    chunk: ChunkRef
    where: str


@dataclass(frozen=True)
class _SpanTask:
    """Chunks of one file read out of a remote pack by one range read (``span``), each
    written at its offsets in the file once every chunk of the range is verified."""

    packs: RemotePacks
    span: Span
    parts: list[_ChunkTask]


#: how many other versions of the model a get looks through for kept copies of their files
MAX_KEPT_VERSIONS = 64


def _write_files(
    store: ObjectStore,
    records: list[tuple[str, FileRecord, int]],
    dest: Path,
    context: str,
    progress: ProgressFn | None,
    others: Callable[[], list[FileRecord]] = list,
) -> None:
    """Write ``records`` below ``dest`` with a bounded number of descriptors: at most
    :data:`MAX_OPEN_FILES` files and :data:`MAX_OPEN_DIRS` directories open at once, each file
    hashed whole, fsynced and closed as soon as its last chunk is written. ``others()``: the
    large files of other versions, whose kept copies may hold chunks (:class:`_KeptChunks`)."""
    writer = _VersionWriter(store, dest, context, progress, _KeptChunks(store, others))
    try:
        writer.run(records)
    except OSError as exc:
        raise RepositoryError(f"cannot write {context} to {dest}: {os_reason(exc)}") from exc
    finally:
        writer.close()


class _VersionWriter:
    """The state of one :func:`_write_files`: the open files, the chunks no remote has, the
    directory tree. Chunks are written by :func:`bounded_map`'s workers; files are opened,
    checked and closed on the calling thread."""

    def __init__(
        self, store: ObjectStore, dest: Path, context: str, progress: ProgressFn | None, kept: _KeptChunks
    ) -> None:
        self.store = store
        self.kept = kept
        self.dest = dest
        self.context = context
        self.progress = progress
        self.fetcher = store.fetcher if isinstance(store.fetcher, UrlBlobFetcher) else None
        self.files: list[_OpenFile] = []  # open, not yet finished
        self.absent: list[str] = []
        self.tree: DirTree | None = None
        self.total = 0
        self.done = 0

    def _refuse(self, display: str, mode: int) -> None:  # noqa: ARG002 (DirTree's refusal callback signature)
        raise InvalidPathError(
            f"{display} appeared while writing {self.context}; refusing to write through it"
        )

    def run(self, records: list[tuple[str, FileRecord, int]]) -> None:
        self.store.ensure_dirs()
        self.total = sum(r.size for _, r, _ in records)
        self.tree = DirTree(open_root(self.dest), str(self.dest), self._refuse)
        jobs = _jobs(self.fetcher)
        # Files open at once: those with a chunk in flight (at most ``window``) and the one
        # being opened. Leaving the loop early waits for the workers before anything closes.
        window = min(2 * jobs, MAX_OPEN_FILES - 1)
        tasks = self._tasks(records)
        with contextlib.closing(
            bounded_map(self._run, tasks, workers=jobs, window=window, name="uniflow-get")
        ) as done:
            for settled in done:
                for task, missing in settled:
                    self._settled(task, missing)
        if self.absent:
            self._raise_absent()
        for dfd in self.tree.fds():
            os.fsync(dfd)

    def _tasks(self, records: list[tuple[str, FileRecord, int]]) -> Iterator[_ChunkTask | _SpanTask]:
        """Every chunk of ``records`` to write, opening each file just before its first
        (called lazily by :func:`bounded_map` on this thread); a file with no chunk is
        finished at once."""
        for rel, rec, mode in records:
            f = self._open(rel, rec, mode)
            if not rec.chunks:
                self._finish(f)
            if rec.size >= WHOLE_COPY_MIN and self._copy_cached(f):
                continue
            parts, offset = [], 0
            for c in rec.chunks:
                parts.append(_ChunkTask(f, offset, c, f"{self.context} file {rel!r}"))
                offset += c.size
            yield from self._ranged(parts) if rec.size >= WHOLE_COPY_MIN else parts

    def _ranged(self, parts: list[_ChunkTask]) -> list[_ChunkTask | _SpanTask]:
        """The chunks ``parts`` of one large file as tasks in file order: those neither in the
        chunk cache nor in a kept copy and found in the first blob remote's packs grouped
        into coalesced range reads (:meth:`RemotePacks.plan`), written straight into the file
        (the file, kept whole once written, is the cache's copy of them); the others one by
        one (:meth:`_one`)."""
        digests = [p.chunk.digest for p in parts]
        absent = set(self.store.missing(digests)) - self.kept.names()
        wanted: dict[str, list[_ChunkTask]] = {}
        for p in parts:
            if p.chunk.digest in absent:
                wanted.setdefault(p.chunk.digest, []).append(p)
        packs = self._first_packs() if wanted and self.fetcher is not None else None
        if packs is None:
            return list(parts)
        sized = [d for d, ps in wanted.items() if (packs.locate(d) or ("", 0, -1))[2] == ps[0].chunk.size]
        spans, _ = packs.plan(sized)
        tasks: list[tuple[int, _ChunkTask | _SpanTask]] = []
        spanned: set[str] = set()
        for span in spans:
            covered = sorted((p for d, _, _ in span.chunks for p in wanted[d]), key=lambda p: p.offset)
            spanned.update(d for d, _, _ in span.chunks)
            tasks.append((covered[0].offset, _SpanTask(packs, span, covered)))
        tasks.extend((p.offset, p) for p in parts if p.chunk.digest not in spanned)
        return [t for _, t in sorted(tasks, key=lambda t: t[0])]

    def _first_packs(self) -> RemotePacks | None:
        """The packs of the first blob remote (read once), None if it holds none."""
        assert self.fetcher is not None
        remotes = self.fetcher.remotes()
        return self.fetcher.packs_of(self.store, remotes[0]) if remotes else None

    def _open(self, rel: str, rec: FileRecord, mode: int) -> _OpenFile:
        """Create the file ``rel`` (``O_EXCL|O_NOFOLLOW``, read back for its digest)."""
        assert self.tree is not None
        if len(self.tree.fds()) > MAX_OPEN_DIRS:
            for dfd in self.tree.fds():  # entries made so far are durable; reopened as needed
                os.fsync(dfd)
            self.tree.close()
            self.tree = DirTree(open_root(self.dest), str(self.dest), self._refuse)
        *dirs, leaf = rel.split("/")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(leaf, flags, 0o755 if _executable(mode) else 0o644, dir_fd=self.tree.open(tuple(dirs)))
        f = _OpenFile(fd, rel, rec, len(rec.chunks))
        self.files.append(f)
        if rec.size:
            os.ftruncate(fd, rec.size)
        return f

    def _copy_cached(self, f: _OpenFile) -> bool:
        """Write ``f`` as a kernel copy (or reflink) of the cache's verified copy of it, and
        finish it; False when there is none (or it changed while it was copied: then ``f``
        is emptied again, to be written from its chunks)."""
        src = self.store.open_cached(f.rec)
        if src is None:
            return False
        try:
            before = fd_stamp(src)
            copy_file(src, f.fd, f.rec.size, writeback=True)
            copied = fd_stamp(src) == before
        except OSError:
            copied = False
        finally:
            os.close(src)
        if not copied:
            os.ftruncate(f.fd, 0)
            os.ftruncate(f.fd, f.rec.size)
            return False
        f.written = f.flushed = f.rec.size
        f.left, f.copied = 0, True
        self._finish(f)
        if self.progress is not None:
            self.done += f.rec.size
            self.progress(self.done, self.total)
        return True

    def _run(self, task: _ChunkTask | _SpanTask) -> list[tuple[_ChunkTask, str | None]]:
        """Write one task's chunks (a worker thread), each with its digest if no remote has it."""
        if isinstance(task, _ChunkTask):
            return [self._one(task)]
        span = task.span
        at: dict[str, list[_ChunkTask]] = {}
        for p in task.parts:
            at.setdefault(p.chunk.digest, []).append(p)
        for digest, piece in task.packs.verified_chunks(span, _SPAN_BUFFERS, task.parts[0].where):
            for p in at.get(digest, ()):  # written once verified, while it is in the cache
                _pwrite_all(p.file.fd, piece, p.offset)
        return [(p, None) for p in task.parts]

    def _one(self, task: _ChunkTask) -> tuple[_ChunkTask, str | None]:
        """Write one chunk (a worker thread); with its digest if no remote has it."""
        c = task.chunk
        buf = _BUFFERS.get(c.size + 1)  # one byte more: a longer file is caught too
        data: memoryview | bytes | None = _cached_chunk(self.store, c, buf)
        if data is None:
            data = self.kept.read(c, buf)
        if data is None:
            if self.fetcher is None:
                with self.store.open_verified(c.digest, buf, task.where) as chunk:  # the store's own error
                    _pwrite_all(task.file.fd, chunk.data, task.offset)
                return task, None
            data = _fetch_chunk(self.store, self.fetcher, c, buf, task.where)
            if data is None:
                return task, c.digest
        _pwrite_all(task.file.fd, data, task.offset)
        return task, None

    def _settled(self, task: _ChunkTask, missing: str | None) -> None:
        """A chunk is written (or no remote has it): count it, finish its file if it was the last."""
        f = task.file
        if missing is not None:
            self.absent.append(missing)
            f.absent = True
        else:
            f.written += task.chunk.size
            if f.written - f.flushed >= WRITEBACK_STEP:  # chunks settle in file order
                start_writeback(f.fd, f.flushed, f.written - f.flushed)
                f.flushed = f.written
        f.left -= 1
        if f.left == 0:
            self._finish(f)
        if self.progress is not None and missing is None:
            self.done += task.chunk.size
            self.progress(self.done, self.total)

    def _finish(self, f: _OpenFile) -> None:
        """Check the file is whole (every byte written, from verified chunks or the verified
        copy, and its size the manifest's: nothing truncated or appended meanwhile), fsync
        it, keep it as the cache's copy if it is large, and close it."""
        self.files.remove(f)
        fd, f.fd = f.fd, -1
        try:
            if not f.absent:
                _testhooks.point("whole-digest")
                if not _written_whole(fd, f):
                    raise IntegrityError(
                        f"{self.context} file {f.rel!r}: its bytes do not match the manifest's file digest "
                        "(the file changed while it was written)"
                    )
                os.fsync(fd)
                if not f.copied and f.rec.size >= WHOLE_COPY_MIN:
                    self.store.keep_copy(f.rec, fd)
        finally:
            os.close(fd)
        _testhooks.point("get-file-written")

    def _raise_absent(self) -> None:
        fetcher = self.fetcher
        first = fetcher.remotes()[0] if fetcher is not None and fetcher.remotes() else None
        where = f"blob remote {first.name!r} ({first.url})" if first is not None else "the chunk cache"
        raise RemoteError(
            f"{where} lacks {len(set(self.absent))} chunk(s) (first: {self.absent[0][:16]}) of "
            f"{self.context}; push them from a clone that has them (`uniflow push --all`)"
        )

    def close(self) -> None:
        """Close every descriptor still open (after a failure; the workers have stopped)."""
        for f in self.files:
            if f.fd >= 0:
                os.close(f.fd)
        self.files.clear()
        if self.tree is not None:
            self.tree.close()


def _jobs(fetcher: UrlBlobFetcher | None) -> int:
    """Threads for writing a version: :data:`JOBS` when a chunk may come over a network (its
    latency is hidden by requests in flight), else one per core: chunks read from disk (the
    cache, a directory remote) are bound by hashing and copying, and more threads than cores
    only contend for the interpreter lock."""
    if fetcher is not None:
        try:  # the specs only: a remote is not opened (nor required) before a chunk is missing
            specs = blob_remote_for(fetcher.url, fetcher.config, fetcher.blob)
        except UniflowError:
            specs = []  # reported if and when a chunk must be fetched
        if not all(is_local(spec.url) for spec in specs):
            return JOBS
    return max(2, min(JOBS, os.cpu_count() or 2))


class _KeptChunks:
    """Chunks held by the cache's kept copies of large files of other versions
    (``ObjectStore.keep_copy``): a get writes such a file's fetched chunks into it and
    nowhere else, so a later get of a version sharing them reads them from there. Each
    chunk is read at its offset and verified against its name; a copy that changed is a
    miss (the chunk is fetched again)."""

    def __init__(self, store: ObjectStore, others: Callable[[], list[FileRecord]]) -> None:
        self.store = store
        self._others = others
        self._where: dict[str, tuple[FileRecord, int]] | None = None
        self._lock = threading.Lock()

    def _map(self) -> dict[str, tuple[FileRecord, int]]:
        with self._lock:
            if self._where is None:
                self._where = {}
                for rec in self._others():
                    if not self.store.has_cached_copy(rec):
                        continue
                    offset = 0
                    for c in rec.chunks:
                        self._where.setdefault(c.digest, (rec, offset))
                        offset += c.size
            return self._where

    def names(self) -> set[str]:
        """The chunk names some kept copy holds (unverified: each is checked when read)."""
        return set(self._map())

    def read(self, c: ChunkRef, buf: bytearray) -> memoryview | None:
        """Chunk ``c`` read from a kept copy into ``buf`` and verified, or None."""
        found = self._map().get(c.digest)
        if found is None:
            return None
        rec, offset = found
        fd = self.store.open_cached(rec)
        if fd is None:
            return None
        try:
            view = memoryview(buf)
            n = read_full(fd, view[: c.size], offset)
        finally:
            os.close(fd)
        data = view[: c.size]
        view.release()
        if n != c.size or chunk_digest(data) != c.digest:
            data.release()
            return None
        return data


def _other_files(repo: Repository, name: str, version: str) -> list[FileRecord]:
    """The files of at least :data:`WHOLE_COPY_MIN` bytes of the newest
    :data:`MAX_KEPT_VERSIONS` other readable versions of model ``name``."""
    from .._records.manifest import file_records

    others = [v for v in repo.listings.listing(name).versions if v != version][-MAX_KEPT_VERSIONS:]
    out: list[FileRecord] = []
    for v in reversed(others):
        try:
            m = repo.manifest(name, v)
        except UniflowError:
            continue  # unreadable: its copies are simply not used
        out.extend(rec for _, rec, _ in file_records(m) if rec.size >= WHOLE_COPY_MIN)
    return out


def _executable(mode: object) -> bool:
    return isinstance(mode, int) and not isinstance(mode, bool) and bool(mode & 0o111)


#: this thread's reusable read buffer (no fresh pages, so no page faults, per chunk)
_BUFFERS = ThreadBuffers(8 << 20)
#: this thread's reusable buffer for a range read out of a directory remote's pack
_SPAN_BUFFERS = ThreadBuffers()


def _cached_chunk(store: ObjectStore, c: ChunkRef, buf: bytearray) -> memoryview | None:
    """The verified bytes of chunk ``c`` in the chunk cache (a view of ``buf``), or None. A
    cache entry that is not exactly the chunk (a torn write: the cache is not fsynced), or no
    regular file (never followed or read), is removed so that it is fetched again."""
    path = store.object_path(c.digest)
    try:
        fd = open_regular(path)
    except NotRegularFile:
        store.delete_object(c.digest)
        return None
    if fd is None:
        return None
    try:
        data = read_verified(fd, c.digest, buf, c.size)
    finally:
        os.close(fd)
    if data is None:
        store.delete_object(c.digest)
    return data


def _fetch_chunk(
    store: ObjectStore, fetcher: UrlBlobFetcher, c: ChunkRef, buf: bytearray, where: str
) -> memoryview | bytes | None:
    """Chunk ``c`` from the first blob remote that has it, verified on arrival and then kept
    in the cache; None when no remote has it."""
    data: memoryview | bytes | None
    for remote in fetcher.remotes():
        files = remote.local_files()
        data = None
        if files is not None:
            try:
                data = store_file_chunk(store, remote, files, c.digest, buf, where)
            except IntegrityError as exc:  # no regular file: say which version needed it
                if isinstance(exc, CorruptChunkError):
                    raise
                raise CorruptChunkError(f"{exc} ({where})", c.digest) from None
        if data is None:  # in one of the remote's packs: one range read, verified
            packs = fetcher.packs_of(store, remote)
            data = packs.read_chunk(c.digest, where) if packs is not None else None
            if data is not None:
                store.add_verified(c.digest, data)
        if data is None:  # no file of its own: whole, from any remote (a directory's packs too)
            data = get_chunk(remote, c.digest)
            if data is not None and (len(data) != c.size or chunk_digest(data) != c.digest):
                raise corrupt_download(remote, c.digest, where)
            if data is not None:
                store.add_verified(c.digest, data)
        if data is not None:
            return data
    return None


def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a short write is continued, never ignored)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):  # bounded: each pwrite makes progress or raises
            with view[done:] as rest:
                done += os.pwrite(fd, rest, offset + done)


def _written_whole(fd: int, f: _OpenFile) -> bool:
    """True if ``f`` had all of its bytes written and the file open as ``fd`` is a regular
    file of exactly the manifest's size (what a file changed by another process meanwhile,
    truncated or extended, is not)."""
    st = os.fstat(fd)
    return stat.S_ISREG(st.st_mode) and st.st_size == f.rec.size and f.written == f.rec.size
