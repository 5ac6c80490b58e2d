"""gc's work on packs: which packs to rewrite, rewriting their live chunks, and finding a
chunk in a pack that a gc has set aside.

A pack is never modified: gc reclaims the dead chunks of a pack by copying its live ones
(each verified as it is read) into new packs and then removing the whole pack, as ``git gc``
and ``restic prune`` do. The steps and why a gc killed at any of them loses nothing are in
``docs/design.md`` ("gc and packs"); ``_ops.maintenance.gc`` runs them in this order:

1. :func:`plan_repack`: every complete pack older than the grace period and holding no
   pinned chunk whose *live share* (bytes of the live chunks it owns against its chunk
   bytes) is below :data:`REPACK_THRESHOLD` is to be rewritten (a pack with no live chunk
   too). A live chunk held by several packs is owned by one of them only, so it is copied
   at most once and a duplicate counts as dead where it is not owned.
2. :func:`write_repacked`: the owned live chunks of those packs (and, for ``gc --repack``,
   the chunk files to move into packs) are appended to new packs, which are durable and
   visible (with their indexes) before anything is moved (test point ``gc-repacked``).
3. gc moves each such pack aside into its set (``pins.AsideSet.take_pack``), reads the pins,
   then the refs again, and puts a pack back if a pin names any of its chunks, or a live
   chunk (newly visible versions included) is nowhere else; the others are deleted.
4. ``gc --repack`` then unlinks the chunk files whose bytes are now in a pack.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import _testhooks
from .._errors import IntegrityError, MissingChunkError, RepositoryError
from .packs import PackIndex, PackReader, PackSet, pack_dir, raw_name, read_pack_tail, scan_packs
from .packwriter import PackStream, recover_packs
from .pins import AsideSet, restore_pack, set_aside_packs

__all__ = [
    "REPACK_THRESHOLD",
    "RepackPlan",
    "decide_packs",
    "plan_repack",
    "recover_set_aside",
    "remove_orphan_indexes",
    "write_repacked",
]

#: a pack whose live chunks hold less than this share of its chunk bytes is rewritten
REPACK_THRESHOLD = 0.5


@dataclass
class RepackPlan:
    """What gc does with the packs (and, for ``--repack``, the chunk files)."""

    #: packs to remove, with their indexes
    rewrite: dict[str, PackIndex] = field(default_factory=dict)
    #: for each pack to remove, the live chunks it owns (copied into new packs first)
    copy: dict[str, list[str]] = field(default_factory=dict)
    #: chunk files to copy into new packs (``--repack``): their bytes are in no pack kept
    loose: list[str] = field(default_factory=list)
    #: chunk files whose bytes a kept or new pack holds (``--repack``: unlinked at the end)
    loose_redundant: list[str] = field(default_factory=list)
    #: names of the chunks in packs that stay
    kept: set[bytes] = field(default_factory=set)
    #: chunks in packs that no version reaches; those of them in young packs
    unreachable: set[str] = field(default_factory=set)
    young: set[str] = field(default_factory=set)
    #: unreachable chunks of packs spared because a register in flight pinned a chunk of theirs
    pinned: set[str] = field(default_factory=set)

    def dead(self, pack: str, live: set[str]) -> tuple[int, int]:
        """``(chunks, bytes)`` of pack ``pack`` that no version reaches."""
        entries = [e for e in self.rewrite[pack].entries() if e.name not in live]
        return len(entries), sum(e.length for e in entries)


def _changed(path: Path) -> float | None:
    """When ``path`` was last written (None if it is gone): a pack's age, as a chunk file's."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def plan_repack(
    packs: PackSet,
    live: set[str],
    pinned: set[str],
    cutoff: float,
    loose: Iterable[str] = (),
    threshold: float = REPACK_THRESHOLD,
) -> RepackPlan:
    """The packs to rewrite (see the module doc): none younger than ``cutoff`` (a time), none
    holding a chunk of ``pinned``. ``loose``: chunk files to move into packs (``--repack``)."""
    packs.refresh()
    indexes = packs.indexes()
    directory = pack_dir(packs.root)
    plan = RepackPlan()
    names = {p: [e.name for e in i.entries()] for p, i in indexes.items()}
    live_count = {p: sum(n in live for n in ns) for p, ns in names.items()}
    owner: dict[str, str] = {}
    for p in sorted(indexes, key=lambda p: (-live_count[p], p)):  # most live chunks first
        for n in names[p]:
            if n in live:
                owner.setdefault(n, p)
    for p, index in sorted(indexes.items()):
        changed = _changed(directory / f"{p}.pack")
        if changed is None:
            continue  # removed by another gc meanwhile
        dead = {n for n in names[p] if n not in live}
        plan.unreachable |= dead
        if changed > cutoff:
            plan.young |= dead
        elif pinned.intersection(names[p]):
            plan.pinned |= dead
        else:
            owned = [e for e in index.entries() if owner.get(e.name) == p]
            if sum(e.length for e in owned) < threshold * index.data_bytes:
                plan.rewrite[p] = index
                plan.copy[p] = [e.name for e in owned]
                continue
        plan.kept.update(index.raw_names())
    copied = {n for ns in plan.copy.values() for n in ns}
    for digest in loose:
        in_pack = raw_name(digest) in plan.kept or digest in copied
        (plan.loose_redundant if in_pack else plan.loose).append(digest)
    return plan


def write_repacked(
    root: Path, plan: RepackPlan, read_loose: Callable[[str], bytes | None], *, durable: bool = True
) -> tuple[set[str], int]:
    """Copy the live chunks of the packs to rewrite (verified) and the chunk files ``plan.loose``
    (``read_loose``: their verified bytes, None to leave one where it is) into new packs;
    ``(the names the new packs hold, how many packs)``, durable and visible when this
    returns. A pack that cannot be read whole (damaged, or gone) is dropped from
    ``plan.rewrite``: it stays."""
    written: set[str] = set()
    with PackStream(root, durable=durable) as stream:
        for pack, wanted in sorted(plan.copy.items()):
            try:
                with PackReader(root, pack, plan.rewrite[pack]) as reader:
                    for name, data in reader.iter_chunks(set(wanted)):
                        stream.add(name, data)
                        written.add(name)
            except (IntegrityError, MissingChunkError, RepositoryError):
                plan.kept.update(plan.rewrite.pop(pack).raw_names())  # kept as it is
                del plan.copy[pack]
        for digest in plan.loose:
            got = read_loose(digest)
            if got is not None:
                stream.add(digest, got)
                written.add(digest)
        count = len(stream.close())
    _testhooks.point("gc-repacked")
    return written, count


def decide_packs(
    aside: AsideSet, moved: list[str], plan: RepackPlan, pinned: set[str], live: set[str], present: set[str]
) -> tuple[list[str], list[str]]:
    """After the pins and refs were read again: put back each moved pack a pin names a chunk
    of, or holding a live chunk found nowhere in ``present`` (the new packs' names) nor in a
    kept pack; delete the others. ``(restored, removed)``."""
    restored, removed = [], []
    for pack in moved:
        names = [e.name for e in plan.rewrite[pack].entries()]
        needed = [n for n in names if n in live and n not in present and raw_name(n) not in plan.kept]
        if pinned.intersection(names) or needed:
            aside.restore_pack(pack)
            restored.append(pack)
        else:
            aside.drop_pack(pack)
            removed.append(pack)
            _testhooks.point("gc-pack-dropped")
    return restored, removed


def recover_set_aside(root: Path, digests: Iterable[str]) -> int:
    """Put back every pack a gc has set aside (live or dead) that holds any of ``digests``;
    how many were put back. A reader calls this before it gives a chunk up for missing."""
    sets = set_aside_packs(Path(root) / "tmp")
    if not sets:
        return 0
    wanted = [raw_name(d) for d in digests]
    back = 0
    for name, where in sets.items():
        try:
            index = read_pack_tail(root, name, where)
        except (IntegrityError, RepositoryError):
            continue
        if any(index.has_raw(w) for w in wanted) and restore_pack(
            Path(root) / "tmp", Path(root) / "objects", name
        ):
            back += 1
    if back:
        recover_packs(root)  # a pack put back without its index gets it from its tail
    return back


def remove_orphan_indexes(root: Path, cutoff: float) -> int:
    """Unlink each ``.idx`` older than ``cutoff`` whose ``.pack`` is neither in ``packs/`` nor in
    a gc's set (a pack removed by hand, or a tail that never got its pack); the count."""
    held = set_aside_packs(Path(root) / "tmp")
    removed = 0
    for name in scan_packs(root).orphan_indexes:
        path = pack_dir(root) / f"{name}.idx"
        changed = _changed(path)
        if name not in held and changed is not None and changed < cutoff:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed
