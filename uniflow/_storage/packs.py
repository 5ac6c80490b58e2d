"""Packs: many chunks in one file of about 80 MiB, with an index, named by content.

Writing a chunk as a file of its own costs a create, an fsync and a link per chunk (about
850 per GiB); a pack costs one of each per 80 MiB. Modelled on restic's pack format (blobs,
then a header describing them, at the end of the file) and Git's packs (a ``.pack`` and a
``.idx`` named by content, the index sorted by object name).

Terms: a *chunk* is named by the BLAKE3-256 of its bytes (its *name*); a *pack* holds chunks
back to back; its *index* maps each chunk name to ``(offset, length)`` in the pack; the
pack's *name* is the BLAKE3 checksum at the end of its index.

On disk, in ``<store>/packs/`` (``<store>`` is ``<git>/uniflow``)::

    <name>.pack                                      all integers little-endian
      0        8   magic  b"UFLPACK\\n"
      8        4   u32    format version (1)
      12       4   u32    0 (reserved)
      16       D   chunk bytes, back to back, in the order written (offsets below are absolute)
      16+D     I   the index: byte for byte the <name>.idx file
      16+D+I   8   u64    I
      24+D+I   8   magic  b"UFLPEND\\n"                  pack size S = 32 + D + I

    <name>.idx
      0        8   magic  b"UFLPIDX\\n"
      8        4   u32    format version (1)
      12       4   u32    0 (reserved)
      16       8   u64    n, the number of entries
      24       8   u64    S, the size of the pack file
      32       48n entries, strictly ascending by name: name (32 raw bytes), offset u64, length u64
      32+48n   32  BLAKE3-256 of bytes [0, 32+48n): the checksum, and the pack's name (hex)
                                                      index size I = 64 + 48n

The entries' ranges tile ``[16, 16+D)`` exactly: no gap, no overlap, every length at least
1. So the index fixes every byte of its pack (each chunk's bytes by their name, the rest by
the layout), and naming the pack by the index's checksum names it by content without
hashing its data a second time (Git names a pack by its object names the same way). The
index copy in the pack's tail makes a pack self-describing: a lost or never-written
``.idx`` is rebuilt from it (``packwriter.recover_packs``), and a blob remote can hold packs
alone.

Write order (``_storage.packwriter.PackWriter``), which leaves nothing torn: the pack is written to an
unnamed ``O_TMPFILE`` inode in ``packs/`` (or, where that is refused, a file in ``tmp/``
named with the writer's owner token, which ``gc`` removes once the writer is gone); its
index and tail are written; one ``fsync``; ``linkat`` to ``<name>.pack``; the index is
written to its own unnamed inode, one ``fsync``, ``linkat`` to ``<name>.idx``; then one
``fsync`` of ``packs/``. A name appears only on complete, durable bytes, so a crash leaves
at most a ``.pack`` without its ``.idx``: complete, and indexed again from its tail by the
next ``recover_packs``. Readers use a pack only when both files exist and agree.

Reading (:class:`PackReader`) trusts nothing on disk: an index larger than its pack allows
is refused before it is read, then its magic, version (a newer one is
:class:`NewerFormatError`: upgrade uniflow), checksum, name, pack size, order, duplicates and
ranges are checked (:class:`CorruptPackError`), and every chunk's bytes are hashed and
compared with the name it was asked for before they are returned or copied.

How ``ObjectStore`` uses them (format 3; ``docs/design.md``, "Packs (format 3) and gc"):

* **Where.** ``<git>/uniflow/packs/`` beside ``objects/`` (same file system as ``tmp/``).
  The store keeps a :class:`PackSet`: every complete pack's index read once into one map
  chunk name -> pack, refreshed when ``packs/`` changed, a bounded number of packs open;
  ``has``/``missing`` ask it after ``objects/`` (:meth:`PackSet.locate` checks the pack's
  file still exists: the existence check a register relies on), ``read_chunk`` and
  ``open_verified`` read through it. A pack gc removed is forgotten on the next refresh or
  on the :class:`MissingChunkError` its reopening raises, and the chunk is looked for in
  gc's sets (``_storage.repack.recover_set_aside``).
* **Register.** ``put_file`` hands each new chunk to a ``packwriter.PackStream`` (one per
  register: ``ObjectStore.batch``), finished before the manifest is recorded.
* **Pins and gc**: ``_storage.pins`` (a pack set aside whole) and ``_storage.repack``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from .._errors import CorruptChunkError, IntegrityError, MissingChunkError, RepositoryError
from .fsio import os_reason
from .ingest import read_full
from .safefs import NotRegularFile, open_regular

__all__ = [
    "FORMAT_VERSION",
    "PACK_TARGET",
    "CorruptPackError",
    "NewerFormatError",
    "PackEntry",
    "PackIndex",
    "PackReader",
    "PackScan",
    "PackSet",
    "check_name",
    "pack_dir",
    "raw_name",
    "read_pack_tail",
    "scan_packs",
]

FORMAT_VERSION = 1
#: a writer's pack is full once its chunk bytes reach this (one chunk may go past it): 13
#: packs per GiB, which a push sends as they are (with their indexes and a blob remote's
#: marker, 27 files per GiB; below s3fs's 100 MiB multipart threshold: one PUT each)
PACK_TARGET = 80 << 20
PACK_MAGIC = b"UFLPACK\n"
END_MAGIC = b"UFLPEND\n"
INDEX_MAGIC = b"UFLPIDX\n"
PACK_HEAD = struct.Struct("<8sII")  # magic, version, reserved: the pack's first 16 bytes
INDEX_HEAD = struct.Struct("<8sIIQQ")  # magic, version, reserved, n, pack size: 32 bytes
_ENTRY = struct.Struct("<32sQQ")  # name, offset, length: 48 bytes
PACK_TAIL = struct.Struct("<Q8s")  # index length, end magic: the pack's last 16 bytes
_SUM = 32
DATA_START = PACK_HEAD.size
#: bytes of a pack that are neither chunks nor index: header and tail
_FRAME = PACK_HEAD.size + PACK_TAIL.size
_HEX = frozenset("0123456789abcdef")
#: a listing made this long after the directory's last change is trusted until its stat
#: changes (longer than a coarse file-system clock tick, so a later change shows)
_SETTLED_NS = 100_000_000
#: entries of a refused index looked through to name the damaged pack holding a chunk
_MAX_LISTED = 1 << 16


class CorruptPackError(IntegrityError):
    """A pack or its index is malformed, forged, or does not belong to its pack."""


class NewerFormatError(RepositoryError):
    """Data written by a newer uniflow, in a format this one does not read: upgrade uniflow."""


@dataclass(frozen=True)
class PackEntry:
    """One chunk of a pack: its name (64 hex) and its byte range ``[offset, offset+length)``."""

    name: str
    offset: int
    length: int


def pack_dir(store_root: Path) -> Path:
    """Where a store keeps its packs."""
    return Path(store_root) / "packs"


def check_name(name: str, what: str) -> bytes:
    if len(name) != 64 or not _HEX.issuperset(name):
        raise IntegrityError(f"invalid {what} {name!r}: expected 64 lowercase hex characters")
    return bytes.fromhex(name)


def _bad(pack: str, reason: str) -> CorruptPackError:
    return CorruptPackError(f"pack {pack[:16]}: {reason}")


def _check_version(version: int, pack: str, what: str) -> None:
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"pack {pack[:16]}: this {what} was written by a newer uniflow (format {version}, "
            f"this uniflow reads up to {FORMAT_VERSION}); upgrade uniflow"
        )
    if version < 1:
        raise _bad(pack, f"{what} has invalid format version {version}")


class PackIndex:
    """A parsed, validated index: chunk name -> range in the pack. Immutable."""

    def __init__(self, raw: bytes, pack_size: int, ranges: dict[bytes, tuple[int, int]]) -> None:
        self.raw = raw  # the exact bytes of the .idx (and of the pack's tail copy)
        self.pack_size = pack_size
        self.name = raw[-_SUM:].hex()
        self._ranges = ranges

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, ranges: dict[bytes, tuple[int, int]], data_end: int) -> PackIndex:
        """The index of a pack whose chunk bytes end at ``data_end`` (``ranges``: raw name ->
        (offset, length), tiling ``[16, data_end)``)."""
        n = len(ranges)
        size = data_end + INDEX_HEAD.size + n * _ENTRY.size + _SUM + PACK_TAIL.size
        body = bytearray(INDEX_HEAD.pack(INDEX_MAGIC, FORMAT_VERSION, 0, n, size))
        for name in sorted(ranges):
            body += _ENTRY.pack(name, *ranges[name])
        body += blake3.blake3(body).digest()
        return cls(bytes(body), size, dict(ranges))

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, raw: bytes, pack_size: int, name: str) -> PackIndex:
        """Validate the bytes of pack ``name``'s index against the pack's size; every flaw is
        a :class:`CorruptPackError` (a newer format: :class:`NewerFormatError`)."""
        if len(raw) < INDEX_HEAD.size + _SUM:
            raise _bad(name, f"index of {len(raw)} bytes is too short")
        magic, version, reserved, n, size = INDEX_HEAD.unpack_from(raw)
        if magic != INDEX_MAGIC:
            raise _bad(name, "index has a bad magic number (not a uniflow pack index)")
        _check_version(version, name, "pack index")
        if reserved:
            raise _bad(name, "index has non-zero reserved bits")
        if len(raw) != INDEX_HEAD.size + n * _ENTRY.size + _SUM:
            raise _bad(name, f"index claims {n} entries but holds {len(raw)} bytes")
        if blake3.blake3(memoryview(raw)[:-_SUM]).digest() != raw[-_SUM:]:
            raise _bad(name, "index checksum mismatch")
        if raw[-_SUM:].hex() != name:
            raise _bad(name, f"index belongs to pack {raw[-_SUM:].hex()[:16]}, not to this one")
        if size != pack_size:
            raise _bad(name, f"index describes a pack of {size} bytes, the pack has {pack_size}")
        ranges = _parse_entries(raw, n, name)
        _check_tiling(ranges, pack_size - PACK_TAIL.size - len(raw), name)
        return cls(raw, pack_size, ranges)

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self._ranges)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and len(name) == 64 and raw_name(name) in self._ranges

    def lookup(self, name: str) -> PackEntry | None:
        """The entry of chunk ``name`` (64 hex), or None if this pack does not hold it."""
        found = self._ranges.get(raw_name(name)) if len(name) == 64 else None
        return None if found is None else PackEntry(name, *found)

    def entries(self) -> Iterator[PackEntry]:
        """Every entry, in name order (for gc's live-share count and repack)."""
        for raw in sorted(self._ranges):
            yield PackEntry(raw.hex(), *self._ranges[raw])

    def has_raw(self, raw: bytes) -> bool:
        """True if the pack holds the chunk named by 32 raw bytes."""
        return raw in self._ranges

    def raw_names(self) -> Iterator[bytes]:
        """The chunk names as 32 raw bytes, in no particular order."""
        return iter(self._ranges)

    @property
    def data_bytes(self) -> int:
        """The bytes of chunk data the pack holds."""
        return sum(length for _, length in self._ranges.values())


def raw_name(name: str) -> bytes:
    try:
        return bytes.fromhex(name)
    except ValueError:
        return b""


def _parse_entries(raw: bytes, n: int, pack: str) -> dict[bytes, tuple[int, int]]:
    """The entries, refused unless strictly ascending by name."""
    ranges: dict[bytes, tuple[int, int]] = {}
    prev = b""
    for name, offset, length in _ENTRY.iter_unpack(memoryview(raw)[INDEX_HEAD.size : -_SUM]):
        if name == prev:
            raise _bad(pack, f"index names chunk {name.hex()[:16]} twice")
        if name < prev:
            raise _bad(pack, f"index entries are not sorted by name (at chunk {name.hex()[:16]})")
        prev = name
        ranges[name] = (offset, length)
    if len(ranges) != n:  # unreachable after the size check; kept as the invariant
        raise _bad(pack, "index entry count does not match")
    return ranges


def _check_tiling(ranges: dict[bytes, tuple[int, int]], data_end: int, pack: str) -> None:
    """Refuse ranges that leave the chunk area, overlap, leave a gap, or are empty."""
    pos = DATA_START
    for offset, length, name in sorted((o, ln, nm) for nm, (o, ln) in ranges.items()):
        if length < 1:
            raise _bad(pack, f"chunk {name.hex()[:16]} has an empty range")
        if offset < DATA_START:
            raise _bad(pack, f"chunk {name.hex()[:16]} lies before the pack's data")
        if offset + length > data_end:
            raise _bad(pack, f"chunk {name.hex()[:16]} lies past the end of the pack's data")
        if offset < pos:
            raise _bad(pack, f"chunk {name.hex()[:16]} overlaps the chunk before it")
        if offset > pos:
            raise _bad(pack, f"bytes {pos}..{offset} of the pack belong to no chunk")
        pos = offset + length
    if pos != data_end:
        raise _bad(pack, f"bytes {pos}..{data_end} of the pack belong to no chunk")


# ---------------------------------------------------------------------- reading
def _open_regular(path: Path, pack: str) -> int:
    """``path`` opened read-only, never through a symbolic link, never waiting on a FIFO or
    device (:func:`~uniflow._storage.safefs.open_regular`); it must be a regular file."""
    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        raise _bad(pack, f"{path.name} is a {exc.what}, not a regular file") from None
    except OSError as exc:
        raise RepositoryError(f"cannot open {path}: {os_reason(exc)}") from exc
    if fd is None:
        raise MissingChunkError(f"pack {pack[:16]}: {path.name} is missing", pack)
    return fd


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    buf = bytearray(size)
    with memoryview(buf) as view:
        got = read_full(fd, view, offset)
    if got != size:
        raise OSError(errno.EIO, "file shorter than expected")
    return bytes(buf)


def _read_index(idx_fd: int, pack_size: int, pack: str) -> PackIndex:
    """Read and validate the index open as ``idx_fd``; refused unread if it is larger than a
    pack of ``pack_size`` bytes can describe (it is stored in the pack as well)."""
    size = os.fstat(idx_fd).st_size
    if size > pack_size - _FRAME or size < INDEX_HEAD.size + _SUM:
        raise _bad(pack, f"index of {size} bytes cannot describe a pack of {pack_size} bytes")
    return PackIndex.parse(_pread_exact(idx_fd, size, 0), pack_size, pack)


def _check_frame(fd: int, index: PackIndex) -> None:
    """The pack's header and tail: magic numbers, version, and the index copy."""
    magic, version, reserved = PACK_HEAD.unpack(_pread_exact(fd, PACK_HEAD.size, 0))
    if magic != PACK_MAGIC:
        raise _bad(index.name, "pack has a bad magic number (not a uniflow pack)")
    _check_version(version, index.name, "pack")
    if reserved:
        raise _bad(index.name, "pack has non-zero reserved bits")
    size = len(index.raw)
    tail = _pread_exact(fd, size + PACK_TAIL.size, index.pack_size - size - PACK_TAIL.size)
    if PACK_TAIL.unpack_from(tail, size) != (size, END_MAGIC) or tail[:size] != index.raw:
        raise _bad(index.name, "the index stored in the pack differs from its .idx file")


class PackReader:
    """One complete pack, opened and validated; reads verified chunks (thread-safe: ``pread``).

    Use as a context manager, or call :meth:`close`."""

    def __init__(self, store_root: Path, name: str, index: PackIndex | None = None) -> None:
        """Open pack ``name``; ``index``: its index as already read and validated (by a
        :class:`PackSet`), so only the pack itself is checked against it."""
        check_name(name, "pack name")
        directory = pack_dir(store_root)
        self.name = name
        self._fd = _open_regular(directory / f"{name}.pack", name)
        try:
            pack_size = os.fstat(self._fd).st_size
            if index is None:
                idx_fd = _open_regular(directory / f"{name}.idx", name)
                try:
                    index = _read_index(idx_fd, pack_size, name)
                finally:
                    os.close(idx_fd)
            elif index.name != name or index.pack_size != pack_size:
                raise _bad(name, f"the pack has {pack_size} bytes, its index describes {index.pack_size}")
            self.index = index
            _check_frame(self._fd, self.index)
        except OSError as exc:
            os.close(self._fd)
            raise RepositoryError(f"cannot read pack {name[:16]}: {os_reason(exc)}") from exc
        except BaseException:
            os.close(self._fd)
            raise
        # a reader never closed (a store, a registry dropped without close()) still closes its
        # descriptor when collected: an unlinked pack's space is freed, and no process runs out
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            self._closer()  # closes the descriptor, once
            self._fd = -1

    def _entry(self, name: str) -> PackEntry:
        entry = self.index.lookup(name)
        if entry is None:
            raise MissingChunkError(f"chunk {name[:16]} is not in pack {self.name[:16]}", name)
        return entry

    def _check(self, entry: PackEntry, data: bytes | memoryview) -> None:
        if len(data) != entry.length or blake3.blake3(data).hexdigest() != entry.name:
            raise CorruptChunkError(
                f"chunk {entry.name[:16]} in pack {self.name[:16]} is corrupted (digest mismatch)",
                entry.name,
            )

    def read_chunk(self, name: str) -> bytes:
        """The bytes of chunk ``name``, hashed and compared with ``name`` first."""
        entry = self._entry(name)
        data = os.pread(self._fd, entry.length, entry.offset)
        while 0 < len(data) < entry.length:  # bounded: each read makes progress or ends it
            more = os.pread(self._fd, entry.length - len(data), entry.offset + len(data))
            if not more:
                break  # the pack shrank: the length check below refuses it
            data += more
        self._check(entry, data)
        return data

    def read_into(self, name: str, buf: bytearray) -> tuple[memoryview, int]:
        """Chunk ``name`` read into ``buf`` (a new buffer when it does not fit) and verified:
        ``(view of its bytes, its offset in the pack)``; the caller releases the view."""
        entry = self._entry(name)
        if len(buf) < entry.length:
            buf = bytearray(entry.length)
        view = memoryview(buf)[: entry.length]
        got = read_full(self._fd, view, entry.offset)
        try:
            self._check(entry, view[:got])
        except BaseException:
            view.release()
            raise
        return view, entry.offset

    @property
    def fd(self) -> int:
        """The pack's open descriptor (valid while the reader is open)."""
        return self._fd

    def iter_chunks(self, names: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
        """``(name, verified bytes)`` of the chunks named in ``names`` (all by default), in
        the order they lie in the pack (what a repack copies)."""
        for entry in sorted(self.index.entries(), key=lambda e: e.offset):
            if names is None or entry.name in names:
                yield entry.name, self.read_chunk(entry.name)

    def copy_chunk_into(self, name: str, out_fd: int, offset: int, buf: bytearray | None = None) -> int:
        """Write chunk ``name`` at ``offset`` of ``out_fd``; the bytes written are the ones read
        and verified (``pread`` into ``buf``, reused when it is large enough; hash; ``pwrite``).
        Returns the chunk's length."""
        entry = self._entry(name)
        if buf is None or len(buf) < entry.length:
            buf = bytearray(entry.length)
        with memoryview(buf) as whole, whole[: entry.length] as view:
            self._check(entry, view[: read_full(self._fd, view, entry.offset)])
            done = 0
            while done < entry.length:  # bounded: each write makes progress or raises
                with view[done:] as rest:
                    done += os.pwrite(out_fd, rest, offset + done)
        return entry.length


# ---------------------------------------------------------------------- scanning
@dataclass
class PackScan:
    """What :func:`scan_packs` found in ``packs/``."""

    #: names with a valid ``.pack`` and ``.idx``
    complete: list[str]
    #: ``.pack`` files without their ``.idx`` (a writer in flight, or one killed before the
    #: index: complete, recoverable from the tail)
    unindexed: list[str]
    #: ``.idx`` files without their ``.pack`` (a pack removed, e.g. by a gc killed meanwhile)
    orphan_indexes: list[str]
    #: pairs that fail validation, with the reason (never used; gc reports them)
    invalid: dict[str, str]
    #: anything else in the directory (file names)
    other: list[str]


def scan_packs(store_root: Path) -> PackScan:
    """Classify every file in ``<store_root>/packs/``, validating each complete pair."""
    scan = PackScan([], [], [], {}, [])
    try:
        names = sorted(os.listdir(pack_dir(store_root)))
    except FileNotFoundError:
        return scan
    present = set(names)
    for file in names:
        stem, _, ext = file.partition(".")
        if ext not in ("pack", "idx") or len(stem) != 64 or not _HEX.issuperset(stem):
            scan.other.append(file)
        elif ext == "idx":
            if f"{stem}.pack" not in present:
                scan.orphan_indexes.append(stem)
        elif f"{stem}.idx" not in present:
            scan.unindexed.append(stem)
        else:
            try:
                PackReader(store_root, stem).close()
                scan.complete.append(stem)
            except (IntegrityError, RepositoryError) as exc:
                scan.invalid[stem] = str(exc)
    return scan


def read_pack_tail(store_root: Path, name: str, directory: Path | None = None) -> PackIndex:
    """The index stored in pack ``name``'s own tail, validated like an ``.idx``; the pack is
    looked for in ``directory`` (default: the store's ``packs/``; a gc's set holds packs too)."""
    check_name(name, "pack name")
    fd = _open_regular((directory or pack_dir(store_root)) / f"{name}.pack", name)
    try:
        size = os.fstat(fd).st_size
        if size < _FRAME + INDEX_HEAD.size + _SUM:
            raise _bad(name, f"pack of {size} bytes is too short")
        length, magic = PACK_TAIL.unpack(_pread_exact(fd, PACK_TAIL.size, size - PACK_TAIL.size))
        if magic != END_MAGIC:
            raise _bad(name, "pack has a bad end marker")
        if length > size - _FRAME:
            raise _bad(name, f"index of {length} bytes cannot describe a pack of {size} bytes")
        index = PackIndex.parse(_pread_exact(fd, length, size - PACK_TAIL.size - length), size, name)
        _check_frame(fd, index)
        return index
    except OSError as exc:
        raise RepositoryError(f"cannot read pack {name[:16]}: {os_reason(exc)}") from exc
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- a store's packs
def _complete_names(store_root: Path) -> set[str]:
    """Names that have both a ``.pack`` and an ``.idx`` (unvalidated)."""
    try:
        files = set(os.listdir(pack_dir(store_root)))
    except FileNotFoundError:
        return set()
    return {
        f[:64]
        for f in files
        if f.endswith(".idx") and len(f) == 68 and _HEX.issuperset(f[:64]) and f"{f[:64]}.pack" in files
    }


class PackSet:
    """Every complete pack of a store, as ``ObjectStore`` would read them: a map chunk name ->
    pack built from each index (validated once), and at most ``max_open`` packs open at a time
    (a pack in use is never closed under its reader). Thread-safe. A chunk not found makes it
    look once for packs that appeared since (another process's register or pull).

    ``invalid`` holds the packs refused, with the reason (their chunks are not served)."""

    def __init__(self, store_root: Path, *, max_open: int = 64) -> None:
        self._root = Path(store_root)
        self._max_open = max(1, max_open)
        self._lock = threading.Lock()
        self._where: dict[bytes, str] = {}
        self._indexes: dict[str, PackIndex] = {}
        self._open: OrderedDict[str, PackReader] = OrderedDict()
        self._users: dict[str, int] = {}
        self.invalid: dict[str, str] = {}
        self._seen: tuple[int, int, int] | None = None  # packs/ as last listed
        self._refreshing = threading.Lock()

    def refresh(self, *, force: bool = True) -> int:
        """Read the indexes of the complete packs not seen yet; how many were added. Unless
        ``force``, nothing is listed when ``packs/`` is unchanged since the last listing (its
        modification time settled: a change within the same clock tick is not missed). One
        refresh at a time: a caller arriving meanwhile waits and then sees its result."""
        with self._refreshing:
            try:
                st = os.stat(pack_dir(self._root))
            except FileNotFoundError:
                return 0
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
            if not force and seen == self._seen:
                return 0
            added = self._read_new()
            self._seen = seen if time.time_ns() - st.st_mtime_ns > _SETTLED_NS else None
            return added

    def _read_new(self) -> int:
        """List ``packs/``: forget the packs gone, read the new ones; how many were added."""
        complete = _complete_names(self._root)
        for gone in self._indexes.keys() - complete:
            self.forget(gone)  # removed (or set aside) by a gc since it was read
        added = 0
        for name in sorted(complete - self._indexes.keys() - self.invalid.keys()):
            try:
                reader = PackReader(self._root, name)
            except (IntegrityError, RepositoryError) as exc:
                self.invalid[name] = str(exc)
                continue
            with self._lock:
                self._indexes[name] = reader.index
                for raw in reader.index.raw_names():
                    self._where.setdefault(raw, name)
                self._open[name] = reader
                self._users.setdefault(name, 0)
                self._evict()
            added += 1
        return added

    @property
    def root(self) -> Path:
        """The store whose packs these are."""
        return self._root

    def pack_of(self, name: str, *, refresh: bool = True) -> str | None:
        """The pack holding chunk ``name`` (64 hex), or None; with ``refresh``, a miss looks
        for packs that appeared since first."""
        raw = raw_name(name)
        found = self._where.get(raw)
        if found is None and refresh:
            self.refresh(force=False)  # (another thread's refresh may be the one that found it)
            found = self._where.get(raw)
        return found

    def locate(self, name: str, *, refresh: bool = True) -> str | None:
        """:meth:`pack_of`, checked against the file system: the pack's ``.pack`` exists now
        (one ``stat``). A pack found gone (a gc removed it) is forgotten and the chunk looked
        for again. This is the existence check a register relies on after pinning a chunk."""
        for _ in range(2):  # bounded: the second round finds the chunk elsewhere or not at all
            pack = self.pack_of(name, refresh=refresh)
            if pack is None:
                return None
            if os.path.exists(pack_dir(self._root) / f"{pack}.pack"):
                return pack
            self.forget(pack)
        return None

    def forget(self, pack: str) -> None:
        """Drop a pack found gone from the map (its chunks are looked up in the other packs;
        it is read again by :meth:`refresh` if it comes back)."""
        with self._lock:
            index = self._indexes.pop(pack, None)
            if index is None:
                return
            if not self._users.get(pack):  # else closed by a later eviction, once unused
                reader = self._open.pop(pack, None)
                if reader is not None:
                    reader.close()
            for raw in index.raw_names():
                if self._where.get(raw) == pack:
                    other = next((n for n, i in self._indexes.items() if i.has_raw(raw)), None)
                    if other is None:
                        del self._where[raw]
                    else:
                        self._where[raw] = other

    def damaged_holder(self, name: str) -> tuple[str, str] | None:
        """``(pack, why it was refused)`` for a refused pack whose ``.idx`` lists chunk
        ``name``: the chunk is there but cannot be trusted (None if no refused pack names it)."""
        raw = raw_name(name)
        for pack, reason in sorted(self.invalid.items()):
            try:
                with open(pack_dir(self._root) / f"{pack}.idx", "rb") as f:
                    data = f.read(INDEX_HEAD.size + _MAX_LISTED * _ENTRY.size)
            except OSError:
                continue
            body = memoryview(data)[INDEX_HEAD.size :]
            usable = len(body) - len(body) % _ENTRY.size
            if any(entry[0] == raw for entry in _ENTRY.iter_unpack(body[:usable])):
                return pack, reason
        return None

    def lookup(self, name: str) -> PackEntry | None:
        """Chunk ``name``'s entry in the pack holding it (unverified), or None."""
        pack = self.pack_of(name)
        index = self._indexes.get(pack) if pack is not None else None
        return index.lookup(name) if index is not None else None

    def indexes(self) -> dict[str, PackIndex]:
        """Every pack read so far (call :meth:`refresh` first for all of them), by name."""
        with self._lock:
            return dict(self._indexes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.pack_of(name) is not None

    @contextlib.contextmanager
    def _using(self, name: str) -> Iterator[PackReader]:
        reader = None
        for _ in range(2):  # bounded: a pack found gone is forgotten, then one more look
            pack = self.pack_of(name)
            if pack is None:
                break
            try:
                reader = self._acquire(pack)
                break
            except MissingChunkError:
                self.forget(pack)  # removed by a gc since its index was read
        if reader is None:
            raise MissingChunkError(f"chunk {name[:16]} is in no pack of the store", name)
        try:
            yield reader
        finally:
            with self._lock:
                self._users[reader.name] -= 1
                self._evict()

    def _acquire(self, pack: str) -> PackReader:
        """Pack ``pack``'s reader, opened if needed, counted as in use."""
        with self._lock:
            reader = self._open.get(pack)
            if reader is None:
                index = self._indexes.get(pack)
                if index is None:
                    raise MissingChunkError(f"pack {pack[:16]} was removed", pack)
                reader = self._open[pack] = PackReader(self._root, pack, index)
            self._open.move_to_end(pack)
            self._users[pack] = self._users.get(pack, 0) + 1
            return reader

    @contextlib.contextmanager
    def open_verified(self, name: str, buf: bytearray) -> Iterator[tuple[memoryview, int, int]]:
        """Chunk ``name`` read into ``buf`` (see :meth:`PackReader.read_into`) and verified:
        yields ``(bytes, the pack's descriptor, their offset in it)``, valid in the block."""
        with self._using(name) as reader:
            view, offset = reader.read_into(name, buf)
            try:
                yield view, reader.fd, offset
            finally:
                view.release()

    def _evict(self) -> None:
        """Close the least recently used packs nobody reads, down to ``max_open``."""
        for pack in [p for p in self._open if not self._users[p]]:
            if len(self._open) <= self._max_open:
                break
            self._open.pop(pack).close()

    def read_chunk(self, name: str) -> bytes:
        """The verified bytes of chunk ``name`` (see :meth:`PackReader.read_chunk`)."""
        with self._using(name) as reader:
            return reader.read_chunk(name)

    def copy_chunk_into(self, name: str, out_fd: int, offset: int, buf: bytearray | None = None) -> int:
        """See :meth:`PackReader.copy_chunk_into`."""
        with self._using(name) as reader:
            return reader.copy_chunk_into(name, out_fd, offset, buf)

    @property
    def open_count(self) -> int:
        """Packs open now."""
        return len(self._open)

    def close(self) -> None:
        """Close every pack (the set can be used again: packs reopen on demand)."""
        with self._lock:
            for reader in self._open.values():
                reader.close()
            self._open.clear()
