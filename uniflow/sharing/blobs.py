"""Blob remotes: where chunks live outside this repository (a directory, S3, any fsspec URL).

Remotes are declared in ``.uniflow/config.toml`` (committed, so every clone knows them)::

    [remotes.origin]
    url = "s3://bucket/prefix"          # or a path, or any fsspec URL
    endpoint_url = "http://minio:9000"  # optional (S3-compatible stores)
    connect_timeout = 10                # optional, seconds (defaults shown)
    read_timeout = 60

This module holds their configuration and the transfers; the kinds of remote, their
layout (that of the local store) and how nothing partial is ever visible on them are in
``blobstore``. Invariants kept here:

* **verify before use**: every chunk is hashed before it is uploaded and after it is
  downloaded (before it is stored); a mismatch is an :class:`IntegrityError`, and so is a
  chunk's name on a directory remote holding a symlink, FIFO or device;
* **bounded retries, of transient failures only**: a reset connection, 5xx, throttling
  (:data:`RETRIES` attempts) or a timeout (:data:`TIMEOUT_ATTEMPTS`) is retried with
  exponential backoff and jitter; missing credentials, refusals (4xx), a refused
  connection or unknown host never are. Each S3 request is bounded by the remote's connect
  and read timeouts (``blobstore``). The last failure is one :class:`RemoteError` line
  naming the remote, its URL and endpoint, what happened and what to check;
* **only our own garbage**: a push to a directory remote removes abandoned uploads older
  than an hour: only regular files in ``<url>/tmp`` named like ours (never following a
  symlink), whoever else uses ``<url>/tmp``.

fsspec is imported only when a non-directory remote is first used, so ``import uniflow``
never loads it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import CorruptChunkError, IntegrityError, NotFoundError, RemoteError, UniflowError, UsageError
from .._naming import validate_digest
from .._records.config import Config, ConfigSource, RemoteSpec
from .._reports import ChunkStats
from .._storage.chunking import CHUNK_PARAMS, chunk_digest
from .._storage.ingest import fd_stamp
from .._storage.parallel import ThreadBuffers, bounded_map
from .._storage.store import read_verified
from .._types import ProgressFn
from .blobstore import (
    READ_TIMEOUT_ENV,
    BlobRemote,
    LocalFiles,
    Timeouts,
    describe,
    open_remote,
)
from .remotepacks import RemotePacks, open_packs

if TYPE_CHECKING:  # pragma: no cover
    from .._storage.store import ObjectStore

__all__ = [
    "JOBS",
    "KILL_AFTER_ENV",
    "LAYOUT_ENV",
    "RETRIES",
    "TransferStats",
    "add_remote",
    "BlobFetcher",
    "corrupt_download",
    "download_chunks",
    "get_chunk",
    "get_remote_spec",
    "list_remotes",
    "remove_remote",
    "retry_transient",
    "store_file_chunk",
    "upload_chunks",
    "validate_remote_name",
]

log = logging.getLogger("uniflow.remote")

#: attempts per chunk transfer before giving up
RETRIES = 5
#: parallel transfers
JOBS = 8
#: test hook: SIGKILL this process after that many uploads (simulates a crash mid-push)
KILL_AFTER_ENV = "UNIFLOW_TEST_KILL_AFTER_UPLOADS"
#: ``loose``: push one file per chunk (``objects/ab/…``), as uniflow did before packs on
#: remotes, for a remote still read by older clients through an object store
LAYOUT_ENV = "UNIFLOW_BLOB_LAYOUT"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OPTION_KEYS = {"endpoint_url", "options"}

T = TypeVar("T")


def validate_remote_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.endswith(".lock") or ".." in name:
        raise UsageError(
            f"invalid remote name {name!r}: use letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit"
        )
    return name


@dataclass
class TransferStats:
    """What a transfer did (counts of chunks and bytes)."""

    wanted: int = 0
    present: int = 0
    transferred: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return self.frozen().to_dict()

    def frozen(self) -> ChunkStats:
        """The counts as the immutable :class:`~uniflow.ChunkStats` of a report."""
        return ChunkStats(self.wanted, self.present, self.transferred, self.bytes)


# ---------------------------------------------------------------------- config
def list_remotes(config: Config) -> list[RemoteSpec]:
    """Every blob remote declared in ``.uniflow/config.toml``, sorted by name."""
    return [config.remotes[name] for name in sorted(config.remotes)]


def get_remote_spec(config: Config, name: str | None = None) -> RemoteSpec | None:
    """The blob remote ``name``; without a name: ``origin``, else the only one declared."""
    remotes = config.remotes
    if name is not None:
        return remotes.get(name)
    if "origin" in remotes:
        return remotes["origin"]
    if len(remotes) == 1:
        return next(iter(remotes.values()))
    return None


def _check_url(url: str) -> str:
    url = url.strip()
    if not url or any(c in url for c in "\n\r\t\x00"):
        raise UsageError(f"invalid remote URL {url!r}")
    return url


def add_remote(
    source: ConfigSource, name: str, url: str, *, endpoint_url: str | None = None, force: bool = False
) -> RemoteSpec:
    """Declare blob remote ``name`` at ``url`` in ``.uniflow/config.toml`` (commit it)."""
    validate_remote_name(name)
    url = _check_url(url)
    source.init()
    source.reload()
    raw = dict(source.get().raw)
    table = dict(raw.get("remotes", {}))
    if name in table and not force:
        raise UsageError(
            f"blob remote {name!r} already exists ({table[name].get('url')}); use --force to replace it"
        )
    entry: dict[str, Any] = {"url": url}
    if endpoint_url:
        entry["endpoint_url"] = _check_url(endpoint_url)
    table[name] = entry
    raw["remotes"] = table
    source.save(raw)
    return source.get().remotes[name]


def remove_remote(source: ConfigSource, name: str) -> RemoteSpec:
    """Remove blob remote ``name`` from ``.uniflow/config.toml``; the bytes it holds stay."""
    validate_remote_name(name)
    source.reload()
    config = source.get()
    spec = config.remotes.get(name)
    if spec is None:
        raise NotFoundError(f"no blob remote named {name!r} (see `uniflow remote list`)")
    raw = dict(config.raw)
    table = {k: v for k, v in dict(raw.get("remotes", {})).items() if k != name}
    if table:
        raw["remotes"] = table
    else:
        raw.pop("remotes", None)
    source.save(raw)
    return spec


# ---------------------------------------------------------------------- transfers
# Errors a retry cannot fix (missing path, refused access, bad argument): reported at once.
_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
    ValueError,
    TypeError,
    KeyError,
)
#: attempts of a call that timed out (each costs a whole timeout): one more, not RETRIES
TIMEOUT_ATTEMPTS = 2
#: longest pause between two attempts, in seconds (exponential from 0.1 s, with jitter)
MAX_BACKOFF = 2.0
# S3 error codes worth another attempt whatever their status (throttling, server trouble)
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
}
# botocore/aiohttp errors of a connection that broke mid-call: worth another attempt
_TRANSIENT_ERRORS = {
    "ConnectionClosedError",
    "EndpointConnectionError",
    "HTTPClientError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ClientPayloadError",
    "ResponseParserError",
}
_CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in "
    "~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE), or run where an instance role provides them"
)
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "RequestTimeTooSkewed",
}


@dataclass(frozen=True)
class _Failure:
    """What a failed call to a blob remote was: how many attempts it deserves in all (1:
    none more), what happened, and what the user should check."""

    attempts: int
    what: str
    hint: str = ""


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (s3fs wraps botocore's), bounded."""
    out = [exc]
    while len(out) < 8:
        nxt = out[-1].__cause__ or out[-1].__context__
        if nxt is None or nxt in out:
            break
        out.append(nxt)
    return out


def _s3_answer(chain: list[BaseException]) -> tuple[int, str] | None:
    """``(HTTP status, error code)`` of an S3 error answer (botocore's ClientError) in ``chain``."""
    for e in chain:
        response = getattr(e, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return int(status), str(response["Error"].get("Code") or "")
    return None


def _classify(exc: BaseException, remote: BlobRemote) -> _Failure:
    """Whether ``exc`` is transient (connection reset, 5xx, throttling, read timeout) and how
    to say it; credentials, refusals, a missing bucket and bad settings are never retried."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    timeouts = getattr(remote, "timeouts", Timeouts())
    answer = _s3_answer(chain)
    for e in chain:
        if type(e).__name__ in _CREDENTIAL_ERRORS:  # botocore's says which are missing, if some are
            what = "no credentials found" if type(e).__name__ == "NoCredentialsError" else f"{e}"
            return _Failure(1, what, _CREDENTIALS_HINT)
    if answer is not None:
        status, code = answer
        said = f"the server answered HTTP {status} {code}".rstrip()
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            return _Failure(RETRIES, said, "the service may be overloaded or down; try again later")
        if status in (401, 403) or code in _AUTH_CODES:
            return _Failure(1, said, "check the credentials and the bucket's permissions")
        if code == "NoSuchBucket":
            return _Failure(1, said, "check the bucket in the remote's url")
        return _Failure(1, said)
    if names & {"ConnectTimeoutError"}:
        return _Failure(
            TIMEOUT_ATTEMPTS,
            f"timed out connecting (connect_timeout = {timeouts.connect:g}s)",
            "check the network and the endpoint",
        )
    if "ReadTimeoutError" in names or any(isinstance(e, TimeoutError) for e in chain):  # fsspec's too
        return _Failure(
            TIMEOUT_ATTEMPTS,
            f"timed out: no answer within read_timeout = {timeouts.read:g}s",
            f"check the network and the endpoint (or raise read_timeout in .uniflow/config.toml "
            f"or {READ_TIMEOUT_ENV})",
        )
    unreachable = _unreachable(chain)
    if unreachable:  # refused, no such host: not a blip
        return _Failure(1, f"cannot connect: {unreachable}", "check the network and the endpoint")
    if isinstance(exc, _PERMANENT):
        return _Failure(1, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError) or names & _TRANSIENT_ERRORS:  # resets, broken streams, I/O
        return _Failure(RETRIES, f"{type(exc).__name__}: {exc}", "check the network and the endpoint")
    return _Failure(1, f"{type(exc).__name__}: {exc}")


def _wrapped(exc: BaseException) -> list[BaseException]:
    """The chain of the error a botocore error wraps (its ``error=``, e.g. aiohttp's), or none."""
    kwargs = getattr(exc, "kwargs", None)
    inner = kwargs.get("error") if isinstance(kwargs, dict) else None
    return _chain(inner) if isinstance(inner, BaseException) else []


def _unreachable(chain: list[BaseException]) -> str | None:
    """Why the endpoint could not be reached at all (connection refused, unknown host), or
    None; botocore wraps aiohttp's error, which wraps the OS's."""
    for err in chain + [x for e in chain for x in _wrapped(e)]:
        if isinstance(err, socket.gaierror):
            return f"unknown host ({err.strerror})"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
    return None


def retry_transient(what: str, remote: BlobRemote, fn: Callable[[], T]) -> T:
    """``fn()``, a call to ``remote``, tried again after a transient failure (bounded
    attempts, exponential backoff with jitter); any other failure, or the last, is one
    :class:`RemoteError` line naming the remote, what happened and what to check. Every
    call a transfer makes to a blob remote goes through it."""
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except UniflowError:
            raise
        except Exception as exc:
            failure = _classify(exc, remote)
            if attempt >= min(failure.attempts, RETRIES):
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                hint = f"; {failure.hint}" if failure.hint else ""
                raise RemoteError(
                    f"{what} on {describe(remote)} failed{tries}: {failure.what}{hint}"
                ) from exc
            log.info("%s failed (%s); retrying in %.1fs", what, failure.what, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, MAX_BACKOFF)


def _listing(remote: BlobRemote) -> set[str]:
    return retry_transient("listing chunks", remote, remote.list_digests)


def get_chunk(remote: BlobRemote, digest: str) -> bytes | None:
    """The bytes ``remote`` holds under chunk ``digest``, unverified (None: it has none),
    retried like every transfer."""
    return retry_transient(f"download of chunk {digest[:16]}", remote, lambda: remote.get(digest))


def corrupt_download(remote: BlobRemote, digest: str, where: str = "") -> CorruptChunkError:
    """The error for a chunk of ``remote`` whose bytes do not match its digest."""
    at = f" ({where})" if where else ""
    return CorruptChunkError(
        f"chunk {digest[:16]} downloaded from blob remote {remote.name!r} ({remote.url}) is corrupted: "
        f"its bytes do not match its digest{at}; it was not stored",
        digest,
    )


def upload_chunks(
    store: ObjectStore,
    remote: BlobRemote,
    digests: Iterable[str],
    *,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
    context: dict[str, str] | None = None,
) -> TransferStats:
    """Upload the chunks in ``digests`` the remote lacks; resumable and verified.

    The remote is listed once (its loose chunks and its packs' indexes); only chunks absent
    from both are sent: as packs (``remotepacks``) to a remote that holds them, else (a
    ``memory://`` remote, or :data:`LAYOUT_ENV` ``=loose``) one chunk file each. Each chunk
    is read through the store, which re-hashes it, so a corrupted local chunk is never
    published. Returns what was done.
    """
    wanted = list(dict.fromkeys(digests))
    stats = TransferStats(wanted=len(wanted))
    if not wanted:
        return stats
    files = remote.local_files()
    if files is not None:
        files.clean_tmp()
    packs = open_packs(remote, store, retry_transient_on(remote))
    present = _listing(remote)
    if packs is not None:
        present |= packs.names()
    todo = [d for d in wanted if d not in present]
    stats.present = len(wanted) - len(todo)
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    if packs is not None and os.environ.get(LAYOUT_ENV, "") != "loose":
        _upload_packs(store, packs, todo, stats, progress, context, kill_after)
        return stats

    buffers = ThreadBuffers(CHUNK_PARAMS["max_size"] + 1)  # one per worker, reused for every chunk

    def one(digest: str) -> int:
        where = (context or {}).get(digest, "")
        if files is not None:
            return _upload_copy(store, remote, files, digest, buffers.get(0), where)
        data = store.read_chunk(digest, where)
        retry_transient(f"upload of chunk {digest[:16]}", remote, lambda: remote.put(digest, data))
        return len(data)

    total = _total_size(store, todo)
    _run_parallel(todo, one, jobs, stats, progress, total, kill_after)
    return stats


def _upload_packs(
    store: ObjectStore,
    packs: RemotePacks,
    todo: list[str],
    stats: TransferStats,
    progress: ProgressFn | None,
    context: dict[str, str] | None,
    kill_after: int,
) -> None:
    """Send ``todo`` as packs (``remotepacks``); the stats counted as each pack is visible."""
    total = _total_size(store, todo)

    def sent(chunks: int, size: int) -> None:
        stats.transferred += chunks
        stats.bytes += size
        if progress is not None:
            progress(stats.bytes, total)
        if kill_after and stats.transferred >= kill_after:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    packs.push(store, todo, lambda d: (context or {}).get(d, ""), sent)


def retry_transient_on(remote: BlobRemote) -> Callable[[str, Callable[[], Any]], Any]:
    """:func:`retry_transient` bound to ``remote``: ``retry(what, fn)``."""
    return lambda what, fn: retry_transient(what, remote, fn)


def _upload_copy(
    store: ObjectStore, remote: BlobRemote, files: LocalFiles, digest: str, buf: bytearray, where: str
) -> int:
    """Upload chunk ``digest`` to a remote of files: verified from the local object's
    descriptor, then copied from it in the kernel (not written from memory). A local object
    written meanwhile is caught by its stamp and what this call created removed."""
    with store.open_verified(digest, buf, where) as chunk:
        created = retry_transient(
            f"upload of chunk {digest[:16]}",
            remote,
            lambda: files.put_copy(digest, chunk.data, (chunk.fd, chunk.offset)),
        )
        if not chunk.unchanged():  # the local object was written while it was copied
            if created:
                files.discard(digest)
            raise CorruptChunkError(
                f"chunk {digest[:16]} changed in the local store while it was sent; "
                "it was not published (run `uniflow verify`)",
                digest,
            )
        return len(chunk.data)


def download_chunks(
    store: ObjectStore,
    remote: BlobRemote,
    digests: Iterable[str],
    *,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
    skip_missing: bool = False,
) -> TransferStats:
    """Fetch the chunks in ``digests`` missing locally; each is verified before it is stored.
    Those in the remote's packs come by coalesced range reads (``remotepacks``), the others
    one chunk file at a time.

    A chunk the remote does not have raises :class:`RemoteError` unless ``skip_missing``;
    a chunk whose bytes do not match its name raises :class:`IntegrityError`.
    """
    wanted = list(dict.fromkeys(digests))
    for d in wanted:
        validate_digest(d, "chunk digest")
    todo = store.missing(wanted)
    stats = TransferStats(wanted=len(wanted), present=len(wanted) - len(todo))
    if not todo:
        return stats
    store.ensure_dirs()  # once, not per chunk
    fetch = _Download(store, remote)
    try:
        todo = _download_packed(store, remote, todo, jobs, stats, progress, fetch.stored)
        _run_parallel(todo, fetch.one, jobs, stats, progress, None, 0)
    finally:
        # One fsync per fan-out directory touched, not one per chunk: every name this call
        # linked is durable when it returns (or raises), as with a per-chunk fsync.
        store.sync_dirs(fetch.stored)
    if fetch.absent:
        stats.transferred -= len(fetch.absent)
        if not skip_missing:
            raise RemoteError(
                f"blob remote {remote.name!r} ({remote.url}) lacks {len(fetch.absent)} chunk(s) "
                f"(first: {fetch.absent[0][:16]}); push them from a clone that has them "
                "(`uniflow push --all`)"
            )
    return stats


def _download_packed(
    store: ObjectStore,
    remote: BlobRemote,
    todo: list[str],
    jobs: int,
    stats: TransferStats,
    progress: ProgressFn | None,
    stored: list[str],
) -> list[str]:
    """Fetch the chunks of ``todo`` that the remote's packs hold, by range reads (verified,
    ``remotepacks``); the rest, to be fetched one chunk at a time (loose chunks)."""
    packs = open_packs(remote, store, retry_transient_on(remote))
    if packs is None:
        return todo

    def done(digest: str, size: int) -> None:
        stored.append(digest)
        stats.transferred += 1
        stats.bytes += size
        if progress is not None:
            progress(stats.bytes, stats.bytes)

    return packs.fetch(store, todo, jobs, done)


class _Download:
    """The chunks one :func:`download_chunks` stored and those the remote lacks; :meth:`one`
    runs on the worker threads."""

    def __init__(self, store: ObjectStore, remote: BlobRemote) -> None:
        self.store = store
        self.remote = remote
        self.files = remote.local_files()
        self.buffers = ThreadBuffers(CHUNK_PARAMS["max_size"] + 1)  # one per worker, reused
        self.stored: list[str] = []
        self.absent: list[str] = []

    def one(self, digest: str) -> int:
        """Fetch, verify and store chunk ``digest``; its size (0 when the remote lacks it)."""
        data: memoryview | bytes | None = None
        if self.files is not None:
            data = store_file_chunk(self.store, self.remote, self.files, digest, self.buffers.get(0))
        if data is None:  # no file of its own: whole, from any remote (a directory's packs too)
            data = get_chunk(self.remote, digest)
            if data is not None and chunk_digest(data) != digest:  # verified before it is stored
                raise corrupt_download(self.remote, digest)
            if data is not None:
                self.store.add_verified(digest, data, sync_dir=False)  # bytes fsynced, names below
        if data is None:
            self.absent.append(digest)
            return 0
        self.stored.append(digest)
        return len(data)


def store_file_chunk(
    store: ObjectStore, remote: BlobRemote, files: LocalFiles, digest: str, buf: bytearray, where: str = ""
) -> memoryview | None:
    """Store chunk ``digest`` of a remote of files (:class:`LocalFiles`), verified through
    the descriptor it is read from (:func:`~uniflow._storage.store.read_verified`, into
    ``buf``: one byte above the longest chunk expected), then hard-linked into a download
    cache (:meth:`ObjectStore.link_verified`) or else copied in the kernel from that
    descriptor, whose stamp must not change meanwhile (what this call stored is then
    removed). Its verified bytes, a view of ``buf``; None if the remote lacks it."""
    fd = files.open_chunk(digest)
    if fd is None:
        return None
    try:
        stamp = fd_stamp(fd)
        data = read_verified(fd, digest, buf)
        if data is None:
            raise corrupt_download(remote, digest, where)
        if store.link_verified(digest, fd):
            return data  # a cache (verified on every use): the very file, no copy
        created = store.add_verified(digest, data, sync_dir=False, src=(fd, 0))
        if fd_stamp(fd) != stamp:
            data.release()
            if created:
                store.delete_object(digest)
            raise IntegrityError(
                f"chunk {digest[:16]} changed on blob remote {remote.name!r} ({remote.url}) while it "
                "was copied; it was not stored"
            )
        return data
    finally:
        os.close(fd)


def _total_size(store: ObjectStore, digests: list[str]) -> int:
    return sum(store.stored_size(d) for d in digests)


def _run_parallel(
    items: list[str],
    fn: Callable[[str], int],
    jobs: int,
    stats: TransferStats,
    progress: ProgressFn | None,
    total: int | None,
    kill_after: int,
) -> None:
    if not items:
        return
    jobs = max(1, min(jobs, len(items)))
    # at most two chunks per worker pending: the memory of a transfer does not grow with the
    # number of chunks
    for n in bounded_map(fn, items, workers=jobs, window=2 * jobs, name="uniflow-xfer"):
        stats.transferred += 1
        stats.bytes += n
        if progress is not None:
            progress(stats.bytes, total if total is not None else stats.bytes)
        if kill_after and stats.transferred >= kill_after:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class BlobFetcher:
    """What the chunk store calls with digests it lacks: fetch them from the declared blob
    remotes (the default one first, then every other), each verified before it is stored.

    Given to the :class:`ObjectStore` when it is built. Cheap: the configuration is read and
    fsspec imported only when a chunk is actually missing.
    """

    def __init__(self, config: ConfigSource, root: Path) -> None:
        self.config = config
        self.root = root

    def __call__(self, store: ObjectStore, digests: list[str]) -> None:
        missing = store.missing(digests)
        if not missing:
            return
        self.config.reload()
        config = self.config.get()
        default = get_remote_spec(config, None)
        others = [s for s in list_remotes(config) if default is None or s.name != default.name]
        for spec in ([default] if default else []) + others:
            if not missing:
                return
            log.info("fetching %d chunk(s) from blob remote %s", len(missing), spec.name)
            download_chunks(store, open_remote(spec, self.root), missing, skip_missing=True)
            missing = store.missing(missing)
