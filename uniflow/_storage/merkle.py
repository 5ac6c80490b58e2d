"""Merkle identities of files and tensors: a keyed BLAKE3 hash over their chunk names and sizes.

A chunk is named by the plain BLAKE3-256 of its bytes (``_storage.chunking.chunk_digest``).
A file's identity (and a tensor's, when its bytes are exactly a run of whole chunks) is
computed from its ``(chunk name, chunk size)`` sequence alone, without reading a byte of
data again: one hash pass over the data (the chunk names) is enough. The construction
follows Hugging Face Xet's hashing specification (``xet-core``, ``spec/hashing.md`` and
its aggregated node hash): a Merkle tree of variable fan-out whose shape is decided by
the hashes themselves, internal nodes hashed as text lines with their own BLAKE3 key,
and the root hashed once more with a second key.

Exact definition (all hashes 32 bytes; ``hex`` is lowercase hex of the bytes in order)::

    NODE_KEY     = BLAKE3 derive_key(context "uniflow 2026-12-06 merkle node", key material b"")
                 = 75fc167c75a74593e099b9ff0a6d35949e06f84fb59d9a243e273f2eb0dfb59a
    IDENTITY_KEY = BLAKE3 derive_key(context "uniflow 2026-12-06 merkle identity", key material b"")
                 = 39fb5d3db783463b3115859e9d5e5de192f037fa1f032ef26cff4085f668e162

    leaf      = (chunk name, chunk size)                 the name is BLAKE3(chunk bytes), unkeyed
    node(xs)  = (BLAKE3(key=NODE_KEY, line(x0) || line(x1) || ...), sum of the xs' sizes)
    line(x)   = ASCII  hex(x.hash) " : " decimal(x.size) "\\n"     e.g. "ab12…ef : 1048576\\n"

    level 0 is the leaves in file order. While a level holds more than one item, it is cut,
    from left to right, into groups, and each group becomes one node of the next level:
      with r items left, a group takes all r if r <= 2; otherwise it ends after the first
      item at index i in 2 .. min(r, 9) - 1 (counting from the group's start) whose hash has
      byte 24 divisible by 4 (byte 24 is the low byte of the little-endian 64-bit word at
      bytes 24..31, Xet's ``hash % 4``), and after min(r, 9) items when there is none.
    root      = the one item left (a single leaf is its own root: no node is hashed)

    identity  = BLAKE3(key=IDENTITY_KEY, root hash || u64 little-endian(total size))  (40 bytes in)
    identity of no chunks (an empty file) = BLAKE3(key=IDENTITY_KEY, b"")              (0 bytes in)

What differs from Xet, on purpose: chunk names are unkeyed BLAKE3 (``b3sum`` of a chunk
prints its name), hex is the bytes in order (Xet prints each 64-bit word byte-swapped),
the keys are ours (so no uniflow identity can be confused with a Xet hash), the last step
hashes the total size with the root (Xet hashes the root alone, so a one-chunk sequence's
hash ignores the size claimed for it; here any change of a name, a size or the order
changes the identity), and the empty sequence has a defined identity instead of 32 zero
bytes. The tree's shape and the node
encoding are Xet's: :func:`_root` with Xet's key and hex gives Xet's reference values (the
tests check it).

Domain separation: a chunk name is an unkeyed hash of data, an internal node is keyed with
``NODE_KEY``, an identity with ``IDENTITY_KEY``, so no value of one kind can be passed off as
another; in particular the identity of a one-chunk file is never that chunk's name. Files
and tensors share one identity space on purpose: equal bytes cut into equal chunks have one
identity, whatever holds them. The identity depends on the cut points (as Xet's does): the
same bytes cut differently have different identities.

Cost: each level has at most half the items of the one below (groups of 2 or more, except
a trailing group), so the whole tree hashes fewer lines than twice the number of chunks:
O(n) time. :class:`MerkleBuilder` takes the leaves one at a time as chunks are produced and
keeps at most 8 pending items per level: O(log n) memory.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence

import blake3

__all__ = [
    "EMPTY_IDENTITY",
    "IDENTITY_KEY",
    "NODE_KEY",
    "MerkleBuilder",
    "RangeIdentities",
    "merkle_identity",
    "range_identity",
]

NODE_KEY = bytes.fromhex("75fc167c75a74593e099b9ff0a6d35949e06f84fb59d9a243e273f2eb0dfb59a")
IDENTITY_KEY = bytes.fromhex("39fb5d3db783463b3115859e9d5e5de192f037fa1f032ef26cff4085f668e162")
#: context strings the two keys are derived from (BLAKE3 derive_key, empty key material)
NODE_KEY_CONTEXT = "uniflow 2026-12-06 merkle node"
IDENTITY_KEY_CONTEXT = "uniflow 2026-12-06 merkle identity"

#: Xet's mean branching factor: a group may end after an item whose hash is 0 mod this
_BRANCHING = 4
#: the most items one group (one internal node) takes
_MAX_GROUP = 2 * _BRANCHING + 1

#: one item of a level: (32-byte hash, size in bytes)
Item = tuple[bytes, int]
HexFn = Callable[[bytes], str]


def _hex(h: bytes) -> str:
    return h.hex()


def _ends_group(h: bytes) -> bool:
    """Whether a group may end after an item with hash ``h`` (Xet: the word at 24..31 mod 4)."""
    return h[24] % _BRANCHING == 0


class _Tree:
    """The streaming reduction itself, parameterised by the node key and the hex rendering
    (only the tests pass anything but uniflow's)."""

    def __init__(self, node_key: bytes, hexfn: HexFn) -> None:
        self._key = node_key
        self._hex = hexfn
        self._levels: list[list[Item]] = []  # pending items per level (at most 8 each)
        self._counts: list[int] = []  # items ever added to each level

    def push(self, level: int, item: Item) -> None:
        while True:  # bounded by the number of levels: each pass moves one level up
            if level == len(self._levels):
                self._levels.append([])
                self._counts.append(0)
            pending = self._levels[level]
            pending.append(item)
            self._counts[level] += 1
            n = len(pending)
            if not ((n >= 3 and _ends_group(item[0])) or n == _MAX_GROUP):
                return
            item = self._node(pending)
            pending.clear()
            level += 1

    def _node(self, items: list[Item]) -> Item:
        text = "".join(f"{self._hex(h)} : {size}\n" for h, size in items)
        return blake3.blake3(text.encode("ascii"), key=self._key).digest(), sum(s for _, s in items)

    def root(self) -> Item | None:
        """The root once every leaf was pushed (None for no leaves); the tree is spent after."""
        level = 0
        while level < len(self._levels):  # bounded: every pass moves one level up
            pending = self._levels[level]
            if self._counts[level] == 1:
                return pending[0]  # the only item this level ever had is still pending
            if pending:
                item = self._node(pending)
                pending.clear()
                self.push(level + 1, item)
            level += 1
        return None


def _root(leaves: Iterable[Item], node_key: bytes = NODE_KEY, hexfn: HexFn = _hex) -> Item | None:
    """The Merkle root of ``leaves`` (None for none); see the module doc."""
    tree = _Tree(node_key, hexfn)
    for leaf in leaves:
        tree.push(0, leaf)
    return tree.root()


def _leaf(name: bytes | str, size: int) -> Item:
    raw = bytes.fromhex(name) if isinstance(name, str) else bytes(name)
    if len(raw) != 32:
        raise ValueError(f"a chunk name is 32 bytes, got {len(raw)}")
    if size < 0:
        raise ValueError(f"a chunk size is not negative, got {size}")
    return raw, size


def _identity(root: Item | None) -> bytes:
    message = b"" if root is None else root[0] + root[1].to_bytes(8, "little")
    return blake3.blake3(message, key=IDENTITY_KEY).digest()


class MerkleBuilder:
    """The identity of a chunk sequence, accumulated as the chunks are produced.

    ``add`` each chunk's name (hex or 32 raw bytes) and size in order, then call
    :meth:`digest` or :meth:`hexdigest` once. Not thread-safe: feed it from one thread, in
    order (``_storage.chunking.store_chunks`` collects chunks in order)."""

    def __init__(self) -> None:
        self._tree = _Tree(NODE_KEY, _hex)
        self._size = 0
        self._done: bytes | None = None

    def add(self, name: bytes | str, size: int) -> None:
        """Append one chunk (its BLAKE3 name and its size in bytes)."""
        if self._done is not None:
            raise RuntimeError("MerkleBuilder.add after digest")
        leaf = _leaf(name, size)
        self._size += size
        self._tree.push(0, leaf)

    @property
    def size(self) -> int:
        """The bytes added so far (the sum of the chunk sizes)."""
        return self._size

    def digest(self) -> bytes:
        """The 32-byte identity; ends the accumulation (later calls return the same)."""
        if self._done is None:
            self._done = _identity(self._tree.root())
        return self._done

    def hexdigest(self) -> str:
        """The identity as 64 lowercase hex characters."""
        return self.digest().hex()


def merkle_identity(chunks: Iterable[tuple[bytes | str, int]]) -> str:
    """The identity (64 hex) of a file or tensor made of ``chunks``: ``(name, size)`` in order."""
    builder = MerkleBuilder()
    for name, size in chunks:
        builder.add(name, size)
    return builder.hexdigest()


#: the identity of no chunks: an empty file's (and an empty tensor's)
EMPTY_IDENTITY = merkle_identity([])


class RangeIdentities:
    """The identities of byte ranges of one file (its tensors), from its chunks in order.

    A range's leaves are its bytes split at the file's chunk boundaries: a run that is a
    whole chunk is the leaf ``(chunk name, size)``; a run that is only part of a chunk (the
    range shares that chunk with other bytes) is the leaf ``(BLAKE3 of the run, size)``,
    the name those bytes would have as a chunk of their own. So a range cut into whole
    chunks of its own costs no hashing beyond the chunk names, and only the bytes of the
    partial runs are hashed again. An empty range has :data:`EMPTY_IDENTITY`.

    Use: :meth:`partial_runs` for each chunk as it is cut (which of its bytes to hash, on
    the thread that hashes the chunk), then :meth:`add` for each chunk in file order with
    its name and those hashes, then :meth:`hexdigests`."""

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        """``spans``: the ranges, ``(begin, end)`` in file order, none overlapping another."""
        self.spans = list(spans)
        self._ends = [e for _, e in self.spans]
        self._builders = [MerkleBuilder() for _ in self.spans]

    def _runs(self, offset: int, size: int) -> Iterator[tuple[int, int, int]]:
        """``(range index, begin, end)`` of every non-empty run of a range inside the chunk
        ``[offset, offset + size)``, in file order."""
        end = offset + size
        i = bisect.bisect_right(self._ends, offset)
        while i < len(self.spans) and self.spans[i][0] < end:  # bounded by the spans
            b, e = self.spans[i]
            lo, hi = max(b, offset), min(e, end)
            if lo < hi:
                yield i, lo, hi
            i += 1

    def partial_runs(self, offset: int, size: int) -> list[tuple[int, int]]:
        """The runs of ranges that are part of the chunk ``[offset, offset + size)`` but not
        all of it, as ``(begin, end)`` relative to the chunk: the bytes to hash."""
        return [
            (lo - offset, hi - offset)
            for _, lo, hi in self._runs(offset, size)
            if (lo, hi) != (offset, offset + size)
        ]

    def add(self, offset: int, name: str, size: int, partial: Sequence[str]) -> None:
        """The chunk ``[offset, offset + size)`` named ``name``, with the BLAKE3 hex digests
        of its :meth:`partial_runs` (in their order)."""
        rest = iter(partial)
        for i, lo, hi in self._runs(offset, size):
            leaf = name if (lo, hi) == (offset, offset + size) else next(rest)
            self._builders[i].add(leaf, hi - lo)

    def hexdigests(self) -> tuple[str, ...]:
        """Every range's identity, in the order the ranges were given."""
        return tuple(b.hexdigest() for b in self._builders)


def range_identity(
    chunks: Sequence[tuple[bytes | str, int]], begin: int, end: int, data: bytes | bytearray | memoryview
) -> str:
    """The identity (64 hex) of the bytes ``[begin, end)`` of a file made of ``chunks``
    (``(name, size)`` in order), given those bytes (``data``): what :class:`RangeIdentities`
    gives for the range at register, to check a range read back."""
    ids = RangeIdentities([(begin, end)])
    offset = 0
    with memoryview(data) as view:
        for name, size in chunks:
            if offset >= end:
                break
            if offset + size > begin:
                parts = []
                for lo, hi in ids.partial_runs(offset, size):
                    with view[offset + lo - begin : offset + hi - begin] as part:
                        parts.append(blake3.blake3(part).hexdigest())
                ids.add(offset, name.hex() if isinstance(name, bytes) else name, size, parts)
            offset += size
    return ids.hexdigests()[0]
