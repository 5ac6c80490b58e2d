"""The serializer protocol: how an in-memory object becomes files and comes back.

A serializer writes an object into an empty directory (files only, no pickle unless
``trust``), returns a small JSON-safe ``meta`` dict that is stored in the manifest, and
rebuilds the object from a directory of verified files plus that ``meta``.
Third-party serializers plug in through the ``uniflow.serializers`` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Serializer", "Streamed", "StreamedFile"]


@dataclass(frozen=True)
class StreamedFile:
    """A file :meth:`Serializer.save` would write, as the buffers whose concatenation is its
    bytes (views of the object's own memory where possible), never joined."""

    path: str
    parts: Sequence[memoryview | bytes]
    #: objects that must stay alive while ``parts`` are read (the buffers may not own them)
    keep: Sequence[Any] = field(default=(), repr=False)

    @property
    def size(self) -> int:
        return sum(memoryview(p).nbytes for p in self.parts)


@dataclass(frozen=True)
class Streamed:
    """What :meth:`Serializer.stream` returns: the meta ``save`` would return, and the files."""

    meta: dict[str, Any]
    files: list[StreamedFile]


class Serializer(ABC):
    #: stored in the manifest as ``serializer``; the key used to find this class on load
    name: ClassVar[str]
    #: the framework label recorded when the caller gives none
    framework: ClassVar[str]
    #: other framework labels that select this serializer (``framework="pytorch"``)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: higher is tried first during detection
    priority: ClassVar[int] = 0

    @abstractmethod
    def can_save(self, obj: Any) -> bool:
        """True when this serializer knows how to save ``obj``. Must not import heavy
        libraries unless they are already imported (check ``sys.modules``)."""

    @abstractmethod
    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        """Write ``obj`` as files into the empty directory ``dest``; return JSON-safe meta."""

    def stream(self, obj: Any, *, trust: bool = False) -> Streamed | None:
        """The files :meth:`save` would write for ``obj``, byte for byte, without writing them
        (register stores them as they are produced), or None when this serializer cannot
        (register then calls :meth:`save` into a temporary directory). Optional."""
        return None

    @abstractmethod
    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        """Rebuild the object from the verified files in ``src``. ``into`` is an optional
        instance to load weights into (torch). Raise ``UnsafeLoadError`` rather than load
        pickle or untrusted types without ``trust``."""
