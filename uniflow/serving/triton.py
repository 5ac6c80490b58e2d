"""A registered version written into a Triton model repository (docs/deploy.md, "Triton"):

    <repository>/<name>/<n>/model.onnx      (or model.pt: a TorchScript archive)
    <repository>/<name>/config.pbtxt        platform, tensors, version_policy naming <n>
    <repository>/<name>/uniflow-versions.json   which <n> each deployed version has

``n`` is a stable whole number per version: the version map gives a version deployed before
the number it had; a new version gets one more than the largest number in the map or of a
numeric directory already there (never reusing a directory someone else wrote). Versions
already deployed are kept; ``config.pbtxt`` serves only the one deployed last (a rollback
to an older version serves that one, not the highest number).

Everything is written through directory descriptors opened with ``O_NOFOLLOW`` below the
repository directory (the directory itself is what the caller named): a symlink where
``<name>``, ``<n>``, the map or the config goes is refused or replaced as an entry, never
followed. A version directory is assembled under a temporary name and renamed into place,
so it appears complete or not at all; the map and the config are replaced by rename. One
deploy at a time per model directory (``flock`` on ``.uniflow-lock`` in it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _testhooks
from .._errors import InvalidPathError, RepositoryError, UniflowError, UsageError
from .._naming import validate_version
from .._records.manifest import file_records
from .._storage.chunking import FileRecord
from .._storage.fsio import flock_within, os_reason
from .._storage.safefs import DirTree, describe_mode, entry_mode, open_root, replace_file
from .._storage.verified import holds_chunks
from .._types import FileInfo, ModelVersion
from .tritonconfig import ONNX, TORCHSCRIPT, TensorSpec, onnx_tensors, recorded_tensors, render_config

if TYPE_CHECKING:  # pragma: no cover
    from .._registry import ModelRegistry

__all__ = ["VERSION_MAP", "TritonDeployment", "deploy_triton", "read_version_map"]

VERSION_MAP = "uniflow-versions.json"
CONFIG = "config.pbtxt"
_LOCK = ".uniflow-lock"
_MAX_MAP_BYTES = 1 << 20
_MAX_NUMBER = (1 << 63) - 1
_NUMBER_RE = re.compile(r"[1-9][0-9]{0,18}")
_NEEDS = (
    "Triton serves an ONNX model (one .onnx file) or a TorchScript archive (one .pt file from "
    "torch.jit.save); export the model to one of them and register that"
)


@dataclass(frozen=True)
class TritonDeployment:
    """What :func:`deploy_triton` wrote: the version's number ``n``, the platform, the
    version directory and the config; ``unchanged`` when ``<n>`` already held these bytes."""

    name: str
    version: str
    stage: str
    number: int
    platform: str
    version_dir: Path
    config: Path
    unchanged: bool


@dataclass(frozen=True)
class _Layout:
    """Which file is the model (``primary``, written as ``target``) and the platform."""

    platform: str
    primary: FileInfo
    target: str


def _is_torchscript(path: Path) -> bool:
    """A zip archive with the ``code/`` and ``constants.pkl`` entries ``torch.jit.save``
    writes (``torch.save`` archives have neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()[:100_000]
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names)


def _layout(mv: ModelVersion, vdir: Path) -> _Layout:
    """The Triton platform of a version's files, or the one-line refusal."""
    top = [f for f in mv.files if "/" not in f.path]
    onnx = [f for f in top if f.path.lower().endswith(".onnx")]
    if len(onnx) == 1:
        return _Layout(ONNX, onnx[0], "model.onnx")
    torch = [f for f in top if f.path.lower().endswith((".pt", ".pth"))]
    if not onnx and len(mv.files) == 1 and len(torch) == 1 and _is_torchscript(vdir / torch[0].path):
        return _Layout(TORCHSCRIPT, torch[0], "model.pt")
    what = ", ".join(f.path for f in mv.files[:3]) + (", ..." if len(mv.files) > 3 else "")
    raise UsageError(f"Triton cannot serve {mv.name} {mv.version} ({mv.framework}: {what}): {_NEEDS}")


def _tensors(mv: ModelVersion, layout: _Layout, vdir: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    recorded = recorded_tensors(mv.params)
    if recorded is not None:
        return recorded
    if layout.platform == ONNX:
        return onnx_tensors(vdir / layout.primary.path)
    raise UsageError(
        f"{mv.name} {mv.version} is TorchScript, whose inputs and outputs Triton needs in its config: "
        "record them at register, params={'triton': {'input': [{'name': 'INPUT__0', "
        "'data_type': 'TYPE_FP32', 'dims': [-1, 4]}], 'output': [...]}}"
    )


# ---------------------------------------------------------------------- the version map
def _parse_map(data: bytes, name: str, where: str) -> dict[str, int]:
    """The ``version -> n`` map of ``uniflow-versions.json``, validated as hostile input."""

    def bad(why: str) -> RepositoryError:
        return RepositoryError(f"{where} is not a uniflow version map ({why}); move it away")

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or set(doc) != {"format", "model", "versions"}:
        raise bad("expected {'format': 1, 'model': ..., 'versions': {...}}")
    if doc["model"] != name:
        raise bad(f"it is the map of model {str(doc['model'])[:80]!r}")
    versions = doc["versions"]
    if not isinstance(versions, dict):
        raise bad("'versions' is not an object")
    for version, number in versions.items():
        try:
            validate_version(version)
        except UniflowError:
            raise bad(f"{version[:80]!r} is not a version") from None
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= _MAX_NUMBER:
            raise bad(f"the number of {version} is not a whole number from 1 to 2**63-1")
    if len(set(versions.values())) != len(versions):
        raise bad("two versions have the same number")
    return dict(versions)


def _read_bounded(dir_fd: int, name: str, where: str) -> bytes | None:
    """The bytes of regular file ``name`` in ``dir_fd`` (never through a symlink, never a
    FIFO), at most ``_MAX_MAP_BYTES``; None if absent."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RepositoryError(f"cannot read {where}: {os_reason(exc)}; move it away") from exc
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RepositoryError(f"{where} is a {describe_mode(mode)}, not a file; move it away")
        data = fh.read(_MAX_MAP_BYTES + 1)
    if len(data) > _MAX_MAP_BYTES:
        raise RepositoryError(f"{where} is larger than {_MAX_MAP_BYTES} bytes; move it away")
    return data


def read_version_map(model_dir: Path, name: str) -> dict[str, int]:
    """The version map of the Triton model directory ``model_dir`` (empty if it has none)."""
    fd = open_root(model_dir)
    try:
        data = _read_bounded(fd, VERSION_MAP, f"{model_dir}/{VERSION_MAP}")
    finally:
        os.close(fd)
    return {} if data is None else _parse_map(data, name, f"{model_dir}/{VERSION_MAP}")


def _number(mapping: dict[str, int], version: str, model_fd: int) -> int:
    """``n`` of ``version``: from the map, else one more than any number in use."""
    if version in mapping:
        return mapping[version]
    used = list(mapping.values())
    used += [int(e) for e in os.listdir(model_fd) if _NUMBER_RE.fullmatch(e)]
    number = max(used, default=0) + 1
    if number > _MAX_NUMBER:
        raise RepositoryError("no version number left below 2**63 in this Triton model directory")
    return number


# ---------------------------------------------------------------------- writing below DIR/<name>
def _write_bytes(dir_fd: int, name: str, data: bytes) -> None:
    """Replace ``name`` in ``dir_fd`` by a new file holding ``data`` (temporary name, fsync,
    rename: the entry is replaced, never written through)."""
    tmp = f".uniflow-tmp-{uuid.uuid4().hex}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd
    )
    try:
        try:
            view = memoryview(data)
            while view:  # bounded: every round writes at least one byte or raises
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _remove(dir_fd: int, name: str) -> None:
    """Remove the entry ``name`` of ``dir_fd``: a directory tree (not following symlinks) or
    the entry itself."""
    mode = entry_mode(dir_fd, name)
    if mode is None:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _refuse_entry(display: str, mode: int) -> None:
    raise InvalidPathError(f"{display} is a {describe_mode(mode)}, not a directory; move it away")


@contextlib.contextmanager
def _model_dir(root: Path, name: str) -> Iterator[int]:
    """A descriptor of ``root/name`` (created; a symlink there is refused), locked against
    other deploys, with what killed deploys left in it removed."""
    try:
        root.mkdir(exist_ok=True)
        tree = DirTree(open_root(root), str(root), _refuse_entry)
    except OSError as exc:
        raise InvalidPathError(f"cannot use {root} as a Triton model repository: {os_reason(exc)}") from exc
    with tree:
        fd = tree.open((name,))
        lock = os.open(_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            _lock(lock, f"{root}/{name}")
            for entry in os.listdir(fd):
                if entry.startswith((".uniflow-tmp-", ".uniflow-old-")):
                    _remove(fd, entry)
            yield fd
        finally:
            os.close(lock)  # releases the flock


def _lock(fd: int, where: str, timeout: float = 300.0) -> None:
    """``flock`` ``fd`` exclusively, waiting at most ``timeout`` seconds."""
    flock_within(fd, timeout, f"another deploy into {where} has held its lock")


def _targets(mv: ModelVersion, layout: _Layout) -> list[tuple[str, FileInfo]]:
    """``(path in <n>/, file)`` for every file of the version: the model under its Triton
    name, the rest (ONNX external data) where the version has them."""
    return [(layout.target if f is layout.primary else f.path, f) for f in mv.files]


def _matches(
    model_fd: int, entry: str, files: list[tuple[str, FileInfo]], records: dict[str, FileRecord]
) -> bool:
    """True if ``entry`` is a directory holding exactly ``files`` (regular files holding the
    chunks ``records`` lists for them, by their path in the version), symlinks never followed."""
    try:
        top = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=model_fd)
    except OSError:
        return False
    want = {rel: f for rel, f in files}
    seen: set[str] = set()
    try:
        for root, dirs, names, root_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for leaf in [*dirs, *names]:
                if stat.S_ISDIR(entry_mode(root_fd, leaf) or 0):
                    continue  # a real directory: walked next
                rel = os.path.normpath(os.path.join(root, leaf))
                f = want.get(rel)
                if f is None or not _same_file(root_fd, leaf, records[f.path]):
                    return False
                seen.add(rel)
    finally:
        os.close(top)
    return seen == set(want)


def _same_file(dir_fd: int, leaf: str, rec: FileRecord) -> bool:
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and st.st_size == rec.size and holds_chunks(fd, rec)
    finally:
        os.close(fd)


def _stage_and_swap(model_fd: int, number: int, files: list[tuple[str, FileInfo]], vdir: Path) -> None:
    """Write ``files`` into a new directory beside ``<number>`` and rename it into place
    (what was at ``<number>`` is renamed aside first, then removed)."""
    tmp = f".uniflow-tmp-{uuid.uuid4().hex}"
    os.mkdir(tmp, 0o755, dir_fd=model_fd)
    stage_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=model_fd)
    with DirTree(stage_fd, tmp, _refuse_entry) as tree:
        for rel, f in files:
            *dirs, leaf = rel.split("/")
            replace_file(tree.open(tuple(dirs)), leaf, vdir / f.path, 0o644)
        for fd in tree.fds():
            os.fsync(fd)
    _testhooks.point("triton-staged")
    target, aside = str(number), f".uniflow-old-{uuid.uuid4().hex}"
    had = entry_mode(model_fd, target) is not None
    if had:
        os.rename(target, aside, src_dir_fd=model_fd, dst_dir_fd=model_fd)
    os.rename(tmp, target, src_dir_fd=model_fd, dst_dir_fd=model_fd)
    os.fsync(model_fd)
    if had:
        _remove(model_fd, aside)


def _map_bytes(name: str, mapping: dict[str, int]) -> bytes:
    ordered = dict(sorted(mapping.items(), key=lambda kv: kv[1]))
    return (json.dumps({"format": 1, "model": name, "versions": ordered}, indent=2) + "\n").encode()


def deploy_triton(
    registry: ModelRegistry,
    name: str,
    repository: str | os.PathLike[str],
    *,
    version: str | None = None,
    stage: str | None = None,
) -> TritonDeployment:
    """Write a version of ``name`` (``version``, the holder of ``stage``, or the newest) into
    the Triton model repository ``repository`` and make it the one ``config.pbtxt`` serves.

    A version Triton cannot serve (a pickle, an estimator, a directory without one ONNX
    file) raises :class:`UsageError` saying what Triton needs, before anything is written.
    """
    mv = registry.get(name, version=version, stage=stage)
    vdir = registry.load_path(name, mv.version)  # verified, read-only
    layout = _layout(mv, vdir)
    tensors = _tensors(mv, layout, vdir)
    files = _targets(mv, layout)
    root = Path(repository).absolute()
    where = f"{root}/{name}"
    try:
        with _model_dir(root, name) as model_fd:
            data = _read_bounded(model_fd, VERSION_MAP, f"{where}/{VERSION_MAP}")
            mapping = {} if data is None else _parse_map(data, name, f"{where}/{VERSION_MAP}")
            number = _number(mapping, mv.version, model_fd)
            if mapping.get(mv.version) != number:  # the number is recorded before its directory
                _write_bytes(model_fd, VERSION_MAP, _map_bytes(name, {**mapping, mv.version: number}))
            manifest = registry.repository.manifest(name, mv.version)
            records = {rel: rec for rel, rec, _mode in file_records(manifest)}
            unchanged = _matches(model_fd, str(number), files, records)
            if not unchanged:
                _stage_and_swap(model_fd, number, files, vdir)
            comment = f"written by uniflow: {name} {mv.version} (content {mv.digest})"
            _write_bytes(model_fd, CONFIG, render_config(name, layout.platform, number, tensors, comment))
            os.fsync(model_fd)
    except OSError as exc:
        raise RepositoryError(f"cannot write the Triton model directory {where}: {os_reason(exc)}") from exc
    return TritonDeployment(
        name,
        mv.version,
        mv.stage,
        number,
        layout.platform,
        Path(where) / str(number),
        Path(where) / CONFIG,
        unchanged,
    )
