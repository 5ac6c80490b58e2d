"""The per-model listing index: ``uniflow models list NAME`` reads one file and checks two stamps.

For each model, ``.git/uniflow/cache/git/listing/<h>/<h>`` (``h`` = BLAKE3 of the git directory
and the model name; a
:class:`~uniflow._records.objcache.DerivedCache` entry, so MAC'd with the per-user key) holds the
model's versions in semver order, each with its tag sha and what a listing shows of it
(framework, size, creation time, metrics), plus what it was built from:

* ``loose``: the stamp ``(st_dev, st_ino, st_mtime_ns, st_ctime_ns)`` of the loose-ref
  directory ``refs/tags/models/<model>`` (or "absent"). Git and dulwich create, replace and
  delete a loose ref through ``<ref>.lock`` + rename/unlink in that directory, so any such
  change moves the stamp. A directory modified less than
  :data:`~uniflow._records.refscan.RACY_NS` before it was read is "racy" (a second change in
  the same clock tick would leave its mtime unchanged, as with Git's racily clean index
  entries) and its stamp is not trusted: the next listing rescans.
* ``packed``: the BLAKE3 of the ``packed-refs`` lines under ``refs/tags/models/<model>/``
  (:func:`uniflow._records.refscan.packed_section`): ``git pack-refs``, or a ref deleted or added
  in ``packed-refs`` by anyone, changes it; changes to other models' refs do not.
* ``limits``: the digest of the ``[limits]`` the manifests were checked against.

A listing whose MAC, format, model name or any of the three does not match the repository as
it is now is never believed: the refs of the model are rescanned (``packed-refs`` section plus
every loose ref, read twice around a stable directory stamp, else not stored), rows of
unchanged ``(version, tag sha)`` pairs are kept (a tag sha fixes its manifest) and new ones
are derived through :meth:`VersionIndex.manifest`, the validating gate. The rows hold only
values taken from validated manifests. A fresh clone has no index; the first listing builds
it. A ref under ``refs/tags/models/<model>/`` that the gate refuses (a lightweight tag, a tag
on a blob or tree, a commit without a manifest, a manifest that fails the gate, a name that is
no version) is recorded as skipped with its sha and reason (:class:`Skipped`): one bad record
spoils only itself, and it is not read again until its sha changes. The file is replaced
atomically; a crash leaves the old one or none.

``uniflow models list NAME --json`` prints every field of every version, so beside each
listing a second entry (kind :data:`JSON_KIND`, same key, same MAC) holds, per
``(version, tag sha)``, the JSON text of its ``ModelVersion.to_dict()`` exactly as the list
prints it, cut around the stage (the only part not fixed by the tag): :meth:`ListingIndex.json_rows`.
It is believed only for the pairs of a listing obtained as above and for the same limits;
a pair it lacks is rendered from the manifest read through the gate, and the entry rewritten.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import msgpack

from .._errors import IntegrityError
from .._jsonable import dumps
from .._naming import version_sort_key
from .manifest import Manifest, to_model_version
from .objcache import DerivedCache
from .refs import tag_ref, tags_prefix
from .refscan import dir_stamp, is_racy, loose_refs_in, packed_section, parse_packed
from .versions import VersionIndex, is_version

__all__ = [
    "Listing",
    "ListingIndex",
    "Skipped",
    "skipped_notice",
    "KIND",
    "JSON_KIND",
    "listing_key",
    "json_list",
]

KIND = "listing"
JSON_KIND = "listingjson"
_FORMAT = 2  # 2: skipped records
_JSON_FORMAT = 1
#: where the stage value goes in a row rendered with an empty stage (``to_dict()`` puts
#: ``name`` and ``version``, validated names without quotes, before it, and a quote inside
#: a JSON string is always escaped, so the first match is the key itself)
_STAGE_MARK = '"stage": ""'
_ROW_INDENT = "\n  "  # a row is one level down in the list
_SCAN_ATTEMPTS = 3
_SHA_BYTES = 20
#: skipped records named in a listing's notice (``uniflow verify`` lists every one)
_NOTICE_MAX = 10
#: new versions inserted one by one into the stored order up to this many, else all sorted
_INSERT_MAX = 1000


def listing_key(git_dir: Path, model: str) -> str:
    """The 64-hex :class:`DerivedCache` key of ``model``'s listing in the repository at
    ``git_dir`` (registries read by URL share one cache directory, each has its own key)."""
    return blake3.blake3(b"uniflow-listing\x00" + os.fsencode(git_dir) + b"\x00" + model.encode()).hexdigest()


@dataclass(frozen=True)
class Rows:
    """What a listing shows of each version, in the order of :attr:`Listing.versions`."""

    framework: list[str]
    size: list[int]
    created: list[str]  # the manifest's created_at (ISO-8601)
    metrics: list[dict[str, Any]]


@dataclass(frozen=True)
class Skipped:
    """A ref under ``refs/tags/models/<model>/`` that is no version: its sha and why."""

    sha: str
    reason: str

    def notice(self, model: str, name: str) -> str:
        """``models/<model>/<name> (<reason>)``, as listings and pages show it."""
        return f"models/{model}/{name} ({self.reason})"


def skipped_notice(listing: Listing) -> str | None:
    """The one-line notice of a listing's skipped records, or None when there is none:
    ``1 unreadable record skipped: models/clf/v9.9.9 (a lightweight tag, ...)``."""
    items = sorted(listing.skipped.items())
    if not items:
        return None
    shown = "; ".join(s.notice(listing.model, n) for n, s in items[:_NOTICE_MAX])
    more = f" and {len(items) - _NOTICE_MAX} more" if len(items) > _NOTICE_MAX else ""
    noun = "record" if len(items) == 1 else "records"
    return f"{len(items)} unreadable {noun} skipped: {shown}{more} (uniflow verify lists them)"


class Listing:
    """The readable versions of one model in semver order, their tag shas, their :class:`Rows`
    (decoded on first use) and the refs under the model's tag prefix that are no readable
    version (:attr:`skipped`)."""

    __slots__ = ("model", "versions", "tags", "skipped", "_rows", "_blob")

    def __init__(
        self,
        model: str,
        versions: list[str],
        tags: bytes,
        rows: Rows | None,
        blob: bytes | None = None,
        skipped: dict[str, Skipped] | None = None,
    ):
        self.model = model
        self.versions = versions
        self.tags = tags  # 20 bytes per version
        #: refs directly under the model's tag prefix that are no readable version, by name
        self.skipped: dict[str, Skipped] = skipped or {}
        self._rows = rows
        self._blob = blob  # the stored, MAC-checked encoding of the rows, not decoded yet

    def __len__(self) -> int:
        return len(self.versions)

    def tag_sha(self, i: int) -> str:
        return self.tags[_SHA_BYTES * i : _SHA_BYTES * (i + 1)].hex()

    def shas(self) -> dict[str, str]:
        """``{version: tag sha}``."""
        return {v: self.tag_sha(i) for i, v in enumerate(self.versions)}

    @property
    def has_rows(self) -> bool:
        return self._rows is not None or self._blob is not None

    @property
    def rows(self) -> Rows:
        """The rows (ValueError when this listing was built without them)."""
        if self._rows is None and self._blob is not None:
            self._rows = _decode_rows(self._blob, len(self.versions))
            self._blob = None
        if self._rows is None:
            raise ValueError(f"the listing of {self.model!r} holds no rows")
        return self._rows


def _decode_rows(blob: bytes, n: int) -> Rows | None:
    try:
        d = msgpack.unpackb(blob, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not (isinstance(d, list) and len(d) == 4 and all(isinstance(c, list) and len(c) == n for c in d)):
        return None
    return Rows(*d)


@dataclass(frozen=True)
class _Stored:
    listing: Listing
    loose_ok: bool
    loose: list[int] | None
    packed: bytes
    limits: bytes


class ListingIndex:
    """Listings of one repository's models, kept in ``cache`` (none: always rescanned)."""

    def __init__(self, index: VersionIndex, cache: DerivedCache | None) -> None:
        self.index = index
        self.cache = cache

    def _limits(self) -> bytes:
        return blake3.blake3(repr(self.index.limits()).encode()).digest()

    def listing(self, model: str, *, section: bytes | None = None) -> Listing:
        """The versions of ``model`` (a valid model name) as its tag refs are now.

        Every ``(version, tag sha)`` not in the stored index is read once through the manifest
        gate, so a listing always has its rows and never lists a ref that is no version: those
        are in :attr:`Listing.skipped`, stored too, not read again while their sha stays.
        ``section``: the model's :func:`packed_section`, when the caller has read
        ``packed-refs`` already.
        """
        git_dir = self.index.git.git_dir
        prefix = tags_prefix(model)
        limits = self._limits()
        stored = self._load(model)
        stamp = dir_stamp(git_dir, prefix)
        if section is None:
            section = packed_section(git_dir, prefix)
        packed = blake3.blake3(section).digest()
        if (
            stored is not None
            and stored.loose_ok
            and stored.loose == (list(stamp) if stamp is not None else None)
            and stored.packed == packed
        ):  # the refs are as the index says
            listing = stored.listing
            if stored.limits == limits and _rows_ok(listing):
                return listing
            listing = self._build(model, _refs_of(listing), listing, False)  # rows, no rescan
            self._store(model, listing, True, stamp, packed, limits)
            return listing
        stable = False
        for _ in range(_SCAN_ATTEMPTS):  # loose refs read between two equal directory stamps
            refs = parse_packed(section, prefix, check=False)  # versions are validated in _build
            refs.update(loose_refs_in(git_dir, prefix))
            now = time.time_ns()
            after = dir_stamp(git_dir, prefix)
            if after == stamp:
                stable = True
                break
            stamp = after
            section = packed_section(git_dir, prefix)
            packed = blake3.blake3(section).digest()
        old = stored.listing if stored is not None else None
        old_rows = stored is not None and stored.limits == limits and _rows_ok(stored.listing)
        listing = self._build(model, refs, old, old_rows)
        if stable:
            racy = stamp is not None and is_racy(stamp[2], stamp[3], now)
            self._store(model, listing, not racy, stamp, packed, limits)
        return listing

    def _build(self, model: str, refs: dict[str, str], old: Listing | None, old_rows: bool) -> Listing:
        """The listing of ``refs``. The names of ``old`` (validated when it was built, MAC'd
        since) and, with ``old_rows``, its rows and skipped records are reused: a change costs
        what changed. Every other ``(version, tag sha)`` is read through the manifest gate; a
        ref that is no version (bad name, lightweight tag, tag on a blob, no or a bad manifest)
        is kept in :attr:`Listing.skipped`, not listed."""
        pos = {v: i for i, v in enumerate(old.versions)} if old is not None else {}
        before = old.skipped if old is not None and old_rows else {}
        skipped = {n: sk for n, sk in before.items() if refs.get(n) == sk.sha}
        for n, sha in refs.items():
            if n not in skipped and not is_version(n):
                skipped[n] = Skipped(sha, "not a version name")
        new = [v for v in refs if v not in pos and v not in skipped]
        if old is not None and len(new) <= _INSERT_MAX:
            versions = [v for v in old.versions if v in refs]  # still sorted
            for v in new:
                bisect.insort(versions, v, key=version_sort_key)
        else:
            versions = sorted([v for v in refs if v in pos] + new, key=version_sort_key)
        kept = old.rows if old is not None and old_rows else None
        out = Rows([], [], [], [])
        good: list[str] = []
        for v in versions:
            raw = bytes.fromhex(refs[v])
            j = pos.get(v)
            if (
                old is not None
                and kept is not None
                and j is not None
                and old.tags[_SHA_BYTES * j : _SHA_BYTES * (j + 1)] == raw
            ):
                row = (kept.framework[j], kept.size[j], kept.created[j], kept.metrics[j])
            else:
                try:
                    m = self.index.manifest(model, v, refs[v], memo=False)[1]
                except IntegrityError as exc:  # one bad record spoils only itself
                    skipped[v] = Skipped(refs[v], unreadable_reason(exc))
                    continue
                row = (m.framework, m.size, m.created_at, dict(m.metrics))
            good.append(v)
            out.framework.append(row[0])
            out.size.append(row[1])
            out.created.append(row[2])
            out.metrics.append(row[3])
        tags = b"".join([bytes.fromhex(refs[v]) for v in good])
        return Listing(model, good, tags, out, skipped=skipped)

    # ------------------------------------------------------------------ JSON rows
    def json_rows(self, model: str, listing: Listing) -> list[tuple[str, str]]:
        """Per version of ``listing`` (a listing returned by :meth:`listing`), ``(head, tail)``:
        the JSON text of its ``ModelVersion.to_dict()`` as an element of the indented list
        ``uniflow models list NAME --json`` prints, without the stage's value, which goes
        between the two (see :func:`json_list`). Rows of ``(version, tag sha)`` pairs already
        in the stored entry (under the same limits) are reused; others are rendered from the
        manifest, read through :meth:`VersionIndex.manifest`, and the entry is rewritten."""
        limits = self._limits()
        stored = self._load_json(model)
        if stored is not None and stored[0] == limits:
            _limits, versions, tags, heads, tails = stored
            if versions == listing.versions and tags == listing.tags:
                return list(zip(heads, tails, strict=True))
            old = {
                (v, tags[_SHA_BYTES * i : _SHA_BYTES * (i + 1)]): (heads[i], tails[i])
                for i, v in enumerate(versions)
            }
        else:
            old = {}
        out = []
        for i, v in enumerate(listing.versions):
            sha = listing.tags[_SHA_BYTES * i : _SHA_BYTES * (i + 1)]
            part = old.get((v, sha))
            if part is None:
                part = _json_parts(model, v, self.index.manifest(model, v, sha.hex(), memo=False)[1])
            out.append(part)
        if self.cache is not None:
            payload = [
                _JSON_FORMAT,
                model,
                limits,
                listing.versions,
                listing.tags,
                [h for h, _ in out],
                [t for _, t in out],
            ]
            self.cache.put(
                JSON_KIND,
                listing_key(self.index.git.git_dir, model),
                msgpack.packb(payload, use_bin_type=True),
            )
        return out

    def _load_json(self, model: str) -> tuple[bytes, list[str], bytes, list[str], list[str]] | None:
        if self.cache is None:
            return None
        key = listing_key(self.index.git.git_dir, model)
        d = self.cache.get_record(JSON_KIND, key, _JSON_FORMAT, model, 7)
        if d is None:
            return None
        _f, _m, limits, versions, tags, heads, tails = d
        n = len(versions) if isinstance(versions, list) else -1
        if not (
            isinstance(limits, bytes)
            and isinstance(tags, bytes)
            and len(tags) == _SHA_BYTES * n
            and isinstance(heads, list)
            and isinstance(tails, list)
            and len(heads) == n
            and len(tails) == n
            and all(isinstance(x, str) for x in versions)
            and all(isinstance(x, str) for x in heads)
            and all(isinstance(x, str) for x in tails)
        ):
            return None
        return limits, versions, tags, heads, tails

    # ------------------------------------------------------------------ the cache file
    def _load(self, model: str) -> _Stored | None:
        if self.cache is None:
            return None
        d = self.cache.get_record(KIND, listing_key(self.index.git.git_dir, model), _FORMAT, model, 10)
        if d is None:
            return None
        _f, _m, loose_ok, loose, packed, limits, versions, tags, bad, blob = d
        skipped = _decode_skipped(bad)
        if (
            not isinstance(loose_ok, bool)
            or not (loose is None or (isinstance(loose, list) and len(loose) == 4))
            or not isinstance(packed, bytes)
            or not isinstance(limits, bytes)
            or not isinstance(versions, list)
            or not isinstance(tags, bytes)
            or len(tags) != _SHA_BYTES * len(versions)
            or not (blob is None or isinstance(blob, bytes))
            or skipped is None
        ):
            return None
        listing = Listing(model, versions, tags, None, blob, skipped)
        return _Stored(listing, loose_ok, loose, packed, limits)

    def _store(
        self,
        model: str,
        listing: Listing,
        loose_ok: bool,
        stamp: tuple[int, int, int, int] | None,
        packed: bytes,
        limits: bytes,
    ) -> None:
        if self.cache is None:
            return
        blob = None
        if listing.has_rows:
            r = listing.rows
            blob = msgpack.packb([r.framework, r.size, r.created, r.metrics], use_bin_type=True)
        stamp_list = list(stamp) if stamp is not None else None
        bad = [[n, sk.sha, sk.reason] for n, sk in sorted(listing.skipped.items())]
        payload = [
            _FORMAT,
            model,
            loose_ok,
            stamp_list,
            packed,
            limits,
            listing.versions,
            listing.tags,
            bad,
            blob,
        ]
        self.cache.put(
            KIND, listing_key(self.index.git.git_dir, model), msgpack.packb(payload, use_bin_type=True)
        )


def _decode_skipped(bad: Any) -> dict[str, Skipped] | None:
    """The stored ``[[name, sha, reason], ...]`` of a listing, or None when malformed."""
    if not isinstance(bad, list):
        return None
    out: dict[str, Skipped] = {}
    for item in bad:
        if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)):
            return None
        out[item[0]] = Skipped(item[1], item[2])
    return out


def _refs_of(listing: Listing) -> dict[str, str]:
    """``{name: sha}`` of every ref the listing was built from (versions and skipped)."""
    refs = listing.shas()
    refs.update({n: s.sha for n, s in listing.skipped.items()})
    return refs


def unreadable_reason(exc: IntegrityError) -> str:
    """Why the gate refused a version, without the ``model ... version ... (tag ...)``
    context the message starts with (the notice names the ref itself)."""
    text = str(exc)
    head, sep, tail = text.partition("): ")
    return tail if sep and head.startswith("model ") else text


def _rows_ok(listing: Listing) -> bool:
    """The listing has rows and they decode (a stored blob that does not is rebuilt, like a
    missing one)."""
    if not listing.has_rows:
        return False
    try:
        return listing.rows is not None
    except ValueError:
        return False


def _json_parts(model: str, version: str, manifest: Manifest) -> tuple[str, str]:
    """``(head, tail)`` of the version's row (see :meth:`ListingIndex.json_rows`), rendered
    from its validated manifest exactly as ``echo_json([mv.to_dict(), ...])`` would."""
    mv = to_model_version(manifest, "", tag_ref(model, version))
    text = dumps(mv.to_dict()).replace("\n", _ROW_INDENT)
    cut = text.index(_STAGE_MARK) + len(_STAGE_MARK) - 2
    return text[:cut], text[cut + 2 :]


def json_list(rows: list[tuple[str, str, str]]) -> str:
    """The indented JSON list of rows ``(head, stage, tail)`` (:meth:`ListingIndex.json_rows`
    plus each version's stage): the text ``dumps([mv.to_dict(), ...])`` gives."""
    if not rows:
        return "[]"
    quoted: dict[str, str] = {}
    parts = []
    for head, stage, tail in rows:
        q = quoted.get(stage)
        if q is None:
            q = quoted[stage] = json.dumps(stage, ensure_ascii=False)
        parts.append(head + q + tail)
    return "[" + _ROW_INDENT + ("," + _ROW_INDENT).join(parts) + "\n]"
