"""A lifecycle chain and version tags read for signature checks: raw bytes, verified once.

Who signed a lifecycle commit depends on two things: whether its signature verifies over its
exact bytes (a fact of the commit alone), and whether the key is an allowed signer at the
commit's time (a fact of the policy in force, decided by the caller). This module computes
the first and keeps it: :func:`read_signed_chain` walks ``refs/uniflow/models/<model>`` by
first parents on the raw objects (``git cat-file`` bytes, checked to hash to their ids),
verifies each commit's SSH signature cryptographically, and returns one :class:`SignedCommit`
per commit (oldest first) with its ``event.json`` bytes. The result is kept in the derived
cache (MAC-ed, :mod:`uniflow._records.objcache`) under the head commit; a later walk stops at
the newest commit whose chain is kept, so verifying a long lifecycle again reads only the
new commits. :func:`read_signed_tag` does the same for a version tag, keyed by its id.

A long walk reads its first commits one by one, then the rest in bulk: loose commits walked
in-process, then the packed rest as one ``git rev-list --first-parent`` lists it, read a
slice at a time, and the trees and ``event.json`` blobs each by one read
(:meth:`~uniflow._records.git.GitRepo.read_raw_many`: loose objects in-process, packed ones
through one ``git cat-file --batch``), every object checked to hash to its id and every
parent link checked against the commits' own headers, so git is trusted with nothing. The
signatures verify on worker threads from the first batch of commits read, while the rest,
the trees and the events are read (and the caller's ``meanwhile`` parses the events).
Anything amiss (no git binary, a missing or damaged object) falls back to the one-by-one
walk, which names it.

Nothing here decides trust: a signature that verifies names only its key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import msgpack

from .._authority.gitsign import split_commit, split_tag
from .._authority.sshsig import GIT_NAMESPACE, PublicKey, parse_signature, verify_signature
from .._errors import IntegrityError, RepositoryError, SignatureError
from .._storage.parallel import bounded_map
from .git import GitRepo
from .lifecycle import MAX_EVENT_BYTES, commit_context
from .objcache import DerivedCache

__all__ = ["MAX_TAG_BYTES", "SignedCommit", "SignedTag", "read_signed_chain", "read_signed_tag"]

#: derived-cache kinds: a whole chain under its head, and one tag under its id
CHAIN_KIND = "signedchain"
TAG_KIND = "signedtag"
_FORMAT = 1
#: the largest lifecycle commit and version tag (its message is the model card) read
MAX_COMMIT_BYTES = 1 << 20
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
#: packed commits read by one ``git cat-file`` (verifying starts after the first slice)
_PACKED_SLICE = 2048
_LIMIT = 10_000_000

#: what :func:`read_signed_chain` hands its ``meanwhile`` callback: ``(commit id, event.json
#: bytes or None)`` of the commits read in bulk, newest first
Meanwhile = Callable[[list[tuple[str, bytes | None]]], None]


@dataclass(frozen=True)
class SignedCommit:
    """One lifecycle commit: its id, committer time (seconds), ``event.json`` bytes (None:
    absent), the key whose signature verifies over it (None: unsigned or not verifying) and
    one line on the signature (``unsigned``, ``signature by <fingerprint>``, or why not)."""

    sha: str
    time: int
    event: bytes | None
    key: str | None
    signature: str

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
    """The first value of each header of a commit or tag (up to the blank line)."""
    out: dict[bytes, bytes] = {}
    for line in raw.split(b"\n"):
        if not line:
            break
        name, _, value = line.partition(b" ")
        if not name.startswith(b" "):
            out.setdefault(name, value)
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
        blob = _tree_entry(git, heads.get(b"tree", b"").decode("ascii", "replace"), b"event.json")
        event = git.read_blob(blob, MAX_EVENT_BYTES, f"{context}: event.json") if blob else None
    except KeyError as exc:
        raise IntegrityError(f"{context}: git objects are missing") from exc
    except (RepositoryError, ValueError) as exc:
        raise IntegrityError(f"{context}: {exc}") from exc
    split = split_commit(raw, "sha256" if len(sha) == 64 else "sha1")
    key, line = _check(split.signature, split.payload)
    parent = heads.get(b"parent")
    return SignedCommit(sha, _time(heads.get(b"committer")), event, key, line), (
        parent.decode("ascii") if parent else None
    )


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
            and len(i) == 5
            and isinstance(i[0], str)
            and isinstance(i[1], int)
            and (i[2] is None or isinstance(i[2], bytes))
            and (i[3] is None or isinstance(i[3], str))
            and isinstance(i[4], str)
        ):
            return None
        out.append(SignedCommit(i[0], i[1], i[2], i[3], i[4]))
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
) -> tuple[list[SignedCommit], list[SignedCommit], str | None] | None:
    """The commits from ``sha`` back to the first (or to the newest whose chain is kept),
    newest first, read as :func:`_read_commit` reads each but in bulk (:func:`_walk`), their
    signatures verified on worker threads as they are read and while the trees and events
    are read (and ``meanwhile`` runs), with the kept chain and its head; None when they
    cannot be read so (the caller goes on one by one and names what is wrong)."""
    walk = _Walk()
    fmt = "sha256" if len(sha) == 64 else "sha1"
    check = functools.partial(_check_commits, object_format=fmt)
    batches = _walk(git, sha, model, listed, cache, limit, walk)
    checks = bounded_map(check, batches, workers=_VERIFY_WORKERS, window=_LIMIT, name="uniflow-verify")
    try:
        first = next(checks, None)  # every batch is queued: the workers verify while the rest is read
        heads = walk.heads
        if first is None or not walk.ok or not _linked(walk, heads):
            return None
        events = _events(git, heads, 32 if fmt == "sha256" else 20)
        if events is None:
            return None
        if meanwhile is not None:
            meanwhile(list(zip(walk.ids, events, strict=True)))
        verdicts = [v for batch in (first, *checks) for v in batch]
        entries = [
            SignedCommit(sha, _time(h.get(b"committer")), event, *verdict)
            for sha, h, event, verdict in zip(walk.ids, heads, events, verdicts, strict=True)
        ]
        return entries, walk.older, walk.reached
    finally:
        checks.close()  # returning early: the queued checks are cancelled


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


def _events(git: GitRepo, heads: list[dict[bytes, bytes]], width: int) -> list[bytes | None] | None:
    """The ``event.json`` bytes of each commit (by its headers; None: it has none), read in
    bulk; None when a tree or blob is not as it should be."""
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


def _check_commits(raws: list[bytes], object_format: str) -> list[tuple[str | None, str]]:
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
) -> list[SignedCommit]:
    """Every commit of the chain from ``head`` back to the first event, oldest first, each
    signature verified cryptographically (see the module). A missing or damaged object is an
    :class:`IntegrityError` naming the commit.

    ``meanwhile``, if given, is called (on this thread) with the events of a long chain once
    they are read and while their signatures still verify: work that needs the events but
    not the verdicts (parsing them) then overlaps the verification. It may not be called
    (a short chain, one from the derived cache): it is a head start, never the only way."""
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
        if n == _ONE_BY_ONE and (bulk := _read_rest(git, sha, model, listed, cache, _LIMIT - n, meanwhile)):
            newest += bulk[0]
            older, reached = bulk[1], bulk[2]
            break
        entry, sha = _read_commit(git, sha, model)
        newest.append(entry)
    newest.reverse()
    chain = older + newest
    if cache is not None and head and chain and reached != head:
        items = [[c.sha, c.time, c.event, c.key, c.signature] for c in chain]
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
