"""Files written from verified chunks, checked again without waste.

Two kinds of file hold a stored file's bytes outside the chunk store: the store's cached
copies (``cache/files/<ab>/<digest>``, what a load links and an export copies) and the
outputs ``uniflow get`` writes. Both are written from chunks each verified against its
name as it is read. This module is how such a file is trusted again later:

* :func:`holds_chunks` checks an open file against a record's chunk list: each range
  ``[offset, offset + size)`` is read and hashed, and must be the chunk named there (the
  ranges are hashed on two threads, a few chunks at a time: bounded memory). It holds for
  every manifest format, because the chunk list is what every format records: a format-3
  file digest is a Merkle identity over the chunk names (``_storage.merkle``, checked
  against the chunk list when the manifest is read), not a hash of the bytes, and a
  format-1/2 digest is the whole file's BLAKE3, which names the same bytes the chunks do.
* :class:`StampBook` keeps, per cached file, a record of the file's stamp (device, inode,
  size, mtime, ctime: ``ingest.fd_stamp``) taken when it was written or last checked,
  with the file digest and the boot it was taken in, MAC-ed with a per-user key. A use
  that finds the stamp unchanged trusts the file without reading it; any write,
  truncation, ``chmod`` or replacement changes the stamp (mtime, ctime, inode), and then
  the file is checked again with :func:`holds_chunks`. One change is let through: a link
  removed (a get's output kept as the cache's copy is a hard link to it, and the user
  deleting that output moves the ctime too). A record whose file has the same device,
  inode, size and mtime and fewer links than recorded is still trusted: removing a name
  changes no byte, and a write moves the mtime, which only the file's owner can set back
  (who can read the key and forge a record anyway). After a reboot every record is void
  (a crash may have lost bytes that the stamp does not show): the file is checked once.

A record is ``<stamps>/<ab>/<digest>``: a 32-byte MAC, then the payload (a format byte,
the 16-byte boot id, the stamp as five unsigned 64-bit integers, and the link count). It is hostile
input like everything in the store: read bounded (one byte more than a record), of
exact length, from a regular file opened without following links, and ignored (then
removed) when its MAC does not verify. The key is the caller's (``ObjectStore`` is given
``_records.objcache.load_key``, the per-user key kept outside every repository); with no
key there are no records, and every use checks the bytes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import blake3

from .. import _testhooks
from .._naming import validate_digest
from .chunking import CHUNK_PARAMS, FileRecord, chunk_digest
from .fsio import force_unlink
from .ingest import fd_stamp, read_full
from .parallel import ThreadBuffers, bounded_map
from .pins import tmp_name
from .safefs import first_link

__all__ = ["StampBook", "holds_chunks"]

#: threads hashing chunk ranges, and ranges pending at once (each holds one chunk's bytes)
_WORKERS = 2
_WINDOW = 4
#: the most bytes held per thread while a range is hashed (memory stays bounded whatever
#: sizes a record claims)
_PIECE = CHUNK_PARAMS["max_size"]
_BUFFERS = ThreadBuffers(_PIECE)

_FORMAT = 1
_MAC_LEN = 32
_PAYLOAD = struct.Struct("<B16s6Q")
_RECORD_LEN = _MAC_LEN + _PAYLOAD.size
_DOMAIN = b"uniflow-verified-stamp-v1\x00"
KeyFn = Callable[[], "bytes | None"]


def holds_chunks(fd: int, rec: FileRecord) -> bool:
    """True if the open regular file ``fd`` holds exactly ``rec``'s chunks in order: its
    size is ``rec.size``, the chunk sizes add up to it, and the bytes at each chunk's range
    hash to that chunk's name. Read with ``pread`` (never mapped: a file truncated meanwhile
    is only not a match), ranges hashed on :data:`_WORKERS` threads."""
    _testhooks.point("verify-chunks")
    if sum(c.size for c in rec.chunks) != rec.size or os.fstat(fd).st_size != rec.size:
        return False

    def located() -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        offset = 0
        for c in rec.chunks:
            out.append((offset, c.size, c.digest))
            offset += c.size
        return out

    def one(item: tuple[int, int, str]) -> bool:
        offset, size, name = item
        if size <= _PIECE:
            with memoryview(_BUFFERS.get(size))[:size] as view:
                return read_full(fd, view, offset) == size and chunk_digest(view) == name
        h = blake3.blake3()  # a chunk longer than any this version cuts: hashed a piece at a time
        with memoryview(_BUFFERS.get(_PIECE)) as whole:
            for at in range(offset, offset + size, _PIECE):
                n = min(_PIECE, offset + size - at)
                with whole[:n] as view:
                    if read_full(fd, view, at) != n:
                        return False
                    h.update(view)
        return h.hexdigest() == name

    try:
        ok = all(bounded_map(one, located(), workers=_WORKERS, window=_WINDOW, name="uniflow-check"))
    except OSError:
        return False
    return ok and not os.pread(fd, 1, rec.size)


def _boot_id() -> bytes:
    """This boot's id (16 bytes; zeros where the kernel does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            text = f.read(64).strip().decode("ascii").replace("-", "")
        return bytes.fromhex(text)[:16].ljust(16, b"\0")
    except (OSError, ValueError, UnicodeDecodeError):
        return bytes(16)


class StampBook:
    """Records of the stamps of verified files under ``root`` (written through ``tmp``, the
    store's own directory of writes in flight); see the module doc. ``key`` gives the MAC
    key (None: no records)."""

    def __init__(self, root: Path, tmp: Path, key: KeyFn | None) -> None:
        self.root, self._tmp, self._key_fn = root, tmp, key
        self._key: bytes | None = None
        self._loaded = key is None
        self._boot: bytes | None = None

    @property
    def key(self) -> bytes | None:
        if not self._loaded:
            self._key = self._key_fn() if self._key_fn is not None else None
            self._loaded = True
        return self._key

    def _path(self, digest: str) -> Path | None:
        """Where ``digest``'s record lives; None when a directory on the way is a link."""
        validate_digest(digest, "file digest")
        path = self.root / digest[:2] / digest
        return None if first_link(self.root.parent, path.parent) is not None else path

    def _payload(self, fd: int) -> bytes:
        if self._boot is None:
            self._boot = _boot_id()
        stamp = (*fd_stamp(fd), os.fstat(fd).st_nlink)
        return _PAYLOAD.pack(_FORMAT, self._boot, *(v & (2**64 - 1) for v in stamp))

    def _mac(self, key: bytes, digest: str, payload: bytes) -> bytes:
        return blake3.blake3(_DOMAIN + bytes.fromhex(digest) + payload, key=key).digest()

    def trusted(self, digest: str, fd: int) -> bool:
        """True if the open file ``fd`` was recorded as holding ``digest``'s chunks and its
        stamp has not changed since (in this boot): then it need not be read."""
        key, path = self.key, self._path(digest)
        if key is None or path is None:
            return False
        raw = _read_record(path)
        if raw is None:
            return False
        mac, payload = raw[:_MAC_LEN], raw[_MAC_LEN:]
        if not secrets.compare_digest(mac, self._mac(key, digest, payload)):
            force_unlink(path)  # forged, damaged or under another key: never trusted
            return False
        return _same_file(_PAYLOAD.unpack(payload), _PAYLOAD.unpack(self._payload(fd)))

    def record(self, digest: str, fd: int) -> None:
        """Record that the open file ``fd`` holds ``digest``'s chunks, as it is now (call it
        once the file is complete and verified). Failures are ignored: a missing record
        costs one check of the bytes."""
        key, path = self.key, self._path(digest)
        if key is None or path is None:
            return
        payload = self._payload(fd)
        tmp = self._tmp / tmp_name(f"stamp-{digest[:12]}")
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            if first_link(self.root.parent, path.parent) is not None:
                return
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(out, self._mac(key, digest, payload) + payload)
            finally:
                os.close(out)
            os.replace(tmp, path)
        force_unlink(tmp)

    def forget(self, digest: str) -> None:
        """Remove ``digest``'s record (its file is gone or was found bad)."""
        path = self._path(digest)
        if path is not None:
            force_unlink(path)


def _same_file(recorded: tuple[object, ...], now: tuple[object, ...]) -> bool:
    """True if ``now`` (format, boot, device, inode, size, mtime, ctime, links) is the
    ``recorded`` file unchanged, or changed only by a link removed (see the module doc)."""
    if recorded == now:
        return True
    same = recorded[:6] == now[:6]  # format, boot, device, inode, size, mtime
    fewer = isinstance(now[7], int) and isinstance(recorded[7], int) and now[7] < recorded[7]
    return same and fewer


def _read_record(path: Path) -> bytes | None:
    """The record's bytes if it is a regular file of exactly a record's length, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, _RECORD_LEN + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return raw if len(raw) == _RECORD_LEN else None
