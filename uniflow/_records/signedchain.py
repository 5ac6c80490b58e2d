"""A lifecycle chain and version tags read for signature checks: raw bytes, verified once.

Who signed a lifecycle commit depends on two things: whether its signature verifies over its
exact bytes (a fact of the commit alone), and whether the key is an allowed signer at the
commit's time (a fact of the policy in force, decided by the caller). This module computes
the first and keeps it: :func:`read_signed_chain` walks ``refs/uniflow/models/<model>`` by
first parents on the raw objects (``git cat-file`` bytes, checked to hash to their ids),
verifies each commit's SSH signature cryptographically, and returns one :class:`SignedCommit`
per commit (oldest first) with its ``event.json`` bytes: those its message carries when its
tree is exactly that event (:func:`~uniflow._records.lifecycle.event_in_tree`, nothing read;
a commit whose message and tree disagree is marked), else read from its tree (a commit
written before issue 24). The result is kept in the derived
cache (MAC-ed, :mod:`uniflow._records.objcache`) under the head commit; a later walk stops at
the newest commit whose chain is kept, so verifying a long lifecycle again reads only the
new commits. :func:`read_signed_tag` does the same for a version tag, keyed by its id.

A long walk reads its first commits one by one, then the rest in bulk: loose commits walked
in-process, then the packed rest as one ``git rev-list --first-parent`` lists it, read a
slice at a time, and the trees and ``event.json`` blobs each by one read
(:meth:`~uniflow._records.git.GitRepo.read_raw_many`: loose objects in-process, packed ones
through one ``git cat-file --batch``), every object checked to hash to its id and every
parent link checked against the commits' own headers, so git is trusted with nothing. The
signatures verify from the first batch of commits read, while the rest, the trees and the
events are read (and the caller's ``meanwhile`` parses the events): on Linux, when no other
thread runs, in forked children (one per :data:`_FORK_SLICE` commits; a child only verifies,
writes its verdicts to a pipe and leaves by ``os._exit``, so nothing it does touches this
process), else on worker threads, whose Python (splitting a commit, parsing its signature)
shares the reading thread's GIL.
Anything amiss (no git binary, a missing or damaged object) falls back to the one-by-one
walk, which names it.

Nothing here decides trust: a signature that verifies names only its key.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

import msgpack

from .._authority.gitsign import split_commit, split_tag
from .._authority.sshsig import GIT_NAMESPACE, PublicKey, parse_signature, verify_signature
from .._errors import IntegrityError, RepositoryError, SignatureError
from .._storage.parallel import bounded_map
from .git import GitRepo
from .lifecycle import (
    MAX_COMMIT_BYTES,
    MAX_EVENT_BYTES,
    MISMATCH,
    commit_context,
    event_in_tree,
    message_event,
)
from .objcache import DerivedCache

__all__ = ["MAX_TAG_BYTES", "SignedCommit", "SignedTag", "read_signed_chain", "read_signed_tag"]

#: derived-cache kinds: a whole chain under its head, and one tag under its id
CHAIN_KIND = "signedchain"
TAG_KIND = "signedtag"
_FORMAT = 2
#: the largest version tag read (its message is the model card)
MAX_TAG_BYTES = 32 << 20
#: the largest lifecycle tree read (it holds two files)
MAX_TREE_BYTES = 1 << 20
#: commits read one by one before the rest of a long chain is read in bulk
#: (:func:`_read_rest`: a few git processes, worth it only for many commits)
_ONE_BY_ONE = 64
#: threads that verify signatures (the ``cryptography`` verify releases the GIL)
_VERIFY_WORKERS = 2
#: commits per verify task (one future each)
_VERIFY_BATCH = 128
#: seconds a forked verifier may take before it is killed and its slice verified here (a
#: slice takes a fraction of a second; the bound only ends a child that hangs)
_CHILD_WAIT = 120.0
#: commits verified by one forked child (:class:`_Forked`)
_FORK_SLICE = 1024
#: packed commits read by one ``git cat-file`` (verifying starts after the first slice)
_PACKED_SLICE = 2048
_LIMIT = 10_000_000

#: what :func:`read_signed_chain` hands its ``meanwhile`` callback: ``(commit id, event.json
#: bytes or None)`` of the commits read in bulk, newest first
Meanwhile = Callable[[list[tuple[str, bytes | None]]], None]
#: what it hands its ``verified`` callback: the next commits of the chain, oldest first
Verified = Callable[[list["SignedCommit"]], None]


@dataclass(frozen=True)
class SignedCommit:
    """One lifecycle commit: its id, committer time (seconds), ``event.json`` bytes (its
    tree's, which its message carries too since issue 24; None: absent), the key whose
    signature verifies over it (None: unsigned or not verifying), one line on the signature
    (``unsigned``, ``signature by <fingerprint>``, or why not) and what else is wrong with it
    (``problem``: :data:`MISMATCH`, a message whose event is not its tree's)."""

    sha: str
    time: int
    event: bytes | None
    key: str | None
    signature: str
    problem: str | None = None

    @property
    def signed(self) -> bool:
        """Whether the commit carries a signature at all (verifying or not)."""
        return self.signature != "unsigned"

    def public_key(self) -> PublicKey | None:
        """The verifying key, parsed."""
        return _key(self.key) if self.key else None


@dataclass(frozen=True)
class SignedTag:
    """A version tag: id, tagger time, target commit, verifying key and signature line
    (as :class:`SignedCommit`)."""

    sha: str
    time: int
    target: str
    key: str | None
    signature: str

    def public_key(self) -> PublicKey | None:
        """The verifying key, parsed."""
        return _key(self.key) if self.key else None


@functools.lru_cache(maxsize=256)
def _key(blob_hex: str) -> PublicKey:
    """A key blob parsed once (a lifecycle is signed by a handful of keys)."""
    return PublicKey.from_blob(bytes.fromhex(blob_hex))


def _check(signature: str | None, payload: bytes) -> tuple[str | None, str]:
    """``(key blob hex, line)`` of a signature verified over ``payload`` in Git's namespace."""
    if signature is None:
        return None, "unsigned"
    try:
        sig = parse_signature(signature)
        verify_signature(sig, payload, GIT_NAMESPACE)
    except SignatureError as exc:
        return None, f"bad signature: {exc}"
    return sig.public_key.blob.hex(), f"signature by {sig.public_key.fingerprint}"


def _headers(raw: bytes) -> dict[bytes, bytes]:
    """The first value of each header of a commit or tag (up to the blank line); the lines
    that continue a header (they start with a space, as a signature's do) are skipped."""
    if raw[:1] == b"\n":
        return {}
    end = raw.find(b"\n\n")
    out: dict[bytes, bytes] = {}
    for line in (raw[:end] if end >= 0 else raw).split(b"\n"):
        if line and line[:1] != b" ":
            name, _, value = line.partition(b" ")
            if name not in out:
                out[name] = value
    return out


def _time(value: bytes | None) -> int:
    fields = (value or b"").rsplit(b">", 1)[-1].split()
    return int(fields[0]) if fields and fields[0].isdigit() else 0


def _tree_entry(git: GitRepo, tree: str, name: bytes) -> str | None:
    """The id of blob ``name`` in tree ``tree`` (raw tree entries: ``mode name\\0id``)."""
    return _entry_in(git.read_raw(tree, "tree", MAX_TREE_BYTES), 32 if len(tree) == 64 else 20, name)


def _entry_in(raw: bytes, width: int, name: bytes) -> str | None:
    """The id of blob ``name`` in the raw tree ``raw`` whose ids are ``width`` bytes."""
    pos = 0
    while pos < len(raw):
        nul = raw.index(b"\0", pos)
        mode, _, entry = raw[pos:nul].partition(b" ")
        sha = raw[nul + 1 : nul + 1 + width].hex()
        pos = nul + 1 + width
        if entry == name:
            return sha if not mode.startswith(b"4") else None
    return None


def _read_commit(git: GitRepo, sha: str, model: str) -> tuple[SignedCommit, str | None]:
    context = commit_context(sha, model)
    try:
        raw = git.read_raw(sha, "commit", MAX_COMMIT_BYTES)
        heads = _headers(raw)
        tree = heads.get(b"tree", b"").decode("ascii", "replace")
        event, problem = _carried(raw, tree)
        if event is None:
            blob = _tree_entry(git, tree, b"event.json")
            event = git.read_blob(blob, MAX_EVENT_BYTES, f"{context}: event.json") if blob else None
    except KeyError as exc:
        raise IntegrityError(f"{context}: git objects are missing") from exc
    except (RepositoryError, ValueError) as exc:
        raise IntegrityError(f"{context}: {exc}") from exc
    split = split_commit(raw, "sha256" if len(sha) == 64 else "sha1")
    key, line = _check(split.signature, split.payload)
    parent = heads.get(b"parent")
    return SignedCommit(sha, _time(heads.get(b"committer")), event, key, line, problem), (
        parent.decode("ascii") if parent else None
    )


def _carried(raw: bytes, tree: str) -> tuple[bytes | None, str | None]:
    """The event the raw commit ``raw`` carries in its message when its tree ``tree`` is
    exactly that event and the state it names (:func:`event_in_tree`: nothing read), and
    what is wrong: ``(None, None)`` when it carries none (its tree is read), ``(None,
    MISMATCH)`` when its tree holds something else (its tree is read, and it fails)."""
    carried = message_event(raw)
    if carried is None:
        return None, None
    if event_in_tree(tree, *carried):
        return carried[0], None
    return None, MISMATCH


def _cached_chain(cache: DerivedCache | None, model: str, sha: str) -> list[SignedCommit] | None:
    if cache is None:
        return None
    d = cache.get_record(CHAIN_KIND, sha, _FORMAT, model, 3)
    items = d[2] if d is not None else None
    if not (isinstance(items, list) and items):
        return None
    out = []
    for i in items:
        if not (
            isinstance(i, list)
            and len(i) == 6
            and isinstance(i[0], str)
            and isinstance(i[1], int)
            and (i[2] is None or isinstance(i[2], bytes))
            and (i[3] is None or isinstance(i[3], str))
            and isinstance(i[4], str)
            and (i[5] is None or isinstance(i[5], str))
        ):
            return None
        out.append(SignedCommit(i[0], i[1], i[2], i[3], i[4], i[5]))
    return out if out[-1].sha == sha else None  # kept oldest first, ending at its key


class _Walk:
    """What a bulk walk read (:func:`_walk`): the ids and raw commits, newest first, the
    kept chain it reached and its head (None: it reached the first commit), and whether
    every object was as it should be."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.raws: list[bytes] = []
        self.heads: list[dict[bytes, bytes]] = []  # the headers of each, parsed once
        self.older: list[SignedCommit] = []
        self.reached: str | None = None
        self.ok = True


def _walk(
    git: GitRepo, sha: str, model: str, listed: set[str], cache: DerivedCache | None, limit: int, walk: _Walk
) -> Iterator[list[bytes]]:
    """Read the commits from ``sha`` back to the first (or to the newest whose chain is
    kept) into ``walk``, yielding them in batches of :data:`_VERIFY_BATCH` as they are
    read, so their signatures verify while the rest is read. Loose commits are walked
    in-process; from the first packed one on, the chain is as ``git rev-list`` lists it."""
    cur: str | None = sha
    sent = 0
    try:
        while cur and len(walk.ids) < limit:
            if walk.ids and cur in listed and (kept := _cached_chain(cache, model, cur)) is not None:
                walk.older, walk.reached = kept, cur
                break
            raw = git.read_loose(cur, "commit", MAX_COMMIT_BYTES)
            if raw is None:
                break
            walk.ids.append(cur)
            walk.raws.append(raw)
            walk.heads.append(_headers(raw))
            if len(walk.raws) - sent == _VERIFY_BATCH:
                yield walk.raws[sent:]
                sent = len(walk.raws)
            parent = walk.heads[-1].get(b"parent")
            cur = parent.decode("ascii", "replace") if parent else None
    except IntegrityError:
        walk.ok = False
        return
    if len(walk.raws) > sent:
        yield walk.raws[sent:]
    if cur and walk.reached is None:
        walk.ok = yield from _walk_packed(git, cur, model, listed, cache, limit, walk)


def _walk_packed(
    git: GitRepo, cur: str, model: str, listed: set[str], cache: DerivedCache | None, limit: int, walk: _Walk
) -> Generator[list[bytes], None, bool]:
    """The rest of :func:`_walk` from ``cur``, the first commit not stored loose: listed by
    ``git rev-list``, read by ``git cat-file`` a slice at a time; False when git cannot."""
    more = git.first_parents(cur, limit - len(walk.ids))
    if not more or more[0] != cur or len(more) >= limit - len(walk.ids):
        return False
    for i in range(1 if not walk.ids else 0, len(more)):  # ``sha`` itself the caller checked
        kept = _cached_chain(cache, model, more[i]) if more[i] in listed else None
        if kept is not None:
            walk.older, walk.reached, more = kept, more[i], more[:i]
            break
    for i in range(0, len(more), _PACKED_SLICE):
        found = git.read_raw_many(more[i : i + _PACKED_SLICE], "commit", MAX_COMMIT_BYTES)
        if found is None:
            return False
        walk.ids += more[i : i + _PACKED_SLICE]
        walk.raws += found
        walk.heads += [_headers(raw) for raw in found]
        yield from (found[j : j + _VERIFY_BATCH] for j in range(0, len(found), _VERIFY_BATCH))
    return True


def _read_rest(
    git: GitRepo,
    sha: str,
    model: str,
    listed: set[str],
    cache: DerivedCache | None,
    limit: int,
    meanwhile: Meanwhile | None = None,
    verified: Verified | None = None,
) -> tuple[list[SignedCommit], list[SignedCommit], str | None] | None:
    """The commits from ``sha`` back to the first (or to the newest whose chain is kept),
    newest first, read as :func:`_read_commit` reads each but in bulk (:func:`_walk`), their
    signatures verified on worker threads as they are read and while the trees and events
    are read (and ``meanwhile`` runs), with the kept chain and its head; None when they
    cannot be read so (the caller goes on one by one and names what is wrong). ``verified``
    gets the kept chain, then the commits read, oldest first, as their verdicts come."""
    walk = _Walk()
    fmt = "sha256" if len(sha) == 64 else "sha1"
    checks = _verifying(_walk(git, sha, model, listed, cache, limit, walk), fmt)
    try:
        first = next(checks, None)  # every batch is queued: the workers verify while the rest is read
        heads = walk.heads
        if first is None or not walk.ok or not _linked(walk, heads):
            return None
        found = _events(git, walk.raws, heads, 32 if fmt == "sha256" else 20)
        if found is None:
            return None
        events, problems = found
        if meanwhile is not None:
            meanwhile(list(zip(walk.ids, events, strict=True)))
        if verified is not None and walk.older:
            verified(walk.older)
        entries: list[SignedCommit | None] = [None] * len(walk.ids)
        low = len(entries)  # the commits from ``low`` on (the oldest) went to ``verified``
        for offset, batch in itertools.chain([first], checks):
            for k, verdict in enumerate(batch, offset):
                when = _time(heads[k].get(b"committer"))
                entries[k] = SignedCommit(walk.ids[k], when, events[k], *verdict, problems[k])
            if verified is not None:
                low = _hand_over(entries, low, verified)
        return [e for e in entries if e is not None], walk.older, walk.reached
    finally:
        checks.close()  # returning early: the queued checks are cancelled


def _hand_over(entries: list[SignedCommit | None], low: int, verified: Verified) -> int:
    """Hand ``verified`` the commits just before ``low`` (``entries`` is newest first) whose
    verdicts are in, oldest first; where the commits handed over now begin."""
    start = low
    while low > 0 and entries[low - 1] is not None:
        low -= 1
    if low < start:
        verified([e for e in entries[start - 1 : low - 1 if low else None : -1] if e is not None])
    return low


def _linked(walk: _Walk, heads: list[dict[bytes, bytes]]) -> bool:
    """Whether each commit's first parent (by its ``heads``) is the next one read (the
    last's: the head of the kept chain reached, or none)."""
    ids = walk.ids
    for i, h in enumerate(heads):
        parent = h.get(b"parent")
        if (parent.decode("ascii", "replace") if parent else None) != (
            ids[i + 1] if i + 1 < len(ids) else walk.reached
        ):
            return False
    return True


def _events(
    git: GitRepo, raws: list[bytes], heads: list[dict[bytes, bytes]], width: int
) -> tuple[list[bytes | None], list[str | None]] | None:
    """The ``event.json`` bytes of each commit (None: it has none) and what is wrong with
    it (:func:`_carried`): from its message when its tree is what the message says,
    else read from its tree, the trees and blobs in bulk; None when a tree or blob is not
    as it should be."""
    events: list[bytes | None] = []
    problems: list[str | None] = []
    unread: list[int] = []  # the commits whose event is read from their tree
    for i, (raw, h) in enumerate(zip(raws, heads, strict=True)):
        event, problem = _carried(raw, h.get(b"tree", b"").decode("ascii", "replace"))
        events.append(event)
        problems.append(problem)
        if event is None:
            unread.append(i)
    found = _tree_events(git, [heads[i] for i in unread], width)
    if found is None:
        return None
    for i, event in zip(unread, found, strict=True):
        events[i] = event
    return events, problems


def _tree_events(git: GitRepo, heads: list[dict[bytes, bytes]], width: int) -> list[bytes | None] | None:
    """The ``event.json`` bytes in the tree of each commit (by its headers; None: it has
    none), read in bulk; None when a tree or blob is not as it should be."""
    trees = git.read_raw_many(
        [h.get(b"tree", b"").decode("ascii", "replace") for h in heads], "tree", MAX_TREE_BYTES
    )
    if trees is None:
        return None
    try:
        blobs = [_entry_in(tree, width, b"event.json") for tree in trees]
    except (ValueError, IndexError):
        return None
    found = git.read_raw_many([b for b in blobs if b], "blob", MAX_EVENT_BYTES)
    if found is None:
        return None
    events = iter(found)
    return [next(events) if blob else None for blob in blobs]


Verdict = tuple[str | None, str]


def _verifying(batches: Iterable[list[bytes]], fmt: str) -> Generator[tuple[int, list[Verdict]], None, None]:
    """The verdicts (:func:`_check_commits`) of the raw commits of ``batches``, a list at a
    time with where it starts among them: every batch is taken from ``batches`` at the
    first, and the first is yielded once all are. In forked children where that is safe
    (:class:`_Forked`; the oldest commits, the last read, first, after an empty list),
    else on :data:`_VERIFY_WORKERS` threads (in order). Closing it stops what still runs."""
    if not _can_fork():
        check = functools.partial(_check_commits, object_format=fmt)
        offset = 0
        verdicts = bounded_map(check, batches, workers=_VERIFY_WORKERS, window=_LIMIT, name="uniflow-verify")
        for found in verdicts:
            yield offset, found
            offset += len(found)
        return
    forked = _Forked(fmt)
    try:
        for batch in batches:
            forked.add(batch)
        forked.start()
        if not forked.slices:
            return
        forked.prime()
        yield 0, []  # all read: the oldest slices verify while the caller reads the events
        for i in reversed(range(len(forked.slices))):
            yield forked.offsets[i], forked.collect(i)
    finally:
        forked.close()


def _can_fork() -> bool:
    """Whether verifying may fork: on Linux, and with no other thread running (one could
    hold a lock that the child, a copy of this process, would then wait on forever)."""
    return sys.platform == "linux" and hasattr(os, "fork") and threading.active_count() == 1


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ahead() -> int:
    """How many children :class:`_Forked` runs ahead of the slice it waits for: one more than
    the cores, so the oldest slices verify first and their events are checked while the
    newer ones verify (the same on any machine: the count never changes a verdict, only
    when it comes)."""
    return _cores() + 1


class _Forked:
    """Raw commits verified in forked children, :data:`_FORK_SLICE` commits each, so no
    verify shares the reading thread's GIL. The commits are read newest first and an
    evaluation wants the oldest first: a child starts as soon as its slice is read for the
    first ``ahead`` slices (a core is idle while the reading thread reads), the others once
    all are read, oldest first, at most ``ahead`` running beyond the slice collected
    (:meth:`collect`), so the oldest verdicts come first rather than all at the end. A child
    only computes its verdicts, writes them to its pipe and leaves by ``os._exit``; a slice
    whose child fails (or that cannot fork) is verified here when collected."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.ahead = _ahead()
        self.slices: list[list[bytes]] = []
        self.offsets: list[int] = []  # where each slice starts among the commits
        self._children: dict[int, tuple[int, int]] = {}  # slice -> (child pid, pipe); pid 0: here
        self._buffer: list[bytes] = []
        self._taken = 0

    def add(self, batch: list[bytes]) -> None:
        """Take ``batch``; a full slice is cut (and forked, among the first)."""
        self._buffer += batch
        if len(self._buffer) >= _FORK_SLICE:
            self.start()

    def start(self) -> None:
        """Cut a slice of the commits taken and not yet cut (if any); fork its child if it
        is among the first ``ahead``."""
        raws, self._buffer = self._buffer, []
        if not raws:
            return
        self.slices.append(raws)
        self.offsets.append(self._taken)
        self._taken += len(raws)
        if len(self.slices) <= self.ahead:
            self._fork(len(self.slices) - 1)

    def prime(self) -> None:
        """Every slice is cut: fork the children of the oldest ``ahead``."""
        for i in range(len(self.slices) - 1, max(len(self.slices) - 1 - self.ahead, -1), -1):
            self._fork(i)

    def _fork(self, i: int) -> None:
        """Fork the child of slice ``i`` unless it has one."""
        if i in self._children:
            return
        if not _can_fork():
            self._children[i] = (0, -1)
            return
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:
            _child(self.slices[i], self.fmt, read, write)  # never returns
        os.close(write)
        if pid < 0:
            os.close(read)
        self._children[i] = (max(pid, 0), read if pid > 0 else -1)

    def collect(self, i: int) -> list[Verdict]:
        """The verdicts of slice ``i`` (the oldest not collected: slices are collected from
        the last cut back to the first); the next ``ahead`` slices' children are started."""
        for j in range(i - 1, max(i - 1 - self.ahead, -1), -1):
            self._fork(j)
        self._fork(i)
        pid, fd = self._children.pop(i)
        found = _gather(pid, fd, len(self.slices[i])) if pid else None
        return found if found is not None else _check_commits(self.slices[i], self.fmt)

    def close(self) -> None:
        """Stop and reap the children not collected."""
        for pid, fd in self._children.values():
            if pid:
                os.close(fd)
                with contextlib.suppress(OSError):  # reaped already (SIGCHLD ignored)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        self._children.clear()


def _child(raws: list[bytes], fmt: str, read: int, write: int) -> None:
    """A forked child's whole life: verify ``raws``, write the verdicts, exit."""
    code = 1
    try:
        os.close(read)
        view = memoryview(msgpack.packb(_check_commits(raws, fmt), use_bin_type=True))
        while view:
            view = view[os.write(write, view) :]
        code = 0
    finally:
        os._exit(code)


def _gather(pid: int, fd: int, count: int) -> list[Verdict] | None:
    """The ``count`` verdicts child ``pid`` wrote to pipe ``fd`` (reaped); None when it
    failed, wrote anything else or did not finish within :data:`_CHILD_WAIT` seconds (it is
    killed then: a copy of this process could hang on a lock some native thread held when
    it was forked)."""
    chunks: list[bytes] = []
    finished = False
    try:
        finished = _read_until_eof(fd, chunks, time.monotonic() + _CHILD_WAIT)
    finally:
        os.close(fd)
        if not finished:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            status = os.waitpid(pid, 0)[1]
        except ChildProcessError:  # reaped by another (SIGCHLD ignored): its status is lost
            status = -1
    if not finished:
        return None
    if status == -1 or os.waitstatus_to_exitcode(status) != 0:
        return None
    try:
        found = msgpack.unpackb(b"".join(chunks), use_list=True)
    except (ValueError, msgpack.ExtraData):
        return None
    if not (isinstance(found, list) and len(found) == count):
        return None
    out: list[Verdict] = []
    for v in found:
        if not (isinstance(v, list) and len(v) == 2 and (v[0] is None or isinstance(v[0], str))):
            return None
        if not isinstance(v[1], str):
            return None
        out.append((v[0], v[1]))
    return out


def _read_until_eof(fd: int, chunks: list[bytes], deadline: float) -> bool:
    """Read pipe ``fd`` into ``chunks`` until its end (True) or ``deadline`` (False)."""
    while (left := deadline - time.monotonic()) > 0:  # bounded by the deadline
        if not select.select([fd], [], [], left)[0]:
            continue
        data = os.read(fd, 1 << 20)
        if not data:
            return True
        chunks.append(data)
    return False


def _check_commits(raws: list[bytes], object_format: str) -> list[Verdict]:
    """:func:`_check` of each raw commit's signature over its payload."""
    out = []
    for raw in raws:
        split = split_commit(raw, object_format)
        out.append(_check(split.signature, split.payload))
    return out


def read_signed_chain(
    git: GitRepo,
    head: str | None,
    model: str,
    cache: DerivedCache | None = None,
    *,
    meanwhile: Meanwhile | None = None,
    verified: Verified | None = None,
) -> list[SignedCommit]:
    """Every commit of the chain from ``head`` back to the first event, oldest first, each
    signature verified cryptographically (see the module). A missing or damaged object is an
    :class:`IntegrityError` naming the commit.

    ``meanwhile``, if given, is called (on this thread) with the events of a long chain once
    they are read and while their signatures still verify: work that needs the events but
    not the verdicts (parsing them) then overlaps the verification. It may not be called
    (a short chain, one from the derived cache): it is a head start, never the only way.

    ``verified``, if given, is called (on this thread) with the first commits of the chain,
    oldest first, then with the next ones, as the verdicts of a long chain come in, while
    the newer ones still verify: each call continues the previous one, and what it was
    handed is the start of what is returned. It too is a head start: the newest commits, or
    all of them, may never be handed over."""
    newest: list[SignedCommit] = []
    older: list[SignedCommit] = []
    reached: str | None = None
    sha = head
    listed = cache.keys(CHAIN_KIND) if cache is not None else set()  # one entry per model
    for n in range(_LIMIT):
        if not sha:
            break
        kept = _cached_chain(cache, model, sha) if sha in listed else None
        if kept is not None:
            older, reached = kept, sha
            break
        if n == _ONE_BY_ONE and (
            bulk := _read_rest(git, sha, model, listed, cache, _LIMIT - n, meanwhile, verified)
        ):
            newest += bulk[0]
            older, reached = bulk[1], bulk[2]
            break
        entry, sha = _read_commit(git, sha, model)
        newest.append(entry)
    newest.reverse()
    chain = older + newest
    if cache is not None and head and chain and reached != head:
        items = [[c.sha, c.time, c.event, c.key, c.signature, c.problem] for c in chain]
        cache.put(CHAIN_KIND, head, msgpack.packb([_FORMAT, model, items], use_bin_type=True))
        if reached is not None:
            cache.delete(CHAIN_KIND, reached)  # superseded: one entry per model
    return chain


def read_signed_tag(git: GitRepo, sha: str, cache: DerivedCache | None = None) -> SignedTag:
    """Version tag ``sha``, its signature verified cryptographically (kept in the cache)."""
    if cache is not None:
        d = cache.get_record(TAG_KIND, sha, _FORMAT, "", 6)
        if (
            d is not None
            and isinstance(d[2], int)
            and isinstance(d[3], str)
            and isinstance(d[5], str)
            and (d[4] is None or isinstance(d[4], str))
        ):
            return SignedTag(sha, d[2], d[3], d[4], d[5])
    try:
        raw = git.read_raw(sha, "tag", MAX_TAG_BYTES)
    except KeyError as exc:
        raise IntegrityError(f"version tag {sha[:12]}: git object missing") from exc
    except RepositoryError as exc:
        raise IntegrityError(f"version tag {sha[:12]}: {exc}") from exc
    heads = _headers(raw)
    split = split_tag(raw)
    key, line = _check(split.signature, split.payload)
    tag = SignedTag(sha, _time(heads.get(b"tagger")), heads.get(b"object", b"").decode("ascii"), key, line)
    if cache is not None:
        record = [_FORMAT, "", tag.time, tag.target, tag.key, tag.signature]
        cache.put(TAG_KIND, sha, msgpack.packb(record, use_bin_type=True))
    return tag
