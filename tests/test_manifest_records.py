"""The manifest as typed records (issue 23): the gate builds frozen ``Manifest`` /
``FileEntry`` / ``TensorInfo`` values, and the bytes on disk do not change.

Packing the record the gate returns gives the very bytes it read, for manifests the
current code writes and the formats it reads (1: no tensor lists, 2: tensor lists with
BLAKE3 digests, ``tests.legacy_formats``; 3: Merkle identities), and for
valid manifests with optional keys left out or keys a later version may add. A forged
manifest is refused with the same error as when the gate returned a dict.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from tests.legacy_formats import register_as
from uniflow import IntegrityError, ModelRegistry
from uniflow._records.manifest import FileEntry, Manifest, content_digest, pack, unpack
from uniflow._records.tensors import TensorInfo


def _raw_blob(registry: ModelRegistry, model: str, version: str) -> bytes:
    """The manifest bytes of a version, read with git itself."""
    rev = f"refs/tags/models/{model}/{version}^{{commit}}:.uniflow/card/manifest.msgpack"
    return subprocess.run(
        ["git", "cat-file", "blob", rev], cwd=registry.root, capture_output=True, check=True
    ).stdout


def _bundle(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    (d / "sub").mkdir(parents=True)
    (d / "weights.bin").write_bytes(os.urandom(300_000))
    (d / "sub" / "config.json").write_text('{"layers": 2}')
    (d / "run.sh").write_text("#!/bin/sh\n")
    (d / "run.sh").chmod(0o755)
    np.save(d / "array.npy", np.arange(24, dtype=np.float32).reshape(4, 6))
    return d


def _register_both_formats(registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``m v2.0.0`` in format 3 (with a tensor list), ``m v1.0.0`` as format 1 was written
    and ``m v1.5.0`` as format 2 was written."""
    src = _bundle(tmp_path)
    # what uniflow 0.1 wrote: format 1, no tensor lists
    register_as(
        1, registry, monkeypatch, str(src), "m", version="v1.0.0", metrics={"acc": 0.5}, tags={"k": "v"}
    )
    register_as(2, registry, monkeypatch, str(src), "m", version="v1.5.0", metrics={"acc": 0.6})
    registry.register(
        str(src), "m", version="v2.0.0", metrics={"acc": 0.75, "loss": None}, params={"lr": [1, 2]}
    )


@pytest.mark.parametrize(("version", "fmt"), [("v1.0.0", 1), ("v1.5.0", 2), ("v2.0.0", 3)])
def test_packing_the_record_gives_the_bytes_on_disk(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, fmt: int
) -> None:
    _register_both_formats(registry, tmp_path, monkeypatch)
    data = _raw_blob(registry, "m", version)
    record = unpack(data, name="m", version=version)
    assert isinstance(record, Manifest) and record.format == fmt
    assert pack(record) == data
    assert pack(Manifest.from_dict(record.to_dict())) == data
    assert record.to_dict() == msgpack.unpackb(data, raw=False)
    # what the registry reads (cached or from Git) is the same record
    assert registry.repository.manifest("m", version) == record
    assert registry.repository.index.manifest("m", version, from_git=True)[1] == record
    tensors = [f.tensors for f in record.files if f.path == "array.npy"]
    assert tensors == (
        [None] if fmt == 1 else [(TensorInfo("array", "F32", (4, 6), 128, 224, tensors[0][0].digest),)]
    )


def test_the_record_is_typed(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_both_formats(registry, tmp_path, monkeypatch)
    m = registry.repository.manifest("m", "v2.0.0")
    assert (m.name, m.version, m.framework, m.serializer) == ("m", "v2.0.0", "files", "files")
    assert m.metrics == {"acc": 0.75, "loss": None} and m.params == {"lr": [1, 2]} and m.tags == {}
    assert m.content_digest == content_digest(m.files) and m.absent == frozenset() and m.extra == {}
    assert isinstance(m.files, tuple) and all(isinstance(f, FileEntry) for f in m.files)
    by_path = {f.path: f for f in m.files}
    assert set(by_path) == {"weights.bin", "sub/config.json", "run.sh", "array.npy"}
    assert by_path["run.sh"].mode == 0o755 and by_path["weights.bin"].mode == 0o644
    assert m.size == sum(f.size for f in m.files) == registry.get("m", "v2.0.0").size
    for f in m.files:
        assert isinstance(f.chunks, tuple)
        assert all(isinstance(d, bytes) and len(d) == 32 and isinstance(n, int) for d, n in f.chunks)
        assert sum(n for _d, n in f.chunks) == f.size
    (t,) = by_path["array.npy"].tensors or ()
    assert isinstance(t.shape, tuple) and t.nbytes == 96


def test_the_record_is_frozen(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_both_formats(registry, tmp_path, monkeypatch)
    m = registry.repository.manifest("m", "v2.0.0")
    entry = next(f for f in m.files if f.tensors)
    assert entry.tensors is not None
    for obj, attr, value in (
        (m, "version", "v9.0.0"),
        (m, "files", ()),
        (entry, "path", "../evil"),
        (entry, "mode", 0o6777),
        (entry.tensors[0], "end", 0),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, value)
    assert isinstance(m.files, tuple) and isinstance(entry.chunks, tuple) and isinstance(entry.tensors, tuple)


# ---------------------------------------------------------------------- byte-exact for any valid manifest
def _chunk(i: int) -> bytes:
    import blake3

    return blake3.blake3(bytes([i])).digest()


def _minimal() -> dict[str, Any]:
    """A valid manifest holding only the required keys (optional ones absent)."""
    files = [{"path": "a.bin", "size": 10, "mode": 0o644, "digest": "1" * 64, "chunks": [[_chunk(1), 10]]}]
    return {
        "format": 1,
        "name": "m",
        "version": "v1.0.0",
        "created_at": "2024-01-01T00:00:00+00:00",
        "framework": "files",
        "serializer": "files",
        "files": files,
        "content_digest": content_digest(files),
    }


def test_absent_and_unknown_keys_survive_a_round_trip() -> None:
    """A manifest without the optional keys reads them as empty values and packs back
    without them; keys a later version adds (top level or in a file entry) are kept."""
    m = _minimal()
    data = pack(m)
    record = unpack(data)
    assert record.author == "" and record.metrics == {} and record.lineage == {}
    assert record.absent == {
        "author",
        "description",
        "serializer_meta",
        "metrics",
        "params",
        "tags",
        "lineage",
        "libraries",
    }
    assert pack(record) == data
    later = copy.deepcopy(m)
    later["signature"] = {"by": "ci", "sig": b"\x00\x01"}
    later["files"][0]["xattrs"] = ["user.origin"]
    later_data = pack(later)
    record = unpack(later_data)
    assert record.extra == {"signature": {"by": "ci", "sig": b"\x00\x01"}}
    assert record.files[0].extra == {"xattrs": ["user.origin"]}
    assert pack(record) == later_data


def test_a_record_changed_with_replace_packs_what_it_holds() -> None:
    record = unpack(pack(_minimal()))
    renamed = dataclasses.replace(record, version="v2.0.0")
    assert unpack(pack(renamed)).version == "v2.0.0" and record.version == "v1.0.0"


# ---------------------------------------------------------------------- forged manifests: the same errors
def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(m: dict[str, Any]) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop(key: str) -> Any:
    return lambda m: m.pop(key)


#: forgery -> (edit of a valid manifest, whether to recompute its content digest, the error)
FORGED: dict[str, tuple[Any, bool, str]] = {
    "no format": (_drop("format"), False, r"unsupported manifest format None"),
    "format a string": (_set(("format",), "2"), False, r"unsupported manifest format '2'"),
    "no name": (_drop("name"), False, r"manifest has no 'name'"),
    "no files": (_drop("files"), False, r"manifest has no 'files'"),
    "no content digest": (_drop("content_digest"), False, r"manifest has no 'content_digest'"),
    "framework a number": (_set(("framework",), 3), False, r"manifest field 'framework' is not a string"),
    "files a map": (_set(("files",), {"a.bin": 1}), False, r"manifest 'files' is not a list"),
    "file entry a list": (_set(("files", 0), ["a.bin"]), False, r"a manifest file entry is not a map"),
    "size a string": (_set(("files", 0, "size"), "10"), True, r"bad size '10' for 'a.bin'"),
    "size a bool": (_set(("files", 0, "size"), True), True, r"bad size True for 'a.bin'"),
    "chunk digest hex": (_set(("files", 0, "chunks", 0, 0), "ab" * 32), True, r"bad chunk entry in 'a.bin'"),
    "file without mode": (lambda m: m["files"][0].pop("mode"), False, r"malformed \(KeyError: 'mode'\)"),
    "bad file digest": (_set(("files", 0, "digest"), "Z" * 64), True, r"file digest"),
    "bad content digest": (_set(("content_digest",), "0" * 64), False, r"content digest does not match"),
    "content digest a path": (_set(("content_digest",), "../../etc"), False, r"content digest"),
    "absolute path": (
        _set(("files", 0, "path"), "/etc/passwd"),
        True,
        r"manifest rejected: .*invalid file path",
    ),
    "dot-dot path": (_set(("files", 0, "path"), "../../x"), True, r"manifest rejected: .*invalid file path"),
    "dot-dot inside": (
        _set(("files", 0, "path"), "a/../../x"),
        True,
        r"manifest rejected: .*invalid file path",
    ),
    "metrics a list": (_set(("metrics",), [1, 2]), False, r"manifest 'metrics' is not a map"),
    "tags not strings": (_set(("tags",), {"k": 1}), False, r"manifest 'tags' must map strings to strings"),
    "lineage commit": (_set(("lineage",), {"code_commit": "HEAD"}), False, r"lineage code_commit 'HEAD'"),
    "created_at no time": (_set(("created_at",), "yesterday"), False, r"malformed \(ValueError"),
    "tensors in format 1": (
        _set(("files", 0, "tensors"), []),
        True,
        r"format-1 manifest carries tensor data",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_manifest_is_refused_with_the_same_error(case: str) -> None:
    edit, redigest, error = FORGED[case]
    m = _minimal()
    m["metrics"], m["tags"], m["lineage"] = {}, {}, {}
    edit(m)
    if redigest:
        m["content_digest"] = content_digest(m["files"])
    context = "model 'm' version 'v1.0.0' (tag 0123456789ab)"
    with pytest.raises(
        IntegrityError, match=r"^model 'm' version 'v1\.0\.0' \(tag 0123456789ab\): .*" + error
    ):
        unpack(msgpack.packb(m, use_bin_type=True), context)


def test_a_manifest_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(IntegrityError, match=r"^ctx: manifest is a list, not a map$"):
        unpack(msgpack.packb([1, 2]), "ctx")
